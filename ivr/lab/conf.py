"""The lab's Asterisk configuration folder, rendered from ``dialplans/asterisk/lab``.

Templates carry ``{{name}}`` marks (``${...}`` belongs to the dialplan itself). The
pieces that vary per test run, the dialplan and the queues, are passed in by the caller
of the lab as text or as file paths, so the same lab later loads the FastAGI glue.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = [
    "DEFAULT_SEATS",
    "LabConfig",
    "LabConfigError",
    "Seat",
    "Trunk",
    "render_config",
    "template_dir",
]

TEMPLATE_FILES = (
    "asterisk.conf",
    "modules.conf",
    "logger.conf",
    "pjsip.conf",
    "rtp.conf",
    "manager.conf",
    "cdr.conf",
    "indications.conf",
    "queues.conf",
    "extensions.conf",
    "confbridge.conf",
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_MARK = re.compile(r"\{\{(\w+)\}\}")

# What extensions.conf or queues.conf pieces may be: literal text, or a file to read.
Piece = str | Path


class LabConfigError(ValueError):
    """The lab configuration is inconsistent or not on loopback."""


def _loopback(address: str, what: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise LabConfigError(f"{what}: {address!r} is not an IP address") from exc
    # The lab only ever talks to this machine.
    if ip.version != 4 or not ip.is_loopback:
        raise LabConfigError(f"{what}: {address} is not an IPv4 loopback address")
    return address


def _name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise LabConfigError(f"{what}: {name!r} is not a valid endpoint name")
    return name


@dataclass(frozen=True)
class Seat:
    """A SIPp answerer standing in for a seat group, a sub-centre or an outside line.

    Asterisk knows it as the PJSIP endpoint ``name``: ``Dial(PJSIP/<name>)`` reaches it
    with Request-URI ``sip:<name>@address:port``, ``Dial(PJSIP/<exten>@<name>)`` with
    ``sip:<exten>@address:port``.
    """

    name: str
    address: str
    port: int = 5060
    ring: float = 0.0
    """Seconds of 180 Ringing before the final reply; a CANCEL meanwhile is honoured."""
    reply: int = 200
    """Final reply to each INVITE: 200 answers, 486/480/603... refuse."""
    hold: float | None = None
    """Seconds after answering before the seat hangs up itself; None waits for a BYE."""

    def __post_init__(self) -> None:
        _name(self.name, "seat")
        _loopback(self.address, f"seat {self.name}")
        if not 1 <= self.port <= 65535:
            raise LabConfigError(f"seat {self.name}: bad port {self.port}")
        if not 200 <= self.reply <= 699 or 201 <= self.reply <= 299:
            raise LabConfigError(f"seat {self.name}: reply must be 200 or 3xx-6xx")
        if self.ring < 0 or (self.hold is not None and self.hold <= 0):
            raise LabConfigError(f"seat {self.name}: ring must be >= 0 and hold > 0")

    @property
    def uri(self) -> str:
        return f"sip:{self.name}@{self.address}:{self.port}"


@dataclass(frozen=True)
class Trunk:
    """A PJSIP endpoint for incoming calls, recognised by the caller's source address.

    In production the incoming trunk decides the region (Pingtan shares 0591 with
    Fuzhou); in the lab a caller picks a trunk by placing its call from its address.
    """

    name: str = "pstn"
    address: str = "127.0.0.1"
    context: str = "lab-inbound"
    dtmf_mode: str = "auto_info"
    """auto_info: RFC 4733 when the caller offers telephone-event, else SIP INFO."""

    def __post_init__(self) -> None:
        _name(self.name, "trunk")
        _loopback(self.address, f"trunk {self.name}")
        _name(self.context, f"trunk {self.name} context")
        if self.dtmf_mode not in {"rfc4733", "inband", "info", "auto", "auto_info"}:
            raise LabConfigError(f"trunk {self.name}: unknown dtmf_mode {self.dtmf_mode}")


DEFAULT_SEATS: tuple[Seat, ...] = (
    Seat("seat-a", "127.0.0.2"),
    Seat("seat-b", "127.0.0.3"),
    Seat("seat-c", "127.0.0.4"),
)


@dataclass(frozen=True)
class LabConfig:
    """Everything that shapes the lab's Asterisk and its answerers."""

    seats: tuple[Seat, ...] = DEFAULT_SEATS
    trunks: tuple[Trunk, ...] = (Trunk(),)
    extensions: tuple[Piece, ...] = ()
    """extensions.conf pieces (text, or a Path to read), appended after [globals]."""
    queues: tuple[Piece, ...] = ()
    """queues.conf pieces (text, or a Path to read), appended after [general]."""
    variables: Mapping[str, str] = field(default_factory=dict)
    """Dialplan [globals], e.g. the FastAGI address the glue should use."""
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    ami_port: int = 5038
    ami_user: str = "lab"
    ami_secret: str = "lab-only-secret"
    controller_ami_user: str = "ivr"
    controller_ami_secret: str = "lab-only-controller-secret"
    """The controller's manager user: what manager.sample.conf grants, no more."""
    rtp_ports: tuple[int, int] = (20000, 20999)
    verbose: int = 3
    """Asterisk verbosity written to log/messages.log; 0 for load tests."""
    maxcalls: int = 500
    trace_seats: bool = True
    """Seats log every SIP message (what seat_calls() reads); False for load runs."""

    def __post_init__(self) -> None:
        _loopback(self.sip_host, "sip_host")
        # Accept lists from callers, keep the frozen object hashable-ish and stable.
        for name in ("seats", "trunks", "extensions", "queues"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        names = [s.name for s in self.seats] + [t.name for t in self.trunks]
        if len(set(names)) != len(names):
            raise LabConfigError(f"seat and trunk names must be unique: {names}")
        sip_ends = [(s.address, s.port) for s in self.seats]
        if (self.sip_host, self.sip_port) in sip_ends or len(set(sip_ends)) != len(sip_ends):
            raise LabConfigError("every seat needs its own address:port, apart from Asterisk")
        addresses = [t.address for t in self.trunks] + [s.address for s in self.seats]
        if len(set(addresses)) != len(addresses):
            # Asterisk identifies endpoints by source address, so they cannot share one.
            raise LabConfigError(f"trunks and seats need distinct addresses: {addresses}")
        low, high = self.rtp_ports
        if not 1024 <= low < high <= 65535:
            raise LabConfigError(f"bad RTP port range {self.rtp_ports}")
        for key in self.variables:
            _name(key, "global variable")

    def seat(self, name: str) -> Seat:
        for seat in self.seats:
            if seat.name == name:
                return seat
        raise KeyError(f"no seat named {name!r}")

    def trunk(self, name: str | None = None) -> Trunk:
        if name is None:
            return self.trunks[0]
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        raise KeyError(f"no trunk named {name!r}")


def template_dir() -> Path:
    """The folder of the lab's Asterisk templates, in a checkout or an installed wheel."""
    here = Path(__file__).resolve().parent
    candidates = (
        here.parent / "bundled" / "dialplans" / "asterisk" / "lab",  # wheel
        here.parents[1] / "dialplans" / "asterisk" / "lab",  # checkout
    )
    for candidate in candidates:
        if (candidate / "asterisk.conf").is_file():
            return candidate
    raise FileNotFoundError(f"lab templates not found in {[str(c) for c in candidates]}")


def _pieces(pieces: Sequence[Piece]) -> str:
    parts = []
    for piece in pieces:
        if isinstance(piece, Path):
            parts.append(f"; --- from {piece.name}\n{piece.read_text(encoding='utf-8')}")
        else:
            parts.append(piece)
    return "\n\n".join(part.strip("\n") + "\n" for part in parts)


def _endpoints(config: LabConfig) -> str:
    blocks = []
    for trunk in config.trunks:
        blocks.append(
            f"[{trunk.name}](lab-endpoint)\n"
            f"context = {trunk.context}\n"
            f"dtmf_mode = {trunk.dtmf_mode}\n\n"
            f"[{trunk.name}-identify]\n"
            f"type = identify\n"
            f"endpoint = {trunk.name}\n"
            f"match = {trunk.address}\n"
        )
    for seat in config.seats:
        blocks.append(
            f"[{seat.name}](lab-endpoint)\n"
            f"context = lab-from-seat\n"
            f"dtmf_mode = rfc4733\n"
            f"aors = {seat.name}\n\n"
            f"[{seat.name}]\n"
            f"type = aor\n"
            f"contact = {seat.uri}\n\n"
            f"[{seat.name}-identify]\n"
            f"type = identify\n"
            f"endpoint = {seat.name}\n"
            f"match = {seat.address}\n"
        )
    return "\n".join(blocks)


def _fill(name: str, text: str, values: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise LabConfigError(f"template {name} uses unknown mark {{{{{key}}}}}")
        return values[key]

    return _MARK.sub(one, text)


def render_config(
    config: LabConfig,
    state: PurePosixPath,
    moddir: str,
    templates: Path | None = None,
) -> dict[str, str]:
    """Render every configuration file; ``state`` is the state folder as seen in the root."""
    folder = templates or template_dir()
    log_levels = "notice,warning,error"
    if config.verbose > 0:
        log_levels += f",verbose({config.verbose})"
    values = {
        "state": str(state),
        "moddir": moddir,
        "verbose": str(config.verbose),
        "maxcalls": str(config.maxcalls),
        "log_levels": log_levels,
        "sip_host": config.sip_host,
        "sip_port": str(config.sip_port),
        "ami_port": str(config.ami_port),
        "ami_user": config.ami_user,
        "ami_secret": config.ami_secret,
        "controller_ami_user": config.controller_ami_user,
        "controller_ami_secret": config.controller_ami_secret,
        "rtp_start": str(config.rtp_ports[0]),
        "rtp_end": str(config.rtp_ports[1]),
        "endpoints": _endpoints(config),
        "queues": _pieces(config.queues),
        "extensions": _pieces(config.extensions),
        "globals": "".join(f"{k} = {v}\n" for k, v in config.variables.items()),
    }
    return {
        name: _fill(name, (folder / name).read_text(encoding="utf-8"), values)
        for name in TEMPLATE_FILES
    }

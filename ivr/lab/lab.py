"""The lab: a real Asterisk in a Debian sid root, SIPp seats answering, SIPp callers.

Everything the lab writes lives in its state folder inside the root (Asterisk under
``chroot`` sees nothing else), and its processes are found again through pid files, so
one process may bring the lab up and another place calls or take it down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ivr.lab.ami import AmiClient
from ivr.lab.cdr import read_cdrs
from ivr.lab.conf import LabConfig, Seat, render_config
from ivr.lab.sipp import CallPlan, SipMessage, call_scenario, parse_message_log, seat_scenario

__all__ = [
    "DEFAULT_ROOT",
    "CallResult",
    "Lab",
    "LabError",
    "LabMark",
    "PendingCall",
    "default_root",
]

DEFAULT_ROOT = Path("/var/cache/ivr-lab/root")
STATE_IN_ROOT = PurePosixPath("/var/lib/ivr-lab")


def default_root() -> Path:
    """Where scripts/provision-lab puts the root unless told otherwise."""
    if os.environ.get("IVR_LAB_ROOT"):
        return Path(os.environ["IVR_LAB_ROOT"])
    if os.environ.get("IVR_LAB_CACHE"):
        return Path(os.environ["IVR_LAB_CACHE"]) / "root"
    return DEFAULT_ROOT


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says what to look at."""


# ------------------------------------------------------------------------ processes


def _alive(pid: int | None, name: str) -> bool:
    """Is ``pid`` a live (not zombie) process whose command line mentions ``name``?"""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A pid file can outlive its process and the pid be reused by anything else.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and name.encode() in cmdline


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_until(check: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def _terminate(pid: int, name: str, timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``pid`` is still there after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        if not _alive(pid, name):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_until(lambda: not _alive(pid, name), wait):
            return
    raise LabError(f"{name} pid {pid} survives SIGKILL")


def _udp_bound(address: str, port: int) -> bool:
    """Is something listening on udp address:port? Read, never bind: binding races."""
    # /proc/net/udp prints the address as a host-order 32-bit number.
    wanted = f"{int.from_bytes(socket.inet_aton(address), sys.byteorder):08X}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: assume the caller's short wait was enough
    return any(line.split()[1] == wanted for line in lines if len(line.split()) > 1)


def _free_udp_port(address: str, pair: bool = False) -> int:
    """A UDP port free on ``address`` (and port+2 too when ``pair``, for SIPp's media)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
            port = probe.getsockname()[1]
        if not pair:
            return port
        if port % 2 or port > 65000:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                second.bind((address, port + 2))
        except OSError:
            continue
        return port
    raise LabError(f"no free UDP port on {address}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LabMark:
    """Sizes of the lab's logs at one moment: read only what came after it."""

    offsets: Mapping[str, int]

    def offset(self, path: Path) -> int:
        return self.offsets.get(str(path), 0)


@dataclass(frozen=True)
class CallResult:
    """What one SIPp caller saw of its call."""

    number: str
    returncode: int
    messages: tuple[SipMessage, ...]
    message_log: Path
    error_log: Path
    elapsed: float

    def _invite_statuses(self) -> list[int]:
        return [
            m.status
            for m in self.messages
            if m.direction == "received" and m.status and m.cseq_method == "INVITE"
        ]

    @property
    def statuses(self) -> list[int]:
        """Every response status Asterisk gave to the INVITE, provisional ones included."""
        return self._invite_statuses()

    @property
    def final_status(self) -> int | None:
        finals = [s for s in self._invite_statuses() if s >= 200]
        return finals[0] if finals else None

    @property
    def answered(self) -> bool:
        return self.final_status == 200

    @property
    def hung_up_by(self) -> str | None:
        """Who hung up: "caller" (our BYE), "remote" (Asterisk's BYE) or None."""
        for message in self.messages:
            if message.method == "BYE":
                return "caller" if message.direction == "sent" else "remote"
        return None

    @property
    def dtmf_sent(self) -> str:
        """Digits sent by SIP INFO and acknowledged (RTP events are not logged)."""
        digits = []
        for message in self.messages:
            if message.method == "INFO" and message.direction == "sent":
                for line in message.body.splitlines():
                    if line.lower().startswith("signal="):
                        digits.append(line.split("=", 1)[1].strip())
        return "".join(digits)

    @property
    def ok(self) -> bool:
        """SIPp ran the scenario to its end (a refused call can be ``ok`` too)."""
        return self.returncode == 0


@dataclass
class PendingCall:
    """A SIPp caller running in the background; :meth:`wait` gives its result."""

    number: str
    process: subprocess.Popen[bytes]
    message_log: Path
    error_log: Path
    wait_limit: float = 120.0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        return self.process.poll() is not None

    def wait(self, timeout: float | None = None) -> CallResult:
        """Wait for the caller to finish (by default a little past its own time limit)."""
        timeout = self.wait_limit if timeout is None else timeout
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise LabError(
                f"call to {self.number} still running after {timeout} s; killed. "
                f"Messages: {self.message_log}"
            ) from None
        text = self.message_log.read_text(errors="replace") if self.message_log.exists() else ""
        return CallResult(
            number=self.number,
            returncode=code,
            messages=tuple(parse_message_log(text)),
            message_log=self.message_log,
            error_log=self.error_log,
            elapsed=time.monotonic() - self.started,
        )


# -------------------------------------------------------------------------------- lab


def _plan(plan: CallPlan | None, fields: Mapping[str, Any]) -> CallPlan:
    if plan is not None and fields:
        raise TypeError("give a CallPlan or its fields, not both")
    return plan or CallPlan(**fields)


class Lab:
    """A lab Asterisk running from ``root`` with its configuration in ``state_dir``.

    ``state_dir`` must lie inside ``root`` (Asterisk runs chrooted there); by default it
    is ``root/var/lib/ivr-lab/default``. ``up()`` and ``down()`` are idempotent.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        state_dir: Path | str | None = None,
        config: LabConfig | None = None,
    ) -> None:
        # normpath, not resolve(): ".." must not lead out of the root, symlinks may stay.
        self.root = Path(os.path.normpath(Path(root or default_root()).absolute()))
        default_state = self.root / STATE_IN_ROOT.relative_to("/") / "default"
        self.state_dir = Path(os.path.normpath(Path(state_dir or default_state).absolute()))
        try:
            inside = self.state_dir.relative_to(self.root)
        except ValueError:
            raise LabError(
                f"state folder {self.state_dir} must be inside the root {self.root}"
            ) from None
        # The same folder as Asterisk sees it from inside the chroot.
        self._state_in_root = PurePosixPath("/") / inside
        self.config = config or LabConfig()
        self._calls = 0

    # ---------------------------------------------------------------- paths
    @property
    def etc_dir(self) -> Path:
        return self.state_dir / "etc"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def sipp_dir(self) -> Path:
        return self.state_dir / "sipp"

    @property
    def calls_dir(self) -> Path:
        return self.state_dir / "calls"

    @property
    def cdr_csv(self) -> Path:
        return self.log_dir / "cdr-csv" / "Master.csv"

    @property
    def messages_log(self) -> Path:
        """Asterisk's own log: the first thing to read when a call misbehaves."""
        return self.log_dir / "messages.log"

    @property
    def sip_address(self) -> str:
        return f"{self.config.sip_host}:{self.config.sip_port}"

    @property
    def _conf_in_root(self) -> str:
        return str(self._state_in_root / "etc" / "asterisk.conf")

    @property
    def _pidfile(self) -> Path:
        return self.state_dir / "run" / "asterisk.pid"

    def _seat_file(self, seat: Seat | str, suffix: str) -> Path:
        name = seat if isinstance(seat, str) else seat.name
        return self.sipp_dir / f"{name}.{suffix}"

    # ---------------------------------------------------------------- checks
    def _check_host(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root: Asterisk runs under chroot")
        if not (self.root / "usr/sbin/asterisk").exists():
            raise LabError(
                f"no Asterisk in {self.root}: run scripts/provision-lab "
                f"(or set IVR_LAB_ROOT to a provisioned root)"
            )
        if not shutil.which("sipp"):
            raise LabError("sipp not found: run scripts/provision-lab (Debian's sip-tester)")

    def _moddir(self) -> str:
        found = sorted(self.root.glob("usr/lib/*/asterisk/modules"))
        if not found:
            raise LabError(f"no Asterisk module folder under {self.root}/usr/lib")
        return "/" + str(found[0].relative_to(self.root))

    def _ensure_hosts(self) -> None:
        # Without the machine's name in the root's /etc/hosts, Asterisk's look-ups of it
        # wait for the resolver timeout and stall all SIP meanwhile.
        hosts = self.root / "etc/hosts"
        host = socket.gethostname()
        text = hosts.read_text() if hosts.exists() else ""
        if any(host in line.split()[1:] for line in text.splitlines() if line.strip()):
            return
        hosts.write_text(text + f"127.0.0.1\t{host}\n")

    # ---------------------------------------------------------------- asterisk
    def asterisk_pid(self) -> int | None:
        pid = _read_pid(self._pidfile)
        return pid if _alive(pid, "asterisk") else None

    def asterisk_running(self) -> bool:
        return self.asterisk_pid() is not None

    def cli(self, command: str, timeout: float = 15.0) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output."""
        try:
            done = subprocess.run(
                ["chroot", str(self.root), "asterisk", "-C", self._conf_in_root, "-rx", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"asterisk -rx {command!r} timed out after {timeout} s") from exc
        if done.returncode != 0 or "Unable to connect to remote asterisk" in done.stdout:
            raise LabError(
                f"asterisk -rx {command!r} failed ({done.returncode}): "
                f"{(done.stdout + done.stderr).strip()}"
            )
        return done.stdout

    def write_config(self) -> bool:
        """Render the configuration into the state folder; True if any file changed."""
        files = render_config(self.config, self._state_in_root, self._moddir())
        # cdr_csv does not create its folder: without it every CDR is lost.
        for sub in ("etc", "log/cdr-csv", "run", "spool", "db", "cache"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        changed = False
        for name, text in files.items():
            path = self.etc_dir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                changed = True
        return changed

    def _start_asterisk(self, timeout: float) -> None:
        host, port = self.config.sip_host, self.config.sip_port
        if _udp_bound(host, port):
            raise LabError(
                f"{host}:{port} is taken while this lab's Asterisk is down: another lab "
                f"(see {self.root / STATE_IN_ROOT.relative_to('/')}) or another SIP server "
                "runs; take it down first"
            )
        # Without -f Asterisk daemonises: it outlives this process and leaves a pid file.
        started = subprocess.run(
            ["chroot", str(self.root), "asterisk", "-C", self._conf_in_root, "-g"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if started.returncode != 0:
            raise LabError(
                f"asterisk did not start ({started.returncode}): "
                f"{(started.stdout + started.stderr).strip()}\n{_tail(self.messages_log)}"
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(LabError):
                # Returns once every module has loaded, so SIP is served from then on.
                self.cli("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))
                break
            if time.monotonic() > deadline or (
                _read_pid(self._pidfile) and not self.asterisk_running()
            ):
                raise LabError(
                    "asterisk did not come up; its log says:\n" + _tail(self.messages_log)
                )
            time.sleep(0.2)
        if not _udp_bound(host, port):
            raise LabError(
                f"asterisk runs but does not listen on udp {host}:{port}; its log says:\n"
                + _tail(self.messages_log)
            )

    def _stop_asterisk(self, timeout: float) -> None:
        pid = self.asterisk_pid()
        if pid is None:
            return
        with contextlib.suppress(LabError):
            self.cli("core stop now", timeout=timeout)
        if not _wait_until(lambda: not _alive(pid, "asterisk"), timeout):
            _terminate(pid, "asterisk", 3.0)

    # ---------------------------------------------------------------- seats
    def seat_pid(self, name: str) -> int | None:
        pid = _read_pid(self._seat_file(name, "pid"))
        return pid if _alive(pid, "sipp") else None

    def _seat_spec(self, seat: Seat) -> str:
        """What a running seat was started with: a change means a restart."""
        return f"{seat!r} trace={self.config.trace_seats}"

    def _seat_command(self, seat: Seat) -> list[str]:
        return [
            "sipp",
            "-sf", str(self._seat_file(seat, "xml")),
            "-i", seat.address,
            "-p", str(seat.port),
            "-mi", seat.address,
            "-mp", "6000",
            "-aa",  # 200 to stray INFO/UPDATE/OPTIONS instead of aborting the call
            "-nostdin",
            "-bg",
            "-trace_err", "-error_file", str(self._seat_file(seat, "errors.log")),
        ] + (
            ["-trace_msg", "-message_file", str(self._seat_file(seat, "messages.log"))]
            if self.config.trace_seats
            else []
        )  # fmt: skip

    def _seat_orphans(self, seat: Seat) -> list[int]:
        """SIPp processes running this lab's scenario for ``seat`` without a pid file."""
        marker = str(self._seat_file(seat, "xml")).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return [pid for pid in pids if _alive(pid, "sipp")]

    def _start_seat(self, seat: Seat, timeout: float) -> None:
        for pid in self._seat_orphans(seat):  # left by a run that died half-way
            _terminate(pid, "sipp", timeout)
        if _udp_bound(seat.address, seat.port):
            raise LabError(
                f"{seat.address}:{seat.port} is already taken; seat {seat.name} cannot bind"
            )
        self._seat_file(seat, "xml").write_text(seat_scenario(seat))
        # SIPp opens its error log only on a first error: drop one from an earlier run.
        self._seat_file(seat, "errors.log").unlink(missing_ok=True)
        # -bg forks the UAS into the background and prints its pid.
        out = subprocess.run(
            self._seat_command(seat),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        started: int | None = None
        for token in out.stdout.replace("[", " ").replace("]", " ").split():
            if token.isdigit():
                started = int(token)
        # The parent of a -bg SIPp exits with 99 on success; the pid is what counts.
        if started is None or not _alive(started, "sipp"):
            raise LabError(
                f"seat {seat.name}: sipp failed ({out.returncode}): {out.stdout}{out.stderr}"
            )
        self._seat_file(seat, "pid").write_text(f"{started}\n")
        self._seat_file(seat, "spec").write_text(self._seat_spec(seat))
        if not _wait_until(lambda: _udp_bound(seat.address, seat.port), timeout):
            raise LabError(
                f"seat {seat.name} did not bind {seat.address}:{seat.port}; "
                f"{_tail(self._seat_file(seat, 'errors.log'))}"
            )

    def _stop_seat(self, name: str, timeout: float) -> None:
        pid = self.seat_pid(name)
        if pid is not None:
            _terminate(pid, "sipp", timeout)
        self._seat_file(name, "pid").unlink(missing_ok=True)

    def _running_seat_names(self) -> list[str]:
        if not self.sipp_dir.exists():
            return []
        return sorted(p.name.removesuffix(".pid") for p in self.sipp_dir.glob("*.pid"))

    # ---------------------------------------------------------------- lifecycle
    def up(self, timeout: float = 30.0) -> None:
        """Bring Asterisk and every seat up with the current config (restart what changed)."""
        self._check_host()
        self._ensure_hosts()
        self.sipp_dir.mkdir(parents=True, exist_ok=True)
        self.calls_dir.mkdir(parents=True, exist_ok=True)
        changed = self.write_config()
        if changed and self.asterisk_running():
            self._stop_asterisk(timeout)
        if not self.asterisk_running():
            self._start_asterisk(timeout)
        wanted = {seat.name: seat for seat in self.config.seats}
        for name in self._running_seat_names():
            seat = wanted.get(name)
            spec = self._seat_file(name, "spec")
            current = spec.read_text() if spec.exists() else ""
            if seat is None or current != self._seat_spec(seat) or self.seat_pid(name) is None:
                self._stop_seat(name, timeout)
        for seat in self.config.seats:
            if self.seat_pid(seat.name) is None:
                self._start_seat(seat, timeout)

    def down(self, timeout: float = 10.0) -> None:
        """Stop every seat and Asterisk; files stay for reading afterwards."""
        for name in self._running_seat_names():
            self._stop_seat(name, timeout)
        self._stop_asterisk(timeout)

    def reload(self) -> None:
        """Re-render the configuration and reload it into the running Asterisk."""
        self.write_config()
        self.cli("core reload")

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---------------------------------------------------------------- calls
    def start_call(
        self,
        number: str,
        plan: CallPlan | None = None,
        *,
        trunk: str | None = None,
        timeout: float = 60.0,
        **plan_fields: Any,
    ) -> PendingCall:
        """Place a call to ``number`` from ``trunk``'s address in the background.

        ``plan_fields`` (hold, dtmf, dtmf_at, caller_id, headers...) build a
        :class:`CallPlan` when no ``plan`` is given. ``timeout`` bounds the call beyond
        its planned hold; SIPp gives up by itself after that.
        """
        plan = _plan(plan, plan_fields)
        if not number or not all(c.isalnum() or c in "+*#._-" for c in number):
            raise LabError(f"bad number {number!r}")
        source = self.config.trunk(trunk).address
        self._calls += 1
        stem = f"{int(time.time() * 1000)}-{os.getpid()}-{self._calls}-{number}"
        scenario = self.calls_dir / f"{stem}.xml"
        scenario.write_text(call_scenario(plan))
        messages = self.calls_dir / f"{stem}.messages.log"
        errors = self.calls_dir / f"{stem}.errors.log"
        budget = plan.hold + timeout
        command = [
            "sipp", self.sip_address,
            "-sf", str(scenario),
            "-s", number,
            "-i", source,
            "-p", str(_free_udp_port(source)),
            "-mi", source,
            "-mp", str(_free_udp_port(source, pair=True)),
            "-m", "1",
            "-aa",
            "-nostdin",
            "-timeout", f"{int(budget) + 1}s", "-timeout_error",
            "-trace_msg", "-message_file", str(messages),
            "-trace_err", "-error_file", str(errors),
        ]  # fmt: skip
        with (self.calls_dir / f"{stem}.stderr").open("wb") as stderr:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        return PendingCall(number, process, messages, errors, wait_limit=budget + 5)

    def call(
        self,
        number: str,
        plan: CallPlan | None = None,
        *,
        trunk: str | None = None,
        timeout: float = 60.0,
        **plan_fields: Any,
    ) -> CallResult:
        """Place a call and wait for its end; arguments as for :meth:`start_call`."""
        return self.start_call(number, plan, trunk=trunk, timeout=timeout, **plan_fields).wait()

    def ami(self, timeout: float = 5.0) -> AmiClient:
        """An AMI session on the lab's manager port (use it with ``with``)."""
        c = self.config
        return AmiClient(c.sip_host, c.ami_port, c.ami_user, c.ami_secret, timeout)

    # ---------------------------------------------------------------- records
    def mark(self) -> LabMark:
        """Remember how far every log has grown; pass it as ``since`` to read what follows."""
        paths = [self.cdr_csv] + [
            self._seat_file(seat, "messages.log") for seat in self.config.seats
        ]
        return LabMark({str(p): p.stat().st_size if p.exists() else 0 for p in paths})

    def seat_messages(self, name: str, since: LabMark | None = None) -> list[SipMessage]:
        path = self._seat_file(self.config.seat(name), "messages.log")
        try:
            with path.open("rb") as handle:
                handle.seek(since.offset(path) if since else 0)
                text = handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return parse_message_log(text)

    def seat_calls(self, name: str, since: LabMark | None = None) -> list[SipMessage]:
        """The initial INVITEs seat ``name`` received (Request-URI, To, From, headers)."""
        return [
            m
            for m in self.seat_messages(name, since)
            if m.direction == "received" and m.is_initial_invite
        ]

    def calls_by_seat(self, since: LabMark | None = None) -> dict[str, list[SipMessage]]:
        return {seat.name: self.seat_calls(seat.name, since) for seat in self.config.seats}

    def answered_count(self, name: str, since: LabMark | None = None) -> int:
        """How many INVITEs seat ``name`` answered with 200."""
        return sum(
            1
            for m in self.seat_messages(name, since)
            if m.direction == "sent" and m.status == 200 and m.cseq_method == "INVITE"
        )

    def cdrs(self, since: LabMark | None = None) -> list[dict[str, str]]:
        return read_cdrs(self.cdr_csv, since.offset(self.cdr_csv) if since else 0)

    def wait_for_cdrs(
        self,
        predicate: Callable[[dict[str, str]], bool] = lambda _: True,
        count: int = 1,
        since: LabMark | None = None,
        timeout: float = 10.0,
    ) -> list[dict[str, str]]:
        """CDRs matching ``predicate``, once at least ``count`` exist (they follow hang-up)."""
        found: list[dict[str, str]] = []

        def enough() -> bool:
            nonlocal found
            found = [r for r in self.cdrs(since) if predicate(r)]
            return len(found) >= count

        if not _wait_until(enough, timeout, 0.1):
            raise LabError(f"{len(found)} of {count} CDRs after {timeout} s in {self.cdr_csv}")
        return found

    def clear_call_logs(self) -> int:
        """Delete the files of finished lab calls (four per call); returns how many."""
        removed = 0
        for path in self.calls_dir.glob("*"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        pid = self.asterisk_pid()
        version = None
        if pid is not None:
            with contextlib.suppress(LabError):
                version = self.cli("core show version", timeout=5).strip()
        seats = {}
        for seat in self.config.seats:
            seat_pid = self.seat_pid(seat.name)
            seats[seat.name] = {
                "address": f"{seat.address}:{seat.port}",
                "running": seat_pid is not None,
                "pid": seat_pid,
                "invites": len(self.seat_calls(seat.name)),
                "answered": self.answered_count(seat.name),
            }
        return {
            "root": str(self.root),
            "state_dir": str(self.state_dir),
            "sip": self.sip_address,
            "ami": f"{self.config.sip_host}:{self.config.ami_port}",
            "asterisk": {"running": pid is not None, "pid": pid, "version": version},
            "seats": seats,
            "cdr_csv": str(self.cdr_csv),
            "log": str(self.messages_log),
        }

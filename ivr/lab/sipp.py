"""SIPp on both sides of the lab: scenarios for seats and callers, and their message logs.

The scenarios are generated, not shipped, because each seat's ring time, reply and hold
and each call's DTMF digits change their shape. Every wait on the far end is a
``<recv ... timeout ontimeout>`` rather than a ``<pause>``: a BYE that arrives during a
pause is an "unexpected message" to SIPp and aborts the call, a receive with a timeout
takes it in its stride.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from ivr.lab.conf import Seat

__all__ = [
    "DTMF_DIGITS",
    "SipMessage",
    "call_scenario",
    "parse_message_log",
    "seat_scenario",
]

DTMF_DIGITS = "0123456789*#ABCD"

_ENTRY = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", re.MULTILINE)
_KIND = re.compile(r"^\s*(\w+) message (sent|received)\b.*$", re.MULTILINE)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 3261 token characters
_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
            "l": "content-length", "c": "content-type"}  # fmt: skip


@dataclass(frozen=True)
class SipMessage:
    """One SIP message as SIPp logged it."""

    timestamp: str
    direction: str  # "sent" or "received", from SIPp's side
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str = ""

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive (or compact) name."""
        wanted = _COMPACT.get(name.lower(), name.lower())
        for key, value in self.headers:
            if _COMPACT.get(key.lower(), key.lower()) == wanted:
                return value
        return None

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0")

    @property
    def method(self) -> str | None:
        return self.start_line.split(" ", 1)[0] if self.is_request else None

    @property
    def request_uri(self) -> str | None:
        parts = self.start_line.split(" ")
        return parts[1] if self.is_request and len(parts) == 3 else None

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        try:
            return int(self.start_line.split(" ")[1])
        except (IndexError, ValueError):
            return None

    @property
    def call_id(self) -> str | None:
        return self.header("Call-ID")

    @property
    def cseq_method(self) -> str | None:
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else None

    @property
    def to_user(self) -> str | None:
        return _uri_user(self.header("To"))

    @property
    def from_user(self) -> str | None:
        return _uri_user(self.header("From"))

    @property
    def request_user(self) -> str | None:
        return _uri_user(self.request_uri)

    @property
    def is_initial_invite(self) -> bool:
        """An INVITE that opens a dialog: a re-INVITE carries a To tag."""
        to = self.header("To") or ""
        return self.method == "INVITE" and ";tag=" not in to


def _uri_user(value: str | None) -> str | None:
    if not value:
        return None
    match = re.search(r"sips?:([^@;>]+)@", value)
    return match.group(1) if match else None


def _parse_message(timestamp: str, direction: str, text: str) -> SipMessage | None:
    text = text.replace("\r\n", "\n").strip("\n")
    if not text:
        return None
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if sep and _HEADER_NAME.match(name.strip()):
            headers.append((name.strip(), value.strip()))
    return SipMessage(timestamp, direction, lines[0].strip(), tuple(headers), body.strip("\n"))


def parse_message_log(text: str) -> list[SipMessage]:
    """Parse the log that ``sipp -trace_msg -message_file FILE`` writes."""
    messages: list[SipMessage] = []
    marks = list(_ENTRY.finditer(text))
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
        chunk = text[mark.end() : end]
        kind = _KIND.search(chunk)
        if not kind:
            continue  # SIPp also logs notes such as aborted calls here
        message = _parse_message(mark.group(1), kind.group(2), chunk[kind.end() :])
        if message:
            messages.append(message)
    return messages


# --------------------------------------------------------------------------- scenarios


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _cdata(message: str) -> str:
    # SIPp wants the message flush left; it fixes line endings and Content-Length itself.
    return "<![CDATA[\n" + message.strip("\n") + "\n\n]]>"


def _send(message: str, *, retrans: bool = False) -> str:
    attrs = ' retrans="500"' if retrans else ""
    return f"<send{attrs}>{_cdata(message)}</send>"


_RESPONSE_HEAD = """[last_Via:]
[last_From:]
[last_To:];tag={tag}
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
Server: ivr-lab seat"""

_SEAT_TAG = "[pid]SIPpSeat[call_number]"
_CALLER_TAG = "[pid]SIPpCaller[call_number]"

_SDP = """v=0
o=ivrlab [pid] [call_number] IN IP[local_ip_type] [local_ip]
s=ivr-lab
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0{events}
a=rtpmap:0 PCMU/8000{event_map}
a=sendrecv"""

_REASONS = {200: "OK", 302: "Moved Temporarily", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here",
            487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
            503: "Service Unavailable", 600: "Busy Everywhere", 603: "Decline"}  # fmt: skip


# SIPp's play_dtmf sends RFC 4733 events with payload type 96: offer exactly that.
_EVENT_PT = 96


def _sdp(telephone_event: bool) -> str:
    if telephone_event:
        return _SDP.format(
            events=f" {_EVENT_PT}",
            event_map=f"\na=rtpmap:{_EVENT_PT} telephone-event/8000\na=fmtp:{_EVENT_PT} 0-15",
        )
    return _SDP.format(events="", event_map="")


def seat_scenario(seat: Seat) -> str:
    """A UAS scenario: answer (or refuse) every INVITE the way ``seat`` says."""
    head = _RESPONSE_HEAD.format(user=seat.name, tag=_SEAT_TAG)
    keep: list[str] = []  # values of the INVITE needed later (SIPp rejects unused ones)
    if seat.ring > 0:
        # After a CANCEL, last_CSeq is the CANCEL's; the 487 needs the INVITE's number.
        keep.append('<ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="cseq"/>')
    if seat.reply == 200 and seat.hold is not None:
        # Our own BYE goes to the caller: its From (with tag) becomes our To.
        keep.append('<ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller"/>')
    actions = f"<action>{''.join(keep)}</action>" if keep else ""
    steps: list[str] = [
        f'<recv request="INVITE" rrs="true">{actions}</recv>',
        _send(f"SIP/2.0 180 Ringing\n{head}\nContent-Length: 0"),
    ]
    if seat.ring > 0:
        steps.append(
            f'<recv request="CANCEL" timeout="{_ms(seat.ring)}" ontimeout="reply" '
            'next="cancelled"/>'
        )
    steps.append('<label id="reply"/>')
    ok_to_request = (
        "SIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n"
        "[last_CSeq:]\nContent-Length: 0"
    )
    if seat.reply == 200:
        steps += [
            _send(
                f"SIP/2.0 200 OK\n{head}\nContent-Type: application/sdp\n"
                f"Content-Length: [len]\n\n{_sdp(False)}",
                retrans=True,
            ),
            '<recv request="ACK" crlf="true"/>',
        ]
        if seat.hold is None:
            steps.append('<recv request="BYE"/>')
        else:
            steps.append(f'<recv request="BYE" timeout="{_ms(seat.hold)}" ontimeout="hangup"/>')
        steps += [_send(ok_to_request), '<nop next="end"/>']
        if seat.hold is not None:
            steps += [
                '<label id="hangup"/>',
                _send(
                    "BYE [next_url] SIP/2.0\n"
                    "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
                    "[routes]\n"
                    f"From: <sip:{seat.name}@[local_ip]:[local_port]>;tag={_SEAT_TAG}\n"
                    "To: [$caller]\n[last_Call-ID:]\nCSeq: 1 BYE\nMax-Forwards: 70\n"
                    "Content-Length: 0",
                    retrans=True,
                ),
                '<recv response="200"/>',
                '<nop next="end"/>',
            ]
    else:
        reason = _REASONS.get(seat.reply, "Refused")
        steps += [
            _send(f"SIP/2.0 {seat.reply} {reason}\n{head}\nContent-Length: 0"),
            '<recv request="ACK" next="end"/>',
        ]
    if seat.ring > 0:
        steps += [
            '<label id="cancelled"/>',
            _send(ok_to_request),
            _send(
                "SIP/2.0 487 Request Terminated\n[last_Via:]\n[last_From:]\n"
                f"[last_To:];tag={_SEAT_TAG}\n[last_Call-ID:]\n"
                "CSeq: [$cseq] INVITE\nContent-Length: 0"
            ),
            '<recv request="ACK"/>',
        ]
    steps.append('<label id="end"/>')
    return _scenario(f"ivr-lab seat {seat.name}", steps)


def _scenario(name: str, steps: Sequence[str]) -> str:
    body = "\n".join(f"  {step}" for step in steps)
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        f"<scenario name={quoteattr(name)}>\n{body}\n</scenario>\n"
    )


@dataclass(frozen=True)
class CallPlan:
    """What a lab caller does, rendered by :func:`call_scenario`."""

    caller_id: str = "13800000000"
    caller_name: str = "ivr-lab"
    hold: float = 5.0
    """Seconds from the answer to the caller's BYE (unless the far end hangs up first)."""
    dtmf: str = ""
    dtmf_at: float = 1.0
    """Seconds after the answer at which the first digit is sent."""
    dtmf_gap: float = 0.4
    """Seconds from one digit to the next (for rfc2833: half tone, half pause)."""
    dtmf_mode: str = "info"
    """SIP INFO ("info", sent on time) or RTP events ("rfc2833", SIPp's play_dtmf)."""
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(d not in DTMF_DIGITS for d in self.dtmf):
            raise ValueError(f"not DTMF digits: {self.dtmf!r}")
        if self.dtmf_mode not in ("info", "rfc2833"):
            raise ValueError(f"dtmf_mode must be info or rfc2833, not {self.dtmf_mode!r}")
        if self.dtmf and self.dtmf_at + len(self.dtmf) * self.dtmf_gap >= self.hold:
            raise ValueError("hold must outlast the DTMF digits")
        # Values go verbatim into a CDATA section: no line breaks, no CDATA end.
        for key, value in self.headers.items():
            if not _HEADER_NAME.match(key) or any(c in value for c in ("\n", "\r", "]]>")):
                raise ValueError(f"bad header {key!r}")
        if not re.fullmatch(r"[0-9A-Za-z+*#._-]+", self.caller_id):
            raise ValueError(f"bad caller id {self.caller_id!r}")
        if any(c in self.caller_name for c in ('"', "\r", "\n", "\\", "]]>")):
            raise ValueError(f"bad caller name {self.caller_name!r}")


_IN_DIALOG = """{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
{from_}
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70"""

# Final refusals that Asterisk may send; each ends the call with an ACK, not an abort.
_REFUSALS = (403, 404, 408, 480, 483, 484, 486, 487, 488, 500, 502, 503, 603)


def call_scenario(plan: CallPlan) -> str:
    """A UAC scenario: dial ``[service]``, hold, send DTMF, hang up (or be hung up on)."""
    name, user = plan.caller_name, plan.caller_id
    from_ = f'From: "{name}" <sip:{user}@[local_ip]:[local_port]>;tag={_CALLER_TAG}'
    extra = "".join(f"{k}: {v}\n" for k, v in plan.headers.items())
    invite = (
        "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"{from_}\n"
        "To: <sip:[service]@[remote_ip]:[remote_port]>\n"
        "Call-ID: [call_id]\nCSeq: 1 INVITE\n"
        f"Contact: <sip:{user}@[local_ip]:[local_port]>\nMax-Forwards: 70\n"
        f"User-Agent: ivr-lab caller\n{extra}"
        f"Content-Type: application/sdp\nContent-Length: [len]\n\n"
        f"{_sdp(plan.dtmf_mode == 'rfc2833')}"
    )
    steps = [
        _send(invite, retrans=True),
        '<recv response="100" optional="true"/>',
        '<recv response="180" optional="true"/>',
        '<recv response="183" optional="true"/>',
    ]
    steps += [f'<recv response="{code}" optional="true" next="refused"/>' for code in _REFUSALS]
    steps += [
        '<recv response="200" rrs="true"/>',
        _send(
            "ACK [next_url] SIP/2.0\n"
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n[routes]\n"
            f"{from_}\n"
            "[last_To:]\nCall-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0"
        ),
    ]
    cseq = 2
    waited = 0.0
    if plan.dtmf and plan.dtmf_mode == "rfc2833":
        # One play_dtmf for all digits: each play opens a new RTP stream (SSRC), and
        # overlapping streams lose digits. SIPp leads with 400 ms of filler packets,
        # then puts one tone-and-pause slot before each digit, so start that much early.
        tone_ms = min(2000, max(50, round(plan.dtmf_gap * 500)))
        start = max(0.0, plan.dtmf_at - 0.4 - 2 * tone_ms / 1000)
        steps += [
            f'<recv request="BYE" timeout="{_ms(start)}" ontimeout="dtmf" next="remote_bye"/>',
            '<label id="dtmf"/>',
            f'<nop><action><exec play_dtmf="{escape(plan.dtmf)},{tone_ms}"/></action></nop>',
        ]
        waited = start
    for index, digit in enumerate(plan.dtmf if plan.dtmf_mode == "info" else ""):
        due = plan.dtmf_at + index * plan.dtmf_gap
        steps.append(
            f'<recv request="BYE" timeout="{_ms(due - waited)}" ontimeout="digit{index}" '
            'next="remote_bye"/>'
        )
        steps.append(f'<label id="digit{index}"/>')
        waited = due
        steps += [
            _send(
                _IN_DIALOG.format(method="INFO", from_=from_, user=user, cseq=cseq)
                + "\nContent-Type: application/dtmf-relay\nContent-Length: [len]\n\n"
                + f"Signal={digit}\nDuration=160",
                retrans=True,
            ),
            '<recv response="200"/>',
        ]
        cseq += 1
    steps += [
        f'<recv request="BYE" timeout="{_ms(plan.hold - waited)}" ontimeout="hangup" '
        'next="remote_bye"/>',
        '<label id="hangup"/>',
        _send(
            _IN_DIALOG.format(method="BYE", from_=from_, user=user, cseq=cseq)
            + "\nContent-Length: 0",
            retrans=True,
        ),
        '<recv response="200" next="end"/>',
        '<label id="remote_bye"/>',
        _send(
            "SIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n"
            "[last_CSeq:]\nContent-Length: 0"
        ),
        '<nop next="end"/>',
        '<label id="refused"/>',
        # The ACK of a refusal belongs to the INVITE transaction: same Via branch.
        _send(
            "ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n"
            f"{from_}\n"
            "[last_To:]\nCall-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0"
        ),
        '<label id="end"/>',
    ]
    return _scenario("ivr-lab call", steps)

"""Real SIP calls through a real Asterisk, driven by its native dialplan.

These prove the lab's machinery (Asterisk in the sid root, SIPp callers and seats, CDRs,
AMI, DTMF) before the dialplan is pointed at the FastAGI controller. A call counts as
routed when the seat's SIPp saw the INVITE, the CDR names the destination, and (where
checked) the AMI event stream agrees.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.lab import DEFAULT_SEATS, Lab, LabConfig, LabMark, Seat

pytestmark = pytest.mark.asterisk

DIALPLAN = r"""
[lab-inbound]
; the plain hotline flow: greet, then a seat
exten => 12345,1,Answer()
 same => n,Playback(hello-world)
 same => n,Dial(PJSIP/seat-a,20)
 same => n,Hangup()

; the seat group as an Asterisk queue
exten => 12388,1,Answer()
 same => n,Queue(lab-queue,r,,,20)
 same => n,Hangup()

; key 0 during the prompt: one-key transfer to the emergency line (seat-c)
exten => 12399,1,Answer()
 same => n,Read(KEY,hello-world,1,,1,3)
 same => n,Set(CDR(userfield)=key=${KEY})
 same => n,GotoIf($["${KEY}" = "0"]?urgent)
 same => n,Dial(PJSIP/seat-a,20)
 same => n,Hangup()
 same => n(urgent),Dial(PJSIP/110@seat-c,20)
 same => n,Hangup()

; several keys ended by #, as when a caller enters a work-order number
exten => 12377,1,Answer()
 same => n,Read(KEYS,,8,,1,4)
 same => n,Set(CDR(userfield)=keys=${KEYS})
 same => n,Hangup()

; a seat that answers busy
exten => 12366,1,Dial(PJSIP/busy-seat,10)
 same => n,Hangup(17)
"""

QUEUES = """
[lab-queue]
strategy = ringall
timeout = 15
member => PJSIP/seat-b
"""

SEATS = (*DEFAULT_SEATS, Seat("busy-seat", "127.0.0.5", reply=486))

_caller_ids = itertools.count(13900000001)


def caller_id() -> str:
    """A fresh caller number per call: seats and CDRs are matched on it."""
    return str(next(_caller_ids))


@pytest.fixture(scope="module")
def lab(lab_root: Path) -> Iterator[Lab]:
    config = LabConfig(seats=SEATS, extensions=(DIALPLAN,), queues=(QUEUES,))
    the_lab = Lab(lab_root, lab_root / "var/lib/ivr-lab/pytest", config)
    the_lab.up()
    try:
        yield the_lab
    finally:
        the_lab.down()


def _only_seat(lab: Lab, since: LabMark, caller: str) -> str:
    """The one seat whose SIPp received an INVITE from ``caller`` since the mark."""
    hits = {
        name: invites
        for name, invites in lab.calls_by_seat(since).items()
        for invite in invites
        if invite.from_user == caller
    }
    assert len(hits) == 1, f"expected one seat to ring for {caller}, got {sorted(hits)}"
    return next(iter(hits))


def test_native_12345_reaches_the_seat(lab: Lab) -> None:
    mark, caller = lab.mark(), caller_id()
    with lab.ami() as ami:
        pending = lab.start_call("12345", hold=3.0, caller_id=caller)
        dial_end = ami.wait_for(
            lambda e: e.get("Event") == "DialEnd" and e.get("CallerIDNum") == caller, 10
        )
        result = pending.wait()

    assert result.answered and result.hung_up_by == "caller", result.message_log
    assert _only_seat(lab, mark, caller) == "seat-a"
    (invite,) = lab.seat_calls("seat-a", mark)
    assert invite.request_uri == "sip:seat-a@127.0.0.2:5060"
    assert invite.to_user == "seat-a"

    (cdr,) = lab.wait_for_cdrs(lambda r: r["src"] == caller, since=mark)
    assert cdr["dst"] == "12345"
    assert cdr["dstchannel"].startswith("PJSIP/seat-a-")
    assert cdr["lastapp"] == "Dial"
    assert cdr["disposition"] == "ANSWERED"

    assert dial_end["DestChannel"].startswith("PJSIP/seat-a-")
    assert dial_end["DialStatus"] == "ANSWER"


def test_queue_rings_its_static_member(lab: Lab) -> None:
    mark, caller = lab.mark(), caller_id()
    result = lab.call("12388", hold=2.5, caller_id=caller)

    assert result.answered, result.message_log
    assert _only_seat(lab, mark, caller) == "seat-b"
    (cdr,) = lab.wait_for_cdrs(lambda r: r["src"] == caller, since=mark)
    assert (cdr["dst"], cdr["lastapp"], cdr["disposition"]) == ("12388", "Queue", "ANSWERED")
    assert cdr["dstchannel"].startswith("PJSIP/seat-b-")


@pytest.mark.parametrize(
    ("mode", "key", "seat", "request_user"),
    [
        ("info", "0", "seat-c", "110"),
        ("rfc2833", "0", "seat-c", "110"),
        ("info", "5", "seat-a", "seat-a"),
    ],
)
def test_dtmf_key_picks_the_seat(
    lab: Lab, mode: str, key: str, seat: str, request_user: str
) -> None:
    mark, caller = lab.mark(), caller_id()
    # The key goes in during the prompt, which Read() listens through.
    result = lab.call("12399", hold=3.0, caller_id=caller, dtmf=key, dtmf_at=0.5, dtmf_mode=mode)

    assert result.answered, result.message_log
    if mode == "info":
        assert result.dtmf_sent == key
    assert _only_seat(lab, mark, caller) == seat
    (invite,) = [i for i in lab.seat_calls(seat, mark) if i.from_user == caller]
    assert invite.request_user == request_user
    (cdr,) = lab.wait_for_cdrs(lambda r: r["src"] == caller, since=mark)
    assert cdr["userfield"] == f"key={key}"
    assert cdr["dstchannel"].startswith(f"PJSIP/{seat}-")
    assert cdr["disposition"] == "ANSWERED"


@pytest.mark.parametrize("mode", ["info", "rfc2833"])
def test_several_digits_arrive_in_order(lab: Lab, mode: str) -> None:
    mark, caller = lab.mark(), caller_id()
    result = lab.call(
        "12377",
        hold=4.0,
        caller_id=caller,
        dtmf="1209#",
        dtmf_at=0.3,
        dtmf_gap=0.3,
        dtmf_mode=mode,
    )
    assert result.answered and result.hung_up_by == "remote", result.message_log
    (cdr,) = lab.wait_for_cdrs(lambda r: r["src"] == caller, since=mark)
    assert cdr["userfield"] == "keys=1209"


def test_busy_seat_is_reported_to_caller_and_cdr(lab: Lab) -> None:
    mark, caller = lab.mark(), caller_id()
    result = lab.call("12366", hold=3.0, caller_id=caller)

    assert result.final_status == 486, result.statuses
    assert not result.answered
    assert _only_seat(lab, mark, caller) == "busy-seat"
    assert lab.answered_count("busy-seat", mark) == 0
    cdrs = lab.wait_for_cdrs(lambda r: r["src"] == caller, since=mark)
    assert {r["disposition"] for r in cdrs} == {"BUSY"}


def test_unknown_number_is_refused(lab: Lab) -> None:
    mark = lab.mark()
    result = lab.call("99999", hold=2.0, caller_id=caller_id())
    assert result.final_status == 404
    assert all(not invites for invites in lab.calls_by_seat(mark).values())


def test_status_reports_the_running_lab(lab: Lab) -> None:
    status = lab.status()
    assert status["asterisk"]["running"]
    assert status["asterisk"]["version"].startswith("Asterisk 22")
    assert status["sip"] == "127.0.0.1:5060"
    assert set(status["seats"]) == {seat.name for seat in SEATS}
    assert all(seat["running"] for seat in status["seats"].values())
    assert status["seats"]["seat-a"]["answered"] >= 1

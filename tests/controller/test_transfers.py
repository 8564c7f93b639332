"""A seat's transfer on the Asterisk side, against a scripted Asterisk peer and a fake
manager: which AMI actions it sends, how the FastAGI session hands the call over and
takes it up again, and what reaches the platform. Real calls are in tests/lab."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from controller.test_calls import Recorder, asterisk
from ivr.agi import transfers as transfers_module
from ivr.agi.calls import CallController
from ivr.agi.glue import extensions_conf
from ivr.agi.live import LiveCall
from ivr.agi.manager import AmiLink, AmiSettings, AmiUnavailable
from ivr.agi.server import AgiServer
from ivr.agi.transfers import AsteriskTransfers
from ivr.core.clock import SHANGHAI
from ivr.core.routing import Hotline
from ivr.core.transfer import CallNotFound, TransferRefused, UnknownTransferTarget

from agi.fake_asterisk import UNIQUEID, FakeAsterisk
from agi.fake_manager import FakeManager

QUEUE_FACTS = 'GET FULL VARIABLE "${QUEUESTATUS}|${ABANDONED}|${QEHOLDTIME}|${MEMBERNAME}"'


class Rig:
    """A controller on a free port, its transfers over a fake manager, and a recorder."""

    def __init__(self, hotline: Hotline, manager: FakeManager) -> None:
        self.recorder = Recorder()
        self.calls = CallController(
            lambda: hotline,
            events=self.recorder,
            clock=lambda: datetime(2022, 1, 10, 9, 0, tzinfo=SHANGHAI),
        )
        self.server = AgiServer(("127.0.0.1", 0), self.calls.routes())
        self.address = self.server.start()
        self.manager = manager
        settings = AmiSettings("127.0.0.1", manager.port, "ivr", "s3cret")
        self.transfers = AsteriskTransfers(
            self.calls, settings, link_factory=lambda s: AmiLink(s, action_timeout=1.0)
        )

    def events(self) -> list[dict[str, Any]]:
        return [e for _, es in self.recorder.calls for e in es]

    def wait_for(self, event_type: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e["type"] == event_type]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {event_type} event; got {[e['type'] for e in self.events()]}")

    def queued_call(self, **env: str) -> FakeAsterisk:
        """A 12345 call in Fuzhou, left inside Queue() (its EXEC not answered yet)."""
        peer = FakeAsterisk.connect(self.address)
        peer.send_env("incoming_call", agi_arg_1="fuzhou-ct", **env)
        respond = asterisk()
        while (command := peer.read_command()) is not None:
            if command.startswith("EXEC Queue"):
                return peer
            peer.reply(respond(command))
        raise AssertionError("the call never reached Queue()")

    def pulled_out_of_the_queue(self, peer: FakeAsterisk) -> list[str]:
        """Asterisk moves the caller (AMI Redirect): Queue() returns, then HANGUP."""
        peer.reply("200 result=0")
        commands = []
        while (command := peer.read_command()) is not None:
            commands.append(command)
            if len(commands) == 1:
                peer.reply("HANGUP", "200 result=-1")
            else:  # the dead-channel read of the queue's facts
                peer.reply("200 result=1 (||7|PJSIP/desk)")
        return commands

    def back_from_transfer(self, *args: str, keys: dict[str, str] | None = None) -> list[str]:
        """The caller's new FastAGI session after the transfer (transfer_ended)."""
        peer = FakeAsterisk.connect(self.address)
        extra = {f"agi_arg_{i}": a for i, a in enumerate(args, start=1)}
        peer.send_env("transfer_ended", **extra)
        respond = asterisk(keys=keys)
        commands = []
        while (command := peer.read_command()) is not None:
            commands.append(command)
            peer.reply(respond(command))
        return commands

    def close(self) -> None:
        self.server.stop()
        self.manager.close()


@pytest.fixture
def rig(hotline: Hotline, request: pytest.FixtureRequest) -> Iterator[Rig]:
    options = getattr(request, "param", {})
    r = Rig(hotline, FakeManager(**options))
    yield r
    r.close()


def test_three_way_moves_caller_and_seat_into_the_room_and_rings_the_target(rig: Rig) -> None:
    peer = rig.queued_call()
    plan = rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    assert plan.method == "three_way" and plan.target.number == "059112366"
    setvars = [a for a in rig.manager.actions if a.get("Action") == "Setvar"]
    assert {(a["Channel"], a["Variable"], a["Value"]) for a in setvars} == {
        ("PJSIP/trunk-00000001", "IVR_ROOM", f"ivr-{UNIQUEID}"),
        ("PJSIP/desk-00000002", "IVR_ROOM", f"ivr-{UNIQUEID}"),
    }
    redirect = next(a for a in rig.manager.actions if a.get("Action") == "Redirect")
    assert (redirect["Context"], redirect["Exten"], redirect["ExtraExten"]) == (
        "ivr-three-way", "caller", "member",
    )  # fmt: skip
    assert redirect["ExtraChannel"] == "PJSIP/desk-00000002"
    commands = rig.pulled_out_of_the_queue(peer)
    assert commands[0] == QUEUE_FACTS  # then the session parks the call and ends
    transferred = rig.wait_for("transferred")
    assert transferred == {"type": "transferred", "kind": "sub_centre",
                           "target": "fuzhou-12366", "method": "three_way"}  # fmt: skip
    originate = next(a for a in rig.manager.actions if a.get("Action") == "Originate")
    assert originate["Channel"] == "Local/059112366@ivr-outbound"
    assert originate["Timeout"] == "25000" and originate["Exten"] == "member"
    assert originate["Variable"] == f"IVR_ROOM=ivr-{UNIQUEID}"
    # the room closed with the caller in it: back to the controller for the survey
    commands = rig.back_from_transfer("three_way", keys={"ivr/survey_question": "5"})
    assert commands[0] == "GET DATA ivr/survey_question 8000 1" and commands[-1] == "HANGUP"
    types = [e["type"] for e in rig.events()]
    assert types[:4] == ["call_offered", "prompt_played", "queued", "answered"]
    # the survey's events come after the transfer's, never before
    assert types.index("transferred") < types.index("survey_result")
    assert types[-1] == "call_ended" and types.count("call_ended") == 1
    answered = next(e for e in rig.events() if e["type"] == "answered")
    assert answered["wait_s"] == 7.0 and answered["answered_by"] == "PJSIP/desk-00000002"
    assert rig.calls.live.get(UNIQUEID) is None


def test_a_three_party_call_with_110_when_ownership_is_unclear(rig: Rig) -> None:
    peer = rig.queued_call()
    plan = rig.transfers.transfer(UNIQUEID, "emergency:110", method="three_way")
    assert plan.method == "three_way" and plan.target.number == "110"
    redirect = next(a for a in rig.manager.actions if a.get("Action") == "Redirect")
    assert (redirect["Context"], redirect["ExtraChannel"]) == (
        "ivr-three-way", "PJSIP/desk-00000002",
    )  # fmt: skip
    rig.pulled_out_of_the_queue(peer)
    transferred = rig.wait_for("transferred")
    assert (transferred["kind"], transferred["target"], transferred["method"]) == (
        "emergency", "110", "three_way",
    )  # fmt: skip
    originate = next(a for a in rig.manager.actions if a.get("Action") == "Originate")
    assert originate["Channel"] == "Local/110@ivr-outbound" and originate["Timeout"] == "30000"
    commands = rig.back_from_transfer("three_way", keys={"ivr/survey_question": "5"})
    assert commands[0].startswith("GET DATA ivr/survey_question")


@pytest.mark.parametrize("rig", [{"bridgepeer": "", "getvar_delay": 0.5}], indirect=True)
def test_a_caller_who_gives_up_while_a_transfer_is_asked_for_is_abandoned(rig: Rig) -> None:
    # A seat asks to transfer a call still waiting in the queue (nobody answered it),
    # and the caller hangs up while the switch is slow to say so: an abandoned call.
    peer = rig.queued_call()
    refused: list[BaseException] = []

    def ask() -> None:
        try:
            rig.transfers.transfer(UNIQUEID, "emergency:110")
        except TransferRefused as exc:
            refused.append(exc)

    request = threading.Thread(target=ask)
    request.start()
    time.sleep(0.15)  # the request waits on the manager's Getvar
    peer.reply("HANGUP", "200 result=-1")
    while peer.read_command() is not None:  # the dead-channel read: abandoned, no hold
        peer.reply("200 result=1 (|TRUE||)")
    request.join(10)
    assert len(refused) == 1 and "not talking to a seat" in str(refused[0])
    ended = rig.wait_for("call_ended")
    types = [e["type"] for e in rig.events()]
    assert "abandoned" in types and "answered" not in types
    assert ended["answered"] is False


@pytest.mark.parametrize("rig", [{"originate_delay": 0.3}], indirect=True)
def test_a_transfer_reported_as_the_caller_leaves_comes_before_the_call_end(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ring thread claims the outcome (the target answered) and loses the processor
    # right then, as the caller hangs up: the call's end must still come last.
    claimed = threading.Event()
    claim = LiveCall.conclude_transfer

    def slow_claim(live: LiveCall) -> Any:
        plan = claim(live)
        if plan is not None and threading.current_thread().name.startswith("transfer-"):
            claimed.set()
            time.sleep(0.5)
        return plan

    monkeypatch.setattr(LiveCall, "conclude_transfer", slow_claim)
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    rig.pulled_out_of_the_queue(peer)
    assert claimed.wait(3)
    rig.back_from_transfer("hangup", "")
    rig.wait_for("call_ended")
    time.sleep(0.8)  # the ring thread's report, had it been held back
    types = [e["type"] for e in rig.events()]
    assert "transferred" in types and types[-1] == "call_ended"


def test_no_target_is_rung_once_the_transfer_has_ended(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's end was reported while the ring thread still waited for them to
    # reach the room: ringing the target now would bring them into an empty room.
    monkeypatch.setattr(transfers_module, "PARK_WAIT_S", 0.2)
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    live = rig.calls.live.get(UNIQUEID)
    assert live is not None
    rig.calls.conclude_transfer(live, "caller_left")
    rig.pulled_out_of_the_queue(peer)
    time.sleep(0.6)  # past the ring thread's wait for the caller to reach the room
    assert "Originate" not in rig.manager.names()


@pytest.mark.parametrize("rig", [{"silent_on": "Originate"}], indirect=True)
def test_an_originate_the_manager_never_answers_is_hung_up(rig: Rig) -> None:
    # The switch may still ring the target; it must not answer into a failed transfer.
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    rig.pulled_out_of_the_queue(peer)
    failed = rig.wait_for("transfer_failed")
    assert failed["outcome"] == "failed"
    originate = next(a for a in rig.manager.actions if a.get("Action") == "Originate")
    hangups = [a for a in rig.manager.actions if a.get("Action") == "Hangup"]
    assert [h["Channel"] for h in hangups] == [originate["ChannelId"]]


# The target's leg never comes up (Originate fails with reason 3: no answer), after
# ringing for longer than the ring thread's polls, as a real target does.
TARGET_SILENT = pytest.mark.parametrize(
    "rig",
    [{"originate": {"Response": "Failure", "Reason": "3"}, "originate_delay": 0.6}],
    indirect=True,
)


@pytest.mark.parametrize("rig", [{"originate_delay": 0.6}], indirect=True)
def test_a_target_answering_after_some_rings_is_reported_when_it_answers(rig: Rig) -> None:
    # Reported by the ring thread while caller, seat and target talk, not only once
    # the room closes (which would make it a no-answer).
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    rig.pulled_out_of_the_queue(peer)
    transferred = rig.wait_for("transferred")
    assert (transferred["target"], transferred["method"]) == ("fuzhou-12366", "three_way")
    assert "transfer_failed" not in [e["type"] for e in rig.events()]
    commands = rig.back_from_transfer("three_way", keys={"ivr/survey_question": "5"})
    assert commands[0].startswith("GET DATA ivr/survey_question")
    assert "transfer_failed" not in [e["type"] for e in rig.events()]


def unanswered_three_way(rig: Rig) -> dict[str, Any]:
    """A sub-centre rung into the room does not answer: its transfer_failed event."""
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    rig.pulled_out_of_the_queue(peer)
    return rig.wait_for("transfer_failed")


@TARGET_SILENT
def test_unanswered_three_way_reports_a_work_order_and_the_caller_stays(rig: Rig) -> None:
    failed = unanswered_three_way(rig)
    assert (failed["outcome"], failed["work_order"], failed["method"]) == (
        "noanswer", True, "three_way",
    )  # fmt: skip
    # the seat talks on with the caller; when it leaves, the survey
    commands = rig.back_from_transfer("three_way")
    assert commands[0].startswith("GET DATA ivr/survey_question")
    assert "transferred" not in [e["type"] for e in rig.events()]


@TARGET_SILENT
def test_no_second_transfer_while_the_caller_is_still_in_the_room(rig: Rig) -> None:
    # A sub-centre did not answer: caller and seat talk on in the room. A second
    # transfer now would take the call from the transfer_ended that is to come.
    unanswered_three_way(rig)
    with pytest.raises(TransferRefused, match="three-way room"):
        rig.transfers.transfer(UNIQUEID, "kept_seats:12315")
    commands = rig.back_from_transfer("three_way", keys={"ivr/survey_question": "5"})
    assert commands[0].startswith("GET DATA ivr/survey_question")
    assert rig.wait_for("call_ended")["answered"] is True
    assert rig.calls.live.get(UNIQUEID) is None


def test_one_key_sends_the_caller_alone_and_unanswered_goes_back_to_the_seats(rig: Rig) -> None:
    peer = rig.queued_call()
    plan = rig.transfers.transfer(UNIQUEID, "emergency:110")
    assert plan.method == "one_key"
    setvars = {
        a["Variable"]: a["Value"] for a in rig.manager.actions if a.get("Action") == "Setvar"
    }
    assert setvars == {"IVR_TRANSFER_DIAL": "Local/110@ivr-outbound", "IVR_TRANSFER_RING": "30"}
    redirect = next(a for a in rig.manager.actions if a.get("Action") == "Redirect")
    assert redirect["Context"] == "ivr-one-key" and "ExtraChannel" not in redirect
    assert "Originate" not in rig.manager.names()  # the glue's Dial rings the target
    rig.pulled_out_of_the_queue(peer)
    commands = rig.back_from_transfer("one_key", "NOANSWER")
    assert commands[-1] == 'SET VARIABLE "IVR_RESULT" "fallback"'  # the glue queues them
    failed = rig.wait_for("transfer_failed")
    assert failed["method"] == "one_key" and failed["work_order"] is False
    ended = rig.wait_for("call_ended")
    assert ended["target_kind"] == "seats"


def test_one_key_answered_then_the_survey(rig: Rig) -> None:
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "utility:power")
    rig.pulled_out_of_the_queue(peer)
    commands = rig.back_from_transfer("one_key", "ANSWER", keys={"ivr/survey_question": "4"})
    assert commands[0].startswith("GET DATA ivr/survey_question")
    assert rig.wait_for("transferred")["target"] == "power"
    assert rig.wait_for("survey_result")["key"] == "4"


def test_caller_leaving_during_the_transfer_ends_the_record_once(rig: Rig) -> None:
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "emergency:110")
    rig.pulled_out_of_the_queue(peer)
    commands = rig.back_from_transfer("hangup", "CANCEL")  # the hang-up handler
    assert commands == []  # nothing to do on a dead channel but record it
    failed = rig.wait_for("transfer_failed")
    assert failed["outcome"] == "caller_left"
    types = [e["type"] for e in rig.events()]
    assert types.count("call_ended") == 1 and "survey_result" not in types


def test_caller_hanging_up_on_the_answered_target_is_transferred(rig: Rig) -> None:
    # The glue's hang-up handler passes DIALSTATUS: ANSWER when the caller talked to
    # 110 and then hung up, which is a transfer done, not one the caller gave up on.
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "emergency:110")
    rig.pulled_out_of_the_queue(peer)
    assert rig.back_from_transfer("hangup", "ANSWER") == []
    assert rig.wait_for("transferred")["target"] == "110"
    types = [e["type"] for e in rig.events()]
    assert "transfer_failed" not in types and types.count("call_ended") == 1


def test_the_glue_tells_the_controller_how_the_transfer_ended(hotline: Hotline) -> None:
    text = extensions_conf(hotline)
    handler = text.split("[ivr-transfer-end]")[1].split("\n\n")[0]
    assert "AGI(${IVR_AGI}/transfer_ended,hangup,${DIALSTATUS})" in handler
    # back from either transfer, a controller that failed or was not reached leaves
    # the caller to the seats, never to a hang-up
    for context in ("[ivr-three-way]", "[ivr-one-key]"):
        block = text.split(context)[1].split("\n\n")[0]
        steps = [line for line in block.splitlines() if "AGI(" in line or "GotoIf(" in line]
        assert "transfer_ended" in steps[0]
        assert '"${AGISTATUS}" = "FAILURE" | "${IVR_RESULT}" = "fallback"' in steps[1]
        assert steps[1].endswith("?ivr-transfer-fallback,s,1)")
    fallback = text.split("[ivr-transfer-fallback]")[1].split("\n\n")[0]
    assert "Queue(${IVR_FALLBACK_QUEUE},c)" in fallback


@pytest.mark.parametrize("rig", [{"bridgepeer": ""}], indirect=True)
def test_a_caller_not_talking_to_a_seat_cannot_be_transferred(rig: Rig) -> None:
    peer = rig.queued_call()
    with pytest.raises(TransferRefused):
        rig.transfers.transfer(UNIQUEID, "emergency:110")
    assert "Redirect" not in rig.manager.names()
    live = rig.calls.live.get(UNIQUEID)
    assert live is not None and live.transfer is None  # the call is as it was
    # and the call goes on undisturbed: the seat answers, the survey follows
    peer.reply("200 result=0")
    assert peer.read_command() == QUEUE_FACTS
    peer.reply("200 result=1 (||4|seat-1)")
    assert peer.read_command().startswith("GET DATA ivr/survey_question")
    peer.close()


def test_transfer_requests_that_cannot_start(rig: Rig) -> None:
    with pytest.raises(CallNotFound):
        rig.transfers.transfer("no-such-call", "emergency:110")
    peer = rig.queued_call()
    with pytest.raises(UnknownTransferTarget):
        rig.transfers.transfer(UNIQUEID, "sub_centre:99999")
    rig.transfers.transfer(UNIQUEID, "kept_seats:12315")
    with pytest.raises(TransferRefused, match="already under way"):
        rig.transfers.transfer(UNIQUEID, "seats")
    rig.pulled_out_of_the_queue(peer)


def test_without_a_manager_user_a_target_naming_nobody_is_still_422(rig: Rig) -> None:
    # The README's answers: an unknown target is the seat's mistake (422) whatever the
    # switch's state; only a good request finds that transfers are off (503).
    peer = rig.queued_call()
    rig.transfers.ami = dataclasses.replace(rig.transfers.ami, username="")
    assert not rig.transfers.ami.configured
    with pytest.raises(UnknownTransferTarget):
        rig.transfers.transfer(UNIQUEID, "sub_centre:99999")
    with pytest.raises(AmiUnavailable, match="no manager"):
        rig.transfers.transfer(UNIQUEID, "emergency:110")
    peer.close()


@pytest.mark.parametrize("rig", [{"silent_on": "Redirect"}], indirect=True)
def test_caller_hanging_up_as_a_transfer_fails_still_ends_the_call(rig: Rig) -> None:
    # The caller leaves Queue() while the seat's transfer is starting (so the session
    # takes it for the transfer's move and parks the call), then the Redirect fails:
    # no transfer_ended will ever come, and the call must still end.
    peer = rig.queued_call()
    failures: list[BaseException] = []

    def transfer() -> None:
        try:
            rig.transfers.transfer(UNIQUEID, "emergency:110")
        except BaseException as exc:  # the manager never answers the Redirect
            failures.append(exc)

    thread = threading.Thread(target=transfer)
    thread.start()
    deadline = time.monotonic() + 5
    while "Redirect" not in rig.manager.names():
        assert time.monotonic() < deadline, "the transfer never sent its Redirect"
        time.sleep(0.01)
    rig.pulled_out_of_the_queue(peer)  # in fact the caller hanging up
    thread.join(10)
    assert len(failures) == 1 and isinstance(failures[0], AmiUnavailable)
    ended = rig.wait_for("call_ended")
    assert ended["answered"] is True  # they had been talking to the seat
    types = [e["type"] for e in rig.events()]
    assert types.count("call_ended") == 1 and "transferred" not in types
    assert rig.calls.live.get(UNIQUEID) is None


@pytest.mark.parametrize("rig", [{"secret": "other"}], indirect=True)
def test_manager_refusing_the_login_leaves_the_call_as_it_was(rig: Rig) -> None:
    peer = rig.queued_call()
    with pytest.raises(AmiUnavailable, match="login refused"):
        rig.transfers.transfer(UNIQUEID, "emergency:110")
    live = rig.calls.live.get(UNIQUEID)
    assert live is not None and live.transfer is None
    peer.close()


def glue_after(hotline: Hotline, context: str, commands: list[str]) -> str:
    """Where the shipped glue sends a caller whose transfer_ended session sent
    `commands` and returned with the caller still on the line (no HANGUP)."""
    text = extensions_conf(hotline).split(f"[{context}]")[1].split("\n[")[0]
    before, after = text.split("/transfer_ended,", 1)
    (preset,) = re.findall(r"Set\(IVR_RESULT=([^)]*)\)", before)
    result = preset
    for command in commands:
        if command.startswith('SET VARIABLE "IVR_RESULT"'):
            result = command.split('"')[3]
    if "HANGUP" in commands:
        return "hung up by the controller"
    assert 'GotoIf($["${AGISTATUS}" = "FAILURE" | "${IVR_RESULT}" = "fallback"]' in after
    return "seats" if result == "fallback" else f"the dialplan goes on ({result or 'unset'})"


@pytest.mark.parametrize(
    ("args", "where"),
    [
        # the controller restarted while the caller rang 110 and nobody answered
        (("one_key", "NOANSWER"), "seats"),
        # ... or had their call with 110, which has ended: as when the controller
        # cannot be reached (tests/lab), the seats take them again
        (("one_key", "ANSWER"), "seats"),
        # restarted during a three-way call: as when it cannot be reached, the seats
        (("three_way",), "seats"),
    ],
)
def test_back_from_a_transfer_the_controller_forgot(
    rig: Rig, hotline: Hotline, args: tuple[str, ...], where: str
) -> None:
    commands = rig.back_from_transfer(*args)
    assert glue_after(hotline, "ivr-one-key" if args[0] == "one_key" else "ivr-three-way",
                      commands) == where  # fmt: skip


@pytest.mark.parametrize("how", ["a garbled reply", "the controller stopping"])
def test_a_survey_after_a_transfer_that_breaks_off_leaves_the_caller_to_the_seats(
    hotline: Hotline, how: str
) -> None:
    rig = Rig(hotline, FakeManager())
    try:
        peer = rig.queued_call()
        rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
        rig.pulled_out_of_the_queue(peer)
        rig.wait_for("transferred")
        back = FakeAsterisk.connect(rig.address)
        back.send_env("transfer_ended", agi_arg_1="three_way")
        commands = [back.read_command()]  # the survey's GET DATA
        if how == "a garbled reply":
            back.reply("garbage")
        else:
            threading.Thread(target=rig.server.stop, kwargs={"grace": 0.2}).start()
        while (command := back.read_command()) is not None:
            commands.append(command)
            back.reply("200 result=1")
        assert rig.wait_for("call_ended")["target_kind"] == "seats"  # as recorded
        assert glue_after(hotline, "ivr-three-way", commands) == "seats"
    finally:
        rig.close()


def test_a_survey_after_a_transfer_ends_with_the_controller_hanging_up(
    rig: Rig, hotline: Hotline
) -> None:
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    rig.pulled_out_of_the_queue(peer)
    rig.wait_for("transferred")
    commands = rig.back_from_transfer("three_way", keys={"ivr/survey_question": "5"})
    assert glue_after(hotline, "ivr-three-way", commands) == "hung up by the controller"


def a_live_call(hotline: Hotline, call_id: str, age_s: float = 0.0) -> LiveCall:
    """A 12345 call in Fuzhou as the controller holds it, ``age_s`` seconds old."""
    from ivr.agi.calls import CallInfo
    from ivr.core.engine import CallSession
    from ivr.core.routing import Call

    route = hotline.route(Call("12345", datetime(2022, 1, 10, 9, 0, tzinfo=SHANGHAI)))
    session, _ = CallSession.start(hotline, route)
    started = time.monotonic() - age_s
    return LiveCall(CallInfo(call_id, None, route), session, "PJSIP/x", started=started)


def test_a_parked_call_that_never_came_back_is_forgotten(hotline: Hotline) -> None:
    from ivr.agi.live import PARKED_MAX_S, LiveCalls

    calls = LiveCalls()

    def live(call_id: str, age_s: float, parked: bool) -> LiveCall:
        call = a_live_call(hotline, call_id, age_s)
        if parked:
            call.parked.set()
        calls.add(call)
        return call

    given_up: list[str] = []
    calls.given_up = lambda call: given_up.append(call.info.call_id)
    live("lost", PARKED_MAX_S + 60, parked=True)  # Asterisk restarted mid-transfer
    live("long", PARKED_MAX_S + 60, parked=False)  # a long call still in its session
    live("fresh", 5, parked=True)
    calls._swept -= LiveCalls.SWEEP_EVERY_S + 1  # a minute has passed
    live("next", 0, parked=False)
    assert {c.info.call_id for c in calls.all()} == {"long", "fresh", "next"}
    assert given_up == ["lost"]


def test_a_parked_call_given_up_still_ends_its_record(hotline: Hotline) -> None:
    # Its transfer_ended never came (refused at max_sessions, or Asterisk restarted):
    # the call used to vanish from the controller with no call_ended on the platform.
    from ivr.agi.calls import NEVER_CAME_BACK
    from ivr.agi.live import PARKED_MAX_S, LiveCalls

    recorder = Recorder()
    controller = CallController(lambda: hotline, events=recorder)
    lost = a_live_call(hotline, "lost", PARKED_MAX_S + 60)
    lost.session.take_events()  # published when the call came in
    lost.parked.set()
    lost.held_events = [{"type": "survey_result", "grade": "satisfied"}]  # never ran
    controller.live.add(lost)
    controller.live._swept -= LiveCalls.SWEEP_EVERY_S + 1
    controller.live.add(a_live_call(hotline, "next"))
    assert controller.live.get("lost") is None
    assert recorder.types() == ["call_ended"]
    assert recorder.calls[0][0].call_id == "lost"
    assert lost.session.summary()["fallbacks"][-1]["reason"] == NEVER_CAME_BACK


def test_stopping_the_controller_does_not_make_queued_callers_abandoned(rig: Rig) -> None:
    # stop() cuts the sessions still in Queue() once its grace is over. Asterisk keeps
    # those callers where they are (the glue then queues them): not abandoned, no
    # callback to make.
    peer = rig.queued_call()
    rig.server.stop(grace=0.2)
    ended = rig.wait_for("call_ended")
    types = [e["type"] for e in rig.events()]
    assert "abandoned" not in types and "missed_call_callback_created" not in types
    assert ended["target_kind"] == "seats"
    assert peer.play([]) == []  # no command sent on the cut socket


@pytest.mark.parametrize("rig", [{"originate_delay": 1.0}], indirect=True)
def test_stopping_ends_the_record_of_a_call_in_a_transfer(rig: Rig) -> None:
    # Caller and seat are in the sub-centre's room, the target still rings. The
    # caller's transfer_ended would reach a controller that no longer knows the call
    # (or none, and the glue queues them): its record would never end.
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    rig.pulled_out_of_the_queue(peer)
    rig.wait_for("answered")
    rig.server.stop(grace=0.2)
    assert rig.calls.end_parked_calls() == 1
    types = [e["type"] for e in rig.events()]
    assert types.count("call_ended") == 1 and types[-1] == "call_ended"
    ended = rig.events()[-1]
    assert ended["answered"] is True and ended["fallbacks"] == 1
    assert rig.calls.live.get(UNIQUEID) is None and rig.calls.end_parked_calls() == 0
    # The target answers later: it joins caller and seat (never hung up by us), and
    # nothing is reported after the call's end.
    deadline = time.monotonic() + 5
    while "Logoff" not in rig.manager.names() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Logoff" in rig.manager.names()  # the ring thread is done
    assert "Hangup" not in rig.manager.names()
    assert [e["type"] for e in rig.events()] == types


def test_the_controller_ends_parked_calls_when_it_stops(
    hotline: Hotline, config_copy: Path
) -> None:
    from ivr import serve
    from ivr.settings import load_settings

    # Redis is away: what the controller published is in its spool when it has stopped.
    controller = serve.Controller(
        config_copy, load_settings(config_copy), agi_address=("127.0.0.1", 0),
        http_address=("127.0.0.1", 0), redis_url="redis://127.0.0.1:1/0",
    )  # fmt: skip
    controller.start()
    parked = a_live_call(hotline, "parked")
    parked.parked.set()
    controller.calls.live.add(parked)
    controller.calls.live.add(a_live_call(hotline, "in-session"))
    controller.stop()
    spooled = [
        json.loads(line)
        for segment in sorted((config_copy / "var" / "spool").rglob("*"))
        if segment.is_file()
        for line in segment.read_text().splitlines()
    ]
    ends = [(r["f"][r["f"].index("call_id") + 1], r["f"][1]) for r in spooled]
    assert ("parked", "call_ended") in ends
    assert all(call_id == "parked" for call_id, _ in ends)  # a call in its session: its own


@pytest.mark.parametrize("rig", [{"originate_delay": 1.5}], indirect=True)
@pytest.mark.parametrize("ends", ["caller_hangs_up", "room_closes"])
def test_a_target_still_ringing_is_hung_up_once_the_transfer_has_ended(rig: Rig, ends: str) -> None:
    # The target would answer 1.5 s after being rung, into a room nobody is in now.
    peer = rig.queued_call()
    rig.transfers.transfer(UNIQUEID, "sub_centre:12366")
    rig.pulled_out_of_the_queue(peer)
    time.sleep(0.2)  # the target rings
    if ends == "caller_hangs_up":
        rig.back_from_transfer("hangup", "")
    else:  # the seat left, the room closed with the caller in it
        rig.back_from_transfer("three_way", keys={"ivr/survey_question": "5"})
    deadline = time.monotonic() + 5
    while "Hangup" not in rig.manager.names() and time.monotonic() < deadline:
        time.sleep(0.05)
    originate = next(a for a in rig.manager.actions if a.get("Action") == "Originate")
    hangup = next(a for a in rig.manager.actions if a.get("Action") == "Hangup")
    assert originate["ChannelId"] and hangup["Channel"] == originate["ChannelId"]
    failed = [e for e in rig.events() if e["type"] == "transfer_failed"]
    assert len(failed) == 1 and "transferred" not in [e["type"] for e in rig.events()]

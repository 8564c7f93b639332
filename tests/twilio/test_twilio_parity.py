"""Parity: every dialplan regression case routes the same on Asterisk and on Twilio.

Each case of dialplans/cases/*.yaml (one run per region it names) is walked three
ways: `ivr simulate`, the FastAGI route against a scripted Asterisk peer, and the
Twilio webhooks with signed requests. The target, prompts, tags, fallbacks and the
event types must be the same everywhere; one dialplan file drives both switches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from twilio_peer import Recorder, TwilioPeer, make_harness, make_settings, walk

from ivr.agi.calls import CallController, CallInfo
from ivr.agi.server import AgiServer
from ivr.core.clock import parse_when
from ivr.core.engine import CallSession, SessionState
from ivr.core.routing import Call, Hotline
from ivr.paths import bundled_root
from ivr.regression import Case, default_case_files, load_cases
from ivr.simulate import World, simulate

from agi.fake_asterisk import FakeAsterisk


@dataclass(frozen=True)
class Run:
    name: str
    case: Case
    region: str | None


def _runs() -> list[Run]:
    runs = []
    for path in default_case_files(bundled_root()):
        _, cases, problems = load_cases(path)
        assert cases is not None and not problems, problems
        for case in cases.cases:
            regions = case.call.region if isinstance(case.call.region, list) else [case.call.region]
            runs += [Run(f"{path.stem}: {case.name} [{r}]", case, r) for r in regions]
    return runs


RUNS = _runs()
COMPARED = ("target", "prompts", "tags", "fallbacks")


def test_every_case_file_is_covered() -> None:
    assert len(RUNS) > 50  # the bundled cases, one run per region named
    assert {r.case.call.to for r in RUNS} >= {"12345", "12315", "12358", "12366", "110"}


# -- the simulated world, as `ivr test` runs it ---------------------------------------


def simulated(hotline: Hotline, run: Run) -> dict[str, Any]:
    call = run.case.call
    world = World(call.keys, call.dial_result, call.hang_up_at)
    return simulate(hotline, _core_call(run), world)


def _core_call(run: Run) -> Call:
    call = run.case.call
    return Call(call.to, parse_when(call.at), call.caller, call.trunk, run.region, "parity")


def _outcomes(first: str) -> Iterator[str]:
    return itertools.chain([first], itertools.repeat("answered"))


# -- Asterisk: the FastAGI route against a scripted peer ------------------------------


class SummaryController(CallController):
    """The FastAGI route, keeping each call's final summary for the comparison."""

    summaries: dict[str, dict[str, Any]]

    def _publish(self, info: CallInfo, session: CallSession) -> None:
        self.summaries[info.call_id] = session.summary()
        super()._publish(info, session)


@pytest.fixture(scope="module")
def asterisk(hotline: Hotline) -> Iterator[tuple[SummaryController, tuple[str, int], Any]]:
    clock = {"now": datetime.now().astimezone()}
    controller = SummaryController(lambda: hotline, events=Recorder(), clock=lambda: clock["now"])
    controller.summaries = {}
    server = AgiServer(("127.0.0.1", 0), controller.routes())
    address = server.start()
    yield controller, address, clock
    server.stop()


_STARTS = ("ANSWER", "EXEC Progress", "STREAM FILE", "GET DATA", "EXEC Queue", "EXEC Dial")
_QUEUE_FACTS = {"answered": "||5|seat-1", "noanswer": "TIMEOUT||5|", "busy": "FULL||5|",
                "failed": "|TRUE|5|"}  # fmt: skip
_DIAL_FACTS = {"answered": "ANSWER|65|60|peer", "noanswer": "NOANSWER|30|0|",
               "busy": "BUSY|3|0|", "failed": "CHANUNAVAIL|0|0|"}  # fmt: skip


class ScriptedAsterisk:
    """Asterisk's answers in the simulated world of a case: keys in order, one per
    prompt that takes keys; the first connect ends as the case says, later ones answer."""

    def __init__(self, run: Run) -> None:
        call = run.case.call
        self.keys = list(call.keys)
        self.outcomes = _outcomes(call.dial_result)
        self.hang_up_at = call.hang_up_at
        self.started = 0
        self.facts = ""
        self.dead = False

    def answer(self, command: str) -> list[str]:
        if self.dead:  # Asterisk's dead-channel AGI: variables read, nothing else
            if command.startswith("GET FULL VARIABLE"):
                return ["200 result=1 (||)" if "QUEUESTATUS" in command else "200 result=1 ()"]
            return ["511 Command Not Permitted on a dead channel"]
        if command.startswith(_STARTS):
            self.started += 1
            if self.hang_up_at is not None and self.started >= self.hang_up_at:
                self.dead = True
                return ["HANGUP", "200 result=-1"]
        return [self._alive(command)]

    def _alive(self, command: str) -> str:
        if command.startswith("STREAM FILE"):
            escape = command.split()[3].strip('"')
            if escape and self.keys:
                key = self.keys.pop(0)  # pressed; Asterisk reports it only if it cuts in
                return f"200 result={ord(key) if key in escape else 0} endpos=8000"
            return "200 result=0 endpos=8000"
        if command.startswith("GET DATA"):
            wanted = int(command.split()[4])
            digits = "".join(self.keys[:wanted])
            del self.keys[:wanted]
            return f"200 result={digits}"
        if command.startswith("EXEC Queue"):
            self.facts = _QUEUE_FACTS[next(self.outcomes)]
        elif command.startswith("EXEC Dial"):
            self.facts = _DIAL_FACTS[next(self.outcomes)]
        elif command.startswith("GET FULL VARIABLE"):
            return f"200 result=1 ({self.facts})"
        return "200 result=0"


def on_asterisk(address: tuple[str, int], run: Run, uniqueid: str) -> list[str]:
    """One call through the FastAGI route; returns the AGI commands it sent."""
    call = run.case.call
    script = ScriptedAsterisk(run)
    peer = FakeAsterisk.connect(address)
    peer.send_env(
        "incoming_call",
        agi_dnid=call.to,
        agi_uniqueid=uniqueid,
        agi_callerid=call.caller or "13912340000",
        agi_arg_1=call.trunk or "",
        agi_arg_2=run.region or "",
        agi_arg_3="",
    )
    commands: list[str] = []
    try:
        while (command := peer.read_command()) is not None:
            commands.append(command)
            peer.reply(*script.answer(command))
    finally:
        peer.close()
    return commands


# -- Twilio: signed webhooks ------------------------------------------------------------


def twilio_numbers() -> dict[str, dict[str, str]]:
    """A Twilio number for every (dialed, trunk, region) the cases name."""
    numbers: dict[str, dict[str, str]] = {}
    for run in RUNS:
        call = run.case.call
        if call.trunk is None and run.region is None:
            continue  # dialed as is: the DID and area code decide, as on Asterisk
        entry = {"line": call.to}
        entry.update({"trunk": call.trunk} if call.trunk else {})
        entry.update({"region": run.region} if run.region else {})
        numbers.setdefault(_twilio_number(call.to, call.trunk, run.region), entry)
    return numbers


_NUMBERS: dict[tuple[str, str | None, str | None], str] = {}


def _twilio_number(to: str, trunk: str | None, region: str | None) -> str:
    """A made-up Twilio number standing for one (dialed, trunk, region)."""
    return _NUMBERS.setdefault((to, trunk, region), f"+1555{len(_NUMBERS):07d}")


def twilio_hang_up_point(hotline: Hotline, run: Run) -> int | None:
    """The Twilio response (1-based) at which the caller hangs up: the response that
    waits on the instruction the case hangs up in."""
    call = run.case.call
    if call.hang_up_at is None:
        return None
    whole = simulate(hotline, _core_call(run), World(call.keys, call.dial_result))["steps"]
    waits = [_waits(step, whole[i + 1 :]) for i, step in enumerate(whole)]
    n = call.hang_up_at
    return sum(waits[:n]) if waits[n - 1] else sum(waits[:n]) + 1


def _waits(step: dict[str, Any], rest: list[dict[str, Any]]) -> bool:
    """Does Twilio come back to us after this instruction? Keys and connects always; a
    plain prompt only when keys or a connect follow it (else it is batched)."""
    if step["do"] in ("answer", "hangup"):
        return False
    if step["do"] != "play" or step["keys"]:
        return True
    following = next((s for s in rest if s["do"] != "answer"), None)
    return following is not None and not (
        following["do"] == "hangup" or (following["do"] == "play" and not following["keys"])
    )


@pytest.fixture(scope="module")
def twilio(hotline: Hotline) -> Any:
    settings = make_settings(
        numbers=twilio_numbers(), prompts_base_url="https://media.example.test/ivr"
    )
    return make_harness(hotline, datetime.now().astimezone(), settings=settings)


def on_twilio(harness: Any, hotline: Hotline, run: Run, sid: str) -> dict[str, Any]:
    call = run.case.call
    harness.clock.now = parse_when(call.at)
    to = (
        call.to.replace(" ", "")
        if call.trunk is None and run.region is None
        else _twilio_number(call.to, call.trunk, run.region)
    )
    peer = TwilioPeer(harness.client, to, sid=sid, caller=call.caller or "+8613912340000")
    walk(peer, call.keys, _outcomes(call.dial_result), twilio_hang_up_point(hotline, run))
    record = harness.store.get(sid)
    assert record is not None and record.state["done"], "the call did not end"
    return CallSession(hotline, SessionState.from_dict(record.state)).summary()


# -- the comparison ---------------------------------------------------------------------


def _routing(summary: dict[str, Any], key: str) -> Any:
    """What routing decides. A measured wait (abandoned_wait_s) is a fact of the
    switch's clock, not of the dialplan: its presence is compared, not its value."""
    value = summary[key]
    if key == "tags":
        return {k: ("(measured)" if k.endswith("_wait_s") else v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_asterisk_and_twilio_route_alike(run: Run, hotline: Hotline, asterisk, twilio) -> None:
    controller, address, clock = asterisk
    expected = simulated(hotline, run)
    n = RUNS.index(run)
    uniqueid, sid = f"1717200000.{n}", f"CA{n:032d}"
    clock["now"] = parse_when(run.case.call.at)
    commands = on_asterisk(address, run, uniqueid)
    on_twilio_summary = on_twilio(twilio, hotline, run, sid)
    on_asterisk_summary = controller.summaries[uniqueid]
    for key in COMPARED:
        assert _routing(on_asterisk_summary, key) == _routing(expected, key), f"asterisk {key}"
        assert _routing(on_twilio_summary, key) == _routing(expected, key), f"twilio {key}"
    assert controller.events.types(uniqueid) == expected["events"]
    assert twilio.events.types(sid) == expected["events"]
    assert commands, "the FastAGI route sent nothing"


def test_the_parity_harness_notices_a_difference(hotline: Hotline, twilio) -> None:
    """The comparison is not vacuous: another key pressed lands elsewhere."""
    run = next(r for r in RUNS if r.case.call.keys == "1")
    summary = on_twilio(twilio, hotline, run, sid="CA" + "9" * 32)
    other = simulate(hotline, _core_call(run), World("2", run.case.call.dial_result))
    assert summary["target"] != other["target"]

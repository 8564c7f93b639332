"""Any call — any number, time, keys and outcomes — ends at a person or an explicit end."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.core.clock import SHANGHAI
from ivr.core.engine import (
    OUTCOMES,
    CallSession,
    CollectDigits,
    Connect,
    ConnectResult,
    HangUp,
    PlayPrompt,
)
from ivr.core.routing import Call, Hotline

NUMBERS = st.one_of(
    st.sampled_from(
        [
            "12345",
            "12358",
            "12336",
            "12315",
            "12348",
            "12366",
            "110",
            "119",
            "12328",
            "12329",
            "059112345",
            "059123112345",
            "+8659212365",
        ]
    ),
    st.from_regex(r"\+?[0-9]{1,16}", fullmatch=True),
)
MOMENTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=SHANGHAI)
)
EXPLICIT_ENDS = {
    "survey_done",
    "passed_to_emergency_line",
    "retired_line_after_window",
    "callback_booked",
    "abandoned",
    "caller_hung_up",
    "last_resort",
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dialed=NUMBERS,
    now=MOMENTS,
    trunk=st.one_of(st.none(), st.sampled_from(["pingtan-ct", "xiamen-ct", "bogus"])),
    region=st.one_of(st.none(), st.sampled_from(["fuzhou", "sanming", "pingtan", "xiamen"])),
    keys=st.lists(st.sampled_from([*list("0123456789*#"), "", "12", "99"]), max_size=30),
    outcomes=st.lists(st.sampled_from(OUTCOMES), max_size=30),
    hang_up_at=st.one_of(st.none(), st.integers(min_value=1, max_value=25)),
)
def test_every_call_ends_at_a_person_or_an_explicit_end(
    hotline: Hotline, dialed, now, trunk, region, keys, outcomes, hang_up_at
) -> None:
    route = hotline.route(Call(dialed, now, trunk=trunk, region=region))
    session, instruction = CallSession.start(hotline, route)
    keys, outcomes = list(keys), list(outcomes)
    count = 0
    while not isinstance(instruction, HangUp):
        count += 1
        assert count < 200, "the call never ended"
        if hang_up_at is not None and count == hang_up_at:
            session.caller_hung_up(answered=False, wait_s=1.0)
            break
        if isinstance(instruction, Connect):
            # a queue that waits for ever can only end answered (or by the caller)
            outcome = outcomes.pop(0) if outcomes and instruction.timeout else "answered"
            instruction = session.resume(ConnectResult(outcome))
        elif isinstance(instruction, PlayPrompt | CollectDigits):
            instruction = session.resume(keys.pop(0) if keys else "")
        else:
            instruction = session.resume(None)
    summary = session.summary()
    target = summary["target"]
    assert session.state.done
    assert target["kind"] in {
        "seats",
        "kept_seats",
        "sub_centre",
        "emergency",
        "utility",
        "callback",
        "hangup",
    }
    if target["kind"] == "hangup":
        assert target["id"] in EXPLICIT_ENDS
    if target["kind"] == "callback":
        assert target["id"] == f"{summary['region']}-callback"
    events = session.take_events()
    assert events[0]["type"] == "call_offered" and events[-1]["type"] == "call_ended"
    assert [e["type"] for e in events].count("call_ended") == 1


@settings(max_examples=100, deadline=None)
@given(
    now=MOMENTS, region=st.sampled_from(["fuzhou", "xiamen", "longyan"]), hour=st.integers(0, 23)
)
def test_7x24_no_closed_hours(hotline: Hotline, now, region, hour) -> None:
    """12345 reaches a person at any hour of any day, holidays included."""
    moment = now.replace(hour=hour) + timedelta(days=0)
    session, instruction = CallSession.start(
        hotline, hotline.route(Call("12345", moment, region=region))
    )
    while not isinstance(instruction, Connect):
        instruction = session.resume(None)
    assert instruction.target.queue == f"{region}-12345"

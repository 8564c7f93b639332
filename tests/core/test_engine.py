"""The engine: instructions in order, results taken, and every failure ends at the seats."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import pytest

from ivr.core.clock import SHANGHAI
from ivr.core.dialplan import Flow
from ivr.core.engine import (
    AnswerCall,
    CallSession,
    CollectDigits,
    Connect,
    ConnectResult,
    HangUp,
    PlayPrompt,
    SessionState,
)
from ivr.core.routing import Call, Hotline

NOON = datetime(2024, 6, 1, 12, 0, tzinfo=SHANGHAI)


CALLER = "13912345678"


def start(hotline: Hotline, dialed: str = "12345", region: str = "xiamen", now=NOON):
    return CallSession.start(
        hotline, hotline.route(Call(dialed, now, region=region, caller=CALLER))
    )


def with_flows(hotline: Hotline, *flows: dict) -> Hotline:
    extra = {f["flow"]: Flow.model_validate(f) for f in flows}
    return replace(hotline, flows={**hotline.flows, **extra})


def test_main_flow_instructions_in_order(hotline: Hotline) -> None:
    session, first = start(hotline)
    assert first == AnswerCall(early_media=False)
    greeting = session.resume()
    assert greeting == PlayPrompt("greeting_12345", "120")
    queue = session.resume(None)
    assert isinstance(queue, Connect)
    assert (queue.via, queue.target.queue, queue.timeout) == ("queue", "xiamen-12345", 60)
    assert queue.tags == {"original_line": "12345", "merge_mode": "main"}
    survey = session.resume(ConnectResult("answered", wait_s=7.5, answered_by="seat-3"))
    assert survey == CollectDigits("survey_question", 1, 8)
    thanks = session.resume("2")
    assert thanks == PlayPrompt("survey_thanks", "")
    end = session.resume(None)
    assert end == HangUp("survey_done")
    assert session.state.done
    events = session.take_events()
    kinds = [e["type"] for e in events]
    assert kinds == [
        "call_offered",
        "prompt_played",
        "queued",
        "answered",
        "prompt_played",
        "survey_result",
        "prompt_played",
        "call_ended",
    ]
    answered = next(e for e in events if e["type"] == "answered")
    assert (answered["wait_s"], answered["answered_by"]) == (7.5, "seat-3")
    grade = next(e for e in events if e["type"] == "survey_result")
    assert (grade["grade"], grade["score"]) == ("满意", 4)
    with pytest.raises(RuntimeError):
        session.resume(None)


def test_transition_prompt_is_reported_as_such(hotline: Hotline) -> None:
    session, _ = start(hotline, "12358", now=datetime(2022, 1, 5, 9, tzinfo=SHANGHAI))
    assert session.resume() == PlayPrompt("transition_notice", "")
    session.resume(None)
    played = [e for e in session.take_events() if e["type"] == "prompt_played"]
    assert played == [{"type": "prompt_played", "prompt": "transition_notice", "transition": True}]


def test_retired_line_after_window_can_announce_on_early_media(hotline: Hotline) -> None:
    session, first = start(hotline, "12336", now=datetime(2022, 3, 1, tzinfo=SHANGHAI))
    assert first == AnswerCall(early_media=True)
    assert session.resume() == PlayPrompt("number_retired", "")
    assert session.resume() == HangUp("retired_line_after_window")
    assert session.summary()["target"] == {"kind": "hangup", "id": "retired_line_after_window"}


def test_caller_gone_while_queued_is_an_abandoned_call_with_a_callback(hotline: Hotline) -> None:
    session, _ = start(hotline, region="longyan")
    session.resume()
    assert isinstance(session.resume(), Connect)
    session.caller_hung_up(answered=False, wait_s=42.0)
    events = session.take_events()
    abandoned = next(e for e in events if e["type"] == "abandoned")
    task = next(e for e in events if e["type"] == "missed_call_callback_created")
    assert abandoned["wait_s"] == 42.0
    assert (task["callback_list"], task["wait_s"]) == ("longyan-callback", 42.0)
    assert session.summary()["target"] == {"kind": "callback", "id": "longyan-callback"}
    assert events[-1]["type"] == "call_ended"


def test_caller_gone_during_the_callback_offer_after_a_long_wait_is_abandoned(
    hotline: Hotline,
) -> None:
    # 60 s unanswered, then the overflow's callback offer: hanging up there is still a
    # caller who asked for a person and got none; the missed-call callback follows.
    session, _ = start(hotline, region="longyan")
    session.resume()
    session.resume()
    offer = session.resume(ConnectResult("noanswer", wait_s=60.0))
    assert offer == CollectDigits("overflow_offer_callback", 1, 5)
    session.caller_hung_up()
    events = session.take_events()
    abandoned = next(e for e in events if e["type"] == "abandoned")
    assert (abandoned["wait_s"], abandoned["total_wait_s"]) == (0.0, 60.0)
    task = next(e for e in events if e["type"] == "missed_call_callback_created")
    assert task["callback_list"] == "longyan-callback"
    assert events[-1]["type"] == "call_ended"


def test_caller_gone_after_a_queue_refused_them_at_once_is_abandoned(hotline: Hotline) -> None:
    # A full queue answers "busy" with no wait at all: the caller still asked for a
    # person, and hanging up during the overflow offer is an abandoned call.
    session, _ = start(hotline, region="longyan")
    session.resume()
    session.resume()
    offer = session.resume(ConnectResult("busy", wait_s=0.0))
    assert isinstance(offer, CollectDigits)
    session.caller_hung_up()
    kinds = [e["type"] for e in session.take_events()]
    assert "abandoned" in kinds and "missed_call_callback_created" in kinds


def test_total_wait_runs_from_the_first_queue_with_the_offer_between(hotline: Hotline) -> None:
    # Queued at t=100, 10 s unanswered, 12 s of the overflow offer, queued again at
    # t=122 and answered 8 s later: the caller waited 30 s for a person, not 18.
    t = 100.0
    session, _ = CallSession.start(
        hotline, hotline.route(Call("12345", NOON, region="longyan", caller=CALLER)), now=t
    )
    session.resume(now=t)
    assert isinstance(session.resume(None, now=t), Connect)
    offer = session.resume(ConnectResult("noanswer", wait_s=10.0), now=t + 10)
    assert offer == CollectDigits("overflow_offer_callback", 1, 5)
    again = session.resume("", now=t + 22)
    assert isinstance(again, Connect)
    session.resume(ConnectResult("answered", wait_s=8.0), now=t + 400)  # after the talk
    answered = next(e for e in session.take_events() if e["type"] == "answered")
    assert (answered["wait_s"], answered["total_wait_s"]) == (8.0, 30.0)


def test_abandoned_between_attempts_waited_until_the_hang_up(hotline: Hotline) -> None:
    t = 100.0
    session, _ = CallSession.start(
        hotline, hotline.route(Call("12345", NOON, region="longyan", caller=CALLER)), now=t
    )
    session.resume(now=t)
    session.resume(None, now=t)
    session.resume(ConnectResult("noanswer", wait_s=10.0), now=t + 10)
    session.caller_hung_up(now=t + 14)  # 4 s into the offer
    events = session.take_events()
    abandoned = next(e for e in events if e["type"] == "abandoned")
    assert (abandoned["wait_s"], abandoned["total_wait_s"]) == (0.0, 14.0)
    task = next(e for e in events if e["type"] == "missed_call_callback_created")
    assert task["wait_s"] == 14.0


def test_a_requested_callback_carries_the_wait_so_far(hotline: Hotline) -> None:
    t = 100.0
    session, _ = CallSession.start(
        hotline, hotline.route(Call("12345", NOON, region="longyan", caller=CALLER)), now=t
    )
    session.resume(now=t)
    session.resume(None, now=t)
    session.resume(ConnectResult("noanswer", wait_s=60.0), now=t + 60)
    session.resume("1", now=t + 63)  # "需要回电请按1"
    requested = next(e for e in session.take_events() if e["type"] == "callback_requested")
    assert requested["wait_s"] == 63.0


def test_caller_gone_after_booking_a_callback_is_not_abandoned(hotline: Hotline) -> None:
    session, _ = start(hotline, region="longyan")
    session.resume()
    session.resume()
    session.resume(ConnectResult("noanswer", wait_s=60.0))
    assert session.resume("1") == PlayPrompt("callback_confirmed", "")
    session.caller_hung_up()
    kinds = [e["type"] for e in session.take_events()]
    assert "abandoned" not in kinds and "missed_call_callback_created" not in kinds
    assert kinds.count("callback_requested") == 1 and kinds[-1] == "call_ended"


def test_caller_gone_after_talking_to_a_seat_is_not_abandoned(hotline: Hotline) -> None:
    session, _ = start(hotline)
    session.resume()
    session.resume()
    session.caller_hung_up(answered=True, wait_s=3.0)
    kinds = [e["type"] for e in session.take_events()]
    assert "abandoned" not in kinds and "answered" in kinds
    assert session.summary()["target"] == {"kind": "seats", "id": "xiamen-12345"}


def test_a_step_that_runs_off_its_flow_falls_back_to_the_seats(hotline: Hotline) -> None:
    broken = with_flows(
        hotline,
        {
            "flow": "main",
            "title": "t",
            "steps": [
                {"id": "answer", "kind": "answer"},
            ],
        },
    )
    session, _ = start(broken, region="putian")
    queue = session.resume()
    assert isinstance(queue, Connect) and queue.target.queue == "putian-12345"
    assert queue.timeout is None  # the fallback waits as long as the caller does
    assert session.state.fallbacks == [{"from": "answer", "reason": "no_edge", "to": "@seats"}]


def test_a_loop_with_no_exit_is_cut_by_the_step_budget(hotline: Hotline) -> None:
    looping = with_flows(
        hotline,
        {
            "flow": "main",
            "title": "t",
            "steps": [
                {"id": "a", "kind": "set", "tags": {"x": "1"}, "next": "b"},
                {"id": "b", "kind": "set", "tags": {"y": "2"}, "next": "a"},
            ],
        },
    )
    session, first = start(looping)
    assert isinstance(first, Connect) and first.target.queue == "xiamen-12345"
    assert session.state.fallbacks[-1]["reason"] == "step_budget"


def test_max_visits_takes_the_exhausted_edge(hotline: Hotline) -> None:
    session, _ = start(hotline, region="ningde")
    session.resume()  # greeting
    offers = 0
    instruction = session.resume()  # queue
    while isinstance(instruction, Connect):
        instruction = session.resume(ConnectResult("noanswer"))
        if isinstance(instruction, CollectDigits):
            offers += 1
            instruction = session.resume("")  # no key: wait again
    assert offers == 3
    assert instruction == PlayPrompt("callback_confirmed", "")
    assert session.state.end == {"kind": "callback", "id": "ningde-callback"}


def test_broken_fallback_flow_still_queues_to_the_seats(hotline: Hotline) -> None:
    broken = with_flows(
        hotline,
        {"flow": "main", "title": "t", "steps": [{"id": "answer", "kind": "answer"}]},
        {"flow": "seats", "title": "t", "steps": [{"id": "x", "kind": "answer"}]},
    )
    session, _ = start(broken, region="nanping")
    assert session.resume() == AnswerCall()  # the broken fallback flow's step
    last = session.resume()
    assert isinstance(last, Connect) and last.target.queue == "nanping-12345"
    assert session.resume(ConnectResult("answered")) == HangUp("last_resort")
    assert session.summary()["target"] == {"kind": "seats", "id": "nanping-12345"}


def test_state_survives_a_json_round_trip_mid_call(hotline: Hotline) -> None:
    session, _ = start(hotline, "12315", region="fuzhou")
    session.resume()  # greeting
    kept = session.resume()
    assert isinstance(kept, Connect) and kept.target.kind == "kept_seats"
    assert kept.timeout == 20  # the line's answer_timeout
    saved = json.dumps(session.state.to_dict())
    restored = CallSession(hotline, SessionState.from_dict(json.loads(saved)))
    fallback = restored.resume(ConnectResult("noanswer"))
    assert isinstance(fallback, Connect) and fallback.target.queue == "fuzhou-12345"
    assert restored.summary()["fallbacks"] == [
        {"from": "fuzhou-12315", "reason": "noanswer", "to": "seats"}
    ]


def test_connect_must_resume_with_a_connect_result(hotline: Hotline) -> None:
    session, _ = start(hotline)
    session.resume()
    session.resume()
    with pytest.raises(TypeError):
        session.resume("1")
    # a wrong result leaves the call where it was: the right one still goes on
    assert isinstance(session.resume(ConnectResult("answered")), CollectDigits)
    with pytest.raises(ValueError, match="unknown connect outcome"):
        ConnectResult("maybe")


def test_flow_index_agrees_with_the_flows(hotline: Hotline) -> None:
    for flow_id, flow in hotline.flows.items():
        index = hotline.flow_index[flow_id]
        assert index.start == flow.start
        assert set(index.steps) == {step.id for step in flow.steps}
        for step in flow.steps:
            assert index.steps[step.id] is flow.step(step.id)
            assert index.after[step.id] == flow.following(step.id)


def test_flow_index_keeps_the_first_of_a_duplicated_step_id(hotline: Hotline) -> None:
    flow = {
        "flow": "dup",
        "title": "a duplicated step id",
        "steps": [
            {"id": "a", "kind": "play", "prompt": "greeting_12345"},
            {"id": "b", "kind": "hangup", "reason": "done"},
            {"id": "a", "kind": "hangup", "reason": "second"},
        ],
    }
    index = with_flows(hotline, flow).flow_index["dup"]
    assert index.steps["a"].kind == "play"
    assert index.after["a"] == "b"


def test_a_hotline_with_other_flows_walks_its_own(hotline: Hotline) -> None:
    assert "custom" not in hotline.flow_index  # the shared hotline's index is built
    custom = {
        "flow": "main",
        "title": "a replaced main flow",
        "steps": [{"id": "only", "kind": "hangup", "reason": "custom_main"}],
    }
    _, first = start(with_flows(hotline, custom))
    assert first == HangUp("custom_main")
    _, original = start(hotline)
    assert original == AnswerCall(early_media=False)


def test_an_overflow_taken_by_the_flow_is_no_fallback(hotline: Hotline) -> None:
    # A busy hour sends callers through the overflow offer by the flow's own edges:
    # call_ended.fallbacks counts failures of ours, which an alert may watch.
    session, _ = start(hotline, region="longyan")
    session.resume()
    session.resume()
    session.resume(ConnectResult("noanswer", wait_s=60.0))
    session.resume("1")  # a callback, booked
    while not session.state.done:
        session.resume(None)
    ended = next(e for e in session.take_events() if e["type"] == "call_ended")
    assert ended["fallbacks"] == 0
    assert session.summary()["fallbacks"][0]["reason"] == "noanswer"  # still listed


def test_a_failure_of_ours_counts_as_a_fallback(hotline: Hotline) -> None:
    session, _ = start(hotline, region="longyan")
    session.resume()
    session.handed_to_switch("controller_error")
    ended = next(e for e in session.take_events() if e["type"] == "call_ended")
    assert ended["fallbacks"] == 1


def test_a_withheld_caller_who_hangs_up_is_abandoned_with_no_callback_event(
    hotline: Hotline,
) -> None:
    # No number, no task: an event saying a callback was created would be counted.
    session, _ = CallSession.start(hotline, hotline.route(Call("12345", NOON, region="xiamen")))
    session.resume()
    session.resume()
    session.caller_hung_up(wait_s=30.0)
    kinds = [e["type"] for e in session.take_events()]
    assert "abandoned" in kinds
    assert "missed_call_callback_created" not in kinds
    assert session.summary()["target"] == {"kind": "hangup", "id": "caller_hung_up"}


def _busy_hour(hotline: Hotline, caller: str | None) -> tuple[list[str], CallSession]:
    """Every queue answers busy (a full queue) and the caller waits on."""
    session, instruction = CallSession.start(
        hotline, hotline.route(Call("12345", NOON, region="xiamen", caller=caller))
    )
    played: list[str] = []
    for _ in range(40):
        if session.state.done:
            break
        if isinstance(instruction, PlayPrompt):
            played.append(instruction.prompt)
        result = ConnectResult("busy", 0.0) if isinstance(instruction, Connect) else None
        instruction = session.resume(result)
    return played, session


def test_a_withheld_caller_in_a_busy_hour_is_never_told_a_callback_was_booked(
    hotline: Hotline,
) -> None:
    played, session = _busy_hour(hotline, caller=None)
    assert "callback_confirmed" not in played and "overflow_offer_callback" not in played
    assert played[-1] == "seats_unavailable"
    assert session.summary()["target"] == {"kind": "hangup", "id": "no_seat"}
    played, session = _busy_hour(hotline, caller=CALLER)  # a number: the callback
    assert "callback_confirmed" in played
    assert session.summary()["target"]["kind"] == "callback"


def test_a_connect_outcome_with_no_edge_counts_as_a_failure(hotline: Hotline) -> None:
    flow = {"flow": "main", "title": "t", "steps": [
        {"id": "q", "kind": "queue", "to": "seats", "timeout": 30, "on": {"answered": "bye"}},
        {"id": "bye", "kind": "hangup", "reason": "done"}]}  # fmt: skip
    broken = with_flows(hotline, flow)
    session, _ = CallSession.start(
        broken, broken.route(Call("12345", NOON, region="xiamen", caller=CALLER))
    )
    session.resume(ConnectResult("busy", 0.0))  # no busy edge: to the 12345 seats
    session.caller_hung_up(wait_s=5.0)
    ended = next(e for e in session.take_events() if e["type"] == "call_ended")
    assert ended["fallbacks"] == 1


def test_a_caller_leaving_during_a_no_seat_notice_did_not_abandon(hotline: Hotline) -> None:
    # Told no seat can take the call (a withheld number: no callback), the caller
    # hangs up during the notice: they were not waiting for a person any more.
    session, instruction = CallSession.start(
        hotline, hotline.route(Call("12345", NOON, region="xiamen", caller=None))
    )
    while not (isinstance(instruction, PlayPrompt) and instruction.prompt == "seats_unavailable"):
        result = ConnectResult("busy", 5.0) if isinstance(instruction, Connect) else None
        instruction = session.resume(result)
    session.caller_hung_up()
    assert "abandoned" not in [e["type"] for e in session.take_events()]


def test_which_steps_may_still_put_a_caller_through(hotline: Hotline) -> None:
    may = hotline.may_connect
    assert ("overflow", "offer") in may  # "or please hold": the queue again
    assert ("seats", "sorry") not in may and ("overflow", "confirmed") not in may

"""The Twilio webhooks, driven as Twilio drives them: every mode of line, the shortcuts,
the kept-seat fallback, the survey, hang-ups, bad input and failures of ours."""

from __future__ import annotations

import dataclasses
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio_peer import (
    CALLER,
    PUBLIC,
    Harness,
    TwilioPeer,
    make_harness,
    make_settings,
    parse,
    walk,
)

from ivr.core.clock import SHANGHAI
from ivr.core.engine import CallSession, ConnectResult, SessionState
from ivr.core.routing import Hotline
from ivr.twilio.state import (
    CallRecord,
    MemoryStateStore,
    RedisStateStore,
    StateUnavailable,
)
from ivr.twilio.webhooks import connect_result

NOW = datetime(2024, 6, 1, 10, 0, tzinfo=SHANGHAI)
FUZHOU_12345 = "+8659112345"


@pytest.fixture
def harness(hotline: Hotline) -> Harness:
    return make_harness(hotline, NOW)


def summary(h: Harness, hotline: Hotline, sid: str) -> dict:
    record = h.store.get(sid)
    assert record is not None
    return CallSession(hotline, SessionState.from_dict(record.state)).summary()


def only(root: ET.Element, tag: str) -> ET.Element:
    found = root.findall(tag)
    assert len(found) == 1, [child.tag for child in root]
    return found[0]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# -- 12345 itself ------------------------------------------------------------------------


def test_12345_greets_queues_and_surveys(harness: Harness, hotline: Hotline) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    root = peer.call()
    assert [c.tag for c in root] == ["Gather", "Redirect"]
    gather = root[0]
    assert (gather.get("numDigits"), gather.get("timeout"), gather.get("input")) == (
        "1",
        "1",
        "dtmf",
    )
    say = only(gather, "Say")
    assert say.get("language") == "zh-CN" and "12345" in (say.text or "")
    action = gather.get("action", "")
    assert action.startswith(f"{PUBLIC}/twilio/continue?") and root[1].text == action

    root = parse(peer.post(action).data)  # no key: Twilio follows the <Redirect>
    enqueue = only(root, "Enqueue")
    assert enqueue.text == "fuzhou-12345"
    assert query(enqueue.get("waitUrl", ""))["l"] == "60"
    assert enqueue.get("action", "").startswith(f"{PUBLIC}/twilio/continue?")

    root = parse(peer.post(enqueue.get("action", ""), QueueResult="bridged", QueueTime="12").data)
    survey = only(root, "Gather")
    assert (survey.get("numDigits"), survey.get("timeout")) == ("1", "8")
    assert "非常满意" in (only(survey, "Say").text or "")

    root = parse(peer.post(survey.get("action", ""), Digits="2").data)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    assert peer.hang_up() == 204

    result = summary(harness, hotline, peer.sid)
    assert result["target"] == {"kind": "seats", "id": "fuzhou-12345"}
    assert result["prompts"] == ["greeting_12345", "survey_question", "survey_thanks"]
    assert result["tags"] == {"original_line": "12345", "merge_mode": "main"}
    answered = harness.events.of_type("answered")
    assert [(a["target"], a["wait_s"]) for a in answered] == [("fuzhou-12345", 12.0)]
    survey_event = harness.events.of_type("survey_result")
    assert [(e["grade"], e["score"]) for e in survey_event] == [("满意", 4)]
    assert harness.events.types()[-1] == "call_ended"
    assert harness.events.types().count("call_ended") == 1


@pytest.mark.parametrize(
    ("to", "key", "queue"),
    [
        (FUZHOU_12345, "1", "fuzhou-enterprise"),
        ("+8659212345", "2", "xiamen-minnanhua"),
        ("+8659212345", "7", "xiamen-12345"),  # no shortcut: no change
    ],
)
def test_shortcut_keys_during_the_greeting(harness: Harness, to: str, key: str, queue: str) -> None:
    peer = TwilioPeer(harness.client, to)
    action = only(peer.call(), "Gather").get("action", "")
    root = parse(peer.post(action, Digits=key).data)
    assert only(root, "Enqueue").text == queue
    if key != "7":
        assert harness.events.of_type("keys_pressed")[0]["keys"] == key


def test_emergency_menu_dials_110_and_ends(harness: Harness, hotline: Hotline) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    root = parse(peer.post(only(peer.call(), "Gather").get("action", ""), Digits="0").data)
    menu = only(root, "Gather")
    assert (menu.get("numDigits"), menu.get("timeout")) == ("1", "5")
    root = parse(peer.post(menu.get("action", ""), Digits="1").data)
    dial = only(root, "Dial")
    assert dial.get("timeout") == "30" and only(dial, "Number").text == "110"
    root = parse(
        peer.post(dial.get("action", ""), DialCallStatus="completed", DialCallDuration="40").data
    )
    assert [c.tag for c in root] == ["Hangup"]
    assert summary(harness, hotline, peer.sid)["target"] == {"kind": "emergency", "id": "110"}
    assert "transferred" in harness.events.types()


def test_an_unanswered_110_reaches_the_seats(harness: Harness, hotline: Hotline) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    root = parse(peer.post(only(peer.call(), "Gather").get("action", ""), Digits="0").data)
    root = parse(peer.post(only(root, "Gather").get("action", ""), Digits="1").data)
    root = parse(peer.post(only(root, "Dial").get("action", ""), DialCallStatus="no-answer").data)
    assert only(root, "Enqueue").text == "fuzhou-12345"
    failed = harness.events.of_type("transfer_failed")
    assert [(f["target"], f["outcome"]) for f in failed] == [("110", "noanswer")]


def test_unknown_number_gets_the_12345_flow(harness: Harness, hotline: Hotline) -> None:
    peer = TwilioPeer(harness.client, "+15005550006")
    root = peer.call()
    assert only(root, "Gather").find("Say") is not None
    offered = harness.events.of_type("call_offered")[0]
    assert offered["known"] is False
    root = parse(peer.post(root[1].text or "").data)
    assert only(root, "Enqueue").text == "fuzhou-12345"  # the default region's seats
    assert summary(harness, hotline, peer.sid)["tags"]["original_line"] == "12345"


def test_emergency_number_is_dialed_at_once(harness: Harness) -> None:
    root = TwilioPeer(harness.client, "+8659112110").call()
    dial = only(root, "Dial")  # no prompt, no gather: passed on at once
    assert [c.tag for c in root] == ["Dial"]
    assert (dial.get("timeout"), only(dial, "Number").text) == ("60", "110")


# -- dual-number, retired and sub-centre lines --------------------------------------


def test_kept_seats_unanswered_fall_back_to_12345_seats(harness: Harness, hotline: Hotline) -> None:
    peer = TwilioPeer(harness.client, "+8659512315")  # 12315 in Quanzhou: seats kept
    root = peer.call()
    assert [c.tag for c in root] == ["Say", "Redirect"]  # heard before anyone is queued
    assert root[0].text == "您好，市场监管投诉举报热线，正在为您转接。"  # the line's name filled in
    root = parse(peer.post(root[1].text or "").data)
    kept = only(root, "Enqueue")
    assert kept.text == "quanzhou-12315"
    wait_url = kept.get("waitUrl", "")
    assert query(wait_url)["l"] == "20"  # the line's answer_timeout

    holding = parse(peer.post(wait_url, QueueTime="5", QueuePosition="1").data)
    assert [c.tag for c in holding] == ["Pause", "Redirect"]
    assert holding[0].get("length") == "10" and holding[1].text == wait_url
    leaving = parse(peer.post(wait_url, QueueTime="20", QueuePosition="1").data)
    assert [c.tag for c in leaving] == ["Leave"]

    root = parse(peer.post(kept.get("action", ""), QueueResult="leave", QueueTime="20").data)
    seats = only(root, "Enqueue")
    assert seats.text == "quanzhou-12345" and query(seats.get("waitUrl", ""))["l"] == "60"
    parse(peer.post(seats.get("action", ""), QueueResult="bridged", QueueTime="3").data)
    result = summary(harness, hotline, peer.sid)
    assert result["fallbacks"] == [{"from": "quanzhou-12315", "reason": "noanswer", "to": "seats"}]
    assert result["target"] == {"kind": "seats", "id": "quanzhou-12345"}
    answered = harness.events.of_type("answered")[0]
    assert answered["total_wait_s"] == 23.0  # both waits: the 15-second rate's measure


def test_a_wait_runs_from_the_first_queue_offer_included(harness: Harness) -> None:
    # The first queue is full at 10:00:00; the caller hears the callback offer, is
    # queued again at 10:00:12 and answered at 10:00:20: 20 s for a person, not 8.
    peer = TwilioPeer(harness.client, "+8659112345")
    root = parse(peer.post(only(peer.call(), "Gather").get("action", "")).data)
    first = only(root, "Enqueue")
    root = parse(peer.post(first.get("action", ""), QueueResult="queue-full").data)
    offer = only(root, "Gather")
    harness.clock.now = NOW + timedelta(seconds=12)
    again = only(parse(peer.post(offer.get("action", "")).data), "Enqueue")
    harness.clock.now = NOW + timedelta(seconds=20)
    peer.post(again.get("action", ""), QueueResult="bridged", QueueTime="8")
    answered = harness.events.of_type("answered")[0]
    assert (answered["wait_s"], answered["total_wait_s"]) == (8.0, 20.0)


def test_cancelled_seats_go_to_12345_seats(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, "+8659312348")  # 12348 in Ningde: seats cancelled
    root = parse(peer.post(peer.call()[-1].text or "").data)
    assert only(root, "Enqueue").text == "ningde-12345"


def test_retired_line_in_its_window_plays_its_own_recording(hotline: Hotline) -> None:
    settings = make_settings(prompts_base_url="https://media.example.test/ivr/")
    h = make_harness(hotline, datetime(2022, 1, 15, 10, tzinfo=SHANGHAI), settings=settings)
    peer = TwilioPeer(h.client, "+8659112358")
    root = peer.call()
    play = only(root, "Play")
    assert play.text == "https://media.example.test/ivr/transition_notice-12358.wav"
    root = parse(peer.post(only(root, "Redirect").text or "").data)
    assert only(root, "Enqueue").text == "fuzhou-12345"
    played = h.events.of_type("prompt_played")
    assert [(p["prompt"], p["transition"]) for p in played] == [("transition_notice", True)]
    assert summary(h, hotline, peer.sid)["tags"]["original_line_name"] == "价格监督"


def test_retired_line_after_its_window_announces_and_ends_in_one_response(
    hotline: Hotline,
) -> None:
    h = make_harness(hotline, datetime(2022, 6, 1, 10, tzinfo=SHANGHAI))
    peer = TwilioPeer(h.client, "+8659112336")
    root = peer.call()
    assert [c.tag for c in root] == ["Say", "Hangup"]  # batched: nothing left to wait on
    assert "12336" in (root[0].text or "")
    assert h.events.types() == ["call_offered", "prompt_played", "call_ended"]
    assert peer.hang_up() == 204
    assert h.events.types().count("call_ended") == 1


def test_sub_centre_unanswered_goes_to_12345_seats(harness: Harness, hotline: Hotline) -> None:
    peer = TwilioPeer(harness.client, "+8659112366")
    root = parse(peer.post(peer.call()[-1].text or "").data)
    dial = only(root, "Dial")
    assert (dial.get("timeout"), only(dial, "Number").text) == ("25", "059112366")
    root = parse(peer.post(dial.get("action", ""), DialCallStatus="busy").data)
    assert only(root, "Enqueue").text == "fuzhou-12345"
    assert summary(harness, hotline, peer.sid)["fallbacks"][0]["reason"] == "busy"


def test_targets_map_to_sip_clients_and_e164(hotline: Hotline) -> None:
    settings = make_settings(
        queues={"fuzhou-12345": "sip:seats@pbx.example.test"},
        dial_template="{e164}",
        dial_numbers={"110": "sip:110@gateway.example.test"},
    )
    h = make_harness(hotline, NOW, settings=settings)
    peer = TwilioPeer(h.client, "+8659112366")
    dial = only(parse(peer.post(peer.call()[-1].text or "").data), "Dial")
    assert only(dial, "Number").text == "+8659112366"
    root = parse(peer.post(dial.get("action", ""), DialCallStatus="failed").data)
    seats = only(root, "Dial")  # a queue mapped to a SIP seat group is dialed
    assert only(seats, "Sip").text == "sip:seats@pbx.example.test"
    assert seats.get("timeout") == "60"
    emergency = TwilioPeer(h.client, "+8659112110", sid="CA" + "2" * 32)
    assert only(only(emergency.call(), "Dial"), "Sip").text == "sip:110@gateway.example.test"


# -- the survey and hang-ups ---------------------------------------------------------


def test_survey_without_a_key_records_no_grade(harness: Harness) -> None:
    walk(TwilioPeer(harness.client, FUZHOU_12345), keys="")
    assert "survey_result" not in harness.events.types()
    assert harness.events.types()[-1] == "call_ended"


@pytest.mark.parametrize("status_first", [True, False])
def test_caller_hangs_up_while_queued_is_abandoned_once(
    harness: Harness, status_first: bool
) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    root = parse(peer.post(peer.call()[-1].text or "").data)
    action = only(root, "Enqueue").get("action", "")
    harness.clock.now = datetime(2024, 6, 1, 10, 0, 40, tzinfo=SHANGHAI)
    if status_first:
        assert peer.hang_up() == 204
        late = peer.post(action, QueueResult="hangup", QueueTime="40")
        assert late.status_code == 200 and len(parse(late.data)) == 0
    else:
        peer.status = "completed"
        late = peer.post(action, QueueResult="hangup", QueueTime="38")
        assert late.status_code == 200 and len(parse(late.data)) == 0
        assert peer.hang_up() == 204
    types = harness.events.types()
    assert types.count("abandoned") == 1 and types.count("call_ended") == 1
    assert "missed_call_callback_created" in types and "answered" not in types
    abandoned = harness.events.of_type("abandoned")[0]
    assert abandoned["wait_s"] == (40.0 if status_first else 38.0)


@pytest.mark.parametrize(
    ("report", "answered"),
    [({"QueueResult": "bridged", "QueueTime": "12"}, True),
     ({"QueueResult": "hangup", "QueueTime": "12"}, False)],
)  # fmt: skip
def test_status_callback_before_the_queues_report_waits_for_it(
    hotline: Hotline, report: dict[str, str], answered: bool
) -> None:
    # The caller talked to a seat and hung up: Twilio sends the status callback and the
    # Enqueue's action in no set order. Arriving first, the status callback must not
    # call the caller abandoned (and order a callback) before the action says bridged.
    h = make_harness(hotline, NOW, settings=make_settings(action_wait_s=5.0))
    peer = TwilioPeer(h.client, FUZHOU_12345)
    action = only(parse(peer.post(peer.call()[-1].text or "").data), "Enqueue").get("action", "")
    status: list[int] = []
    second = TwilioPeer(h.app.test_client(), FUZHOU_12345, sid=peer.sid)
    thread = threading.Thread(target=lambda: status.append(second.hang_up()))
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)  # the status callback is waiting
    peer.status = "completed"
    assert peer.post(action, **report).status_code == 200
    thread.join(10)
    assert status == [204] and time.monotonic() - started < 4.0
    types = h.events.types()
    assert types.count("call_ended") == 1
    assert ("answered" in types) is answered
    assert ("abandoned" in types) is not answered
    assert ("missed_call_callback_created" in types) is not answered


def test_caller_hangs_up_during_the_greeting_is_no_abandonment(
    harness: Harness, hotline: Hotline
) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    peer.call()
    assert peer.hang_up() == 204
    types = harness.events.types()
    assert "abandoned" not in types and types[-1] == "call_ended"
    assert summary(harness, hotline, peer.sid)["target"] == {
        "kind": "hangup",
        "id": "caller_hung_up",
    }


def test_hang_up_after_talking_on_a_dial_counts_as_answered(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, "+8659112366")
    dial = only(parse(peer.post(peer.call()[-1].text or "").data), "Dial")
    peer.status = "completed"  # the caller hung up: Twilio still reports the dial
    harness.clock.now = datetime(2024, 6, 1, 10, 2, tzinfo=SHANGHAI)
    done = peer.post(dial.get("action", ""), DialCallStatus="completed", DialCallDuration="100")
    assert done.status_code == 200 and len(parse(done.data)) == 0
    answered = harness.events.of_type("answered")
    assert len(answered) == 1 and answered[0]["wait_s"] == 20.0  # 120 s less 100 s of talk
    assert "abandoned" not in harness.events.types()


# -- bad input and failures of ours -------------------------------------------------


@pytest.mark.parametrize("missing", ["CallSid", "To"])
def test_incoming_webhook_missing_a_field_is_400_naming_it(harness: Harness, missing: str) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    form = peer.fields()
    del form[missing]
    response = peer.post("/twilio/voice", form)
    assert response.status_code == 400 and missing in response.get_data(as_text=True)


def test_connect_result_missing_is_400_naming_the_field(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    root = parse(peer.post(peer.call()[-1].text or "").data)
    response = peer.post(only(root, "Enqueue").get("action", ""))
    assert response.status_code == 400 and "QueueResult" in response.get_data(as_text=True)
    # The call is untouched: the proper result still goes through.
    ok = peer.post(only(root, "Enqueue").get("action", ""), QueueResult="bridged")
    assert ok.status_code == 200 and only(parse(ok.data), "Gather") is not None


def test_status_callback_missing_status_is_400(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, FUZHOU_12345)
    form = peer.fields()
    del form["CallStatus"]
    response = peer.post("/twilio/status", form)
    assert response.status_code == 400 and "CallStatus" in response.get_data(as_text=True)


def test_unknown_call_state_falls_back_to_the_region_seats(hotline: Hotline) -> None:
    first = make_harness(hotline, NOW)
    peer = TwilioPeer(first.client, "+8659212345")  # Xiamen
    action = only(peer.call(), "Gather").get("action", "")
    # Another process with an empty store (a restart without Redis) gets the continuation.
    second = make_harness(hotline, NOW, settings=first.settings)
    response = TwilioPeer(second.client, "+8659212345").post(action)
    assert response.status_code == 200
    root = parse(response.data)
    assert [c.tag for c in root] == ["Enqueue", "Hangup"]
    assert root[0].text == "xiamen-12345" and root[0].get("action") is None


def test_expired_call_state_falls_back_to_the_seats(hotline: Hotline) -> None:
    h = make_harness(hotline, NOW, store=MemoryStateStore(ttl_s=0.05))
    peer = TwilioPeer(h.client, FUZHOU_12345)
    action = only(peer.call(), "Gather").get("action", "")
    time.sleep(0.1)
    root = parse(peer.post(action).data)
    assert only(root, "Enqueue").text == "fuzhou-12345" and root[-1].tag == "Hangup"


def test_a_failure_mid_call_puts_the_caller_through_to_the_seats(hotline: Hotline) -> None:
    current = {"hotline": hotline}
    h = make_harness(lambda: current["hotline"], NOW)
    peer = TwilioPeer(h.client, "+8659212345")
    action = only(peer.call(), "Gather").get("action", "")
    # A reload that lost the flow this call is in: our failure, found mid-call.
    broken = {k: v for k, v in hotline.flows.items() if k != "main"}
    current["hotline"] = dataclasses.replace(hotline, flows=broken)
    response = peer.post(action)
    assert response.status_code == 200
    root = parse(response.data)
    assert [c.tag for c in root] == ["Enqueue", "Hangup"] and root[0].text == "xiamen-12345"
    ended = h.events.of_type("call_ended")
    assert len(ended) == 1 and ended[0]["target"] == "xiamen-12345"


def test_a_failure_before_routing_still_reaches_the_seats(hotline: Hotline) -> None:
    h = make_harness(hotline, NOW)
    # Naive: the core refuses it when it decides a retired line's phase.
    h.clock.now = datetime(2024, 6, 1, 10, 0)
    response = TwilioPeer(h.client, "+8659112358").post("/twilio/voice")
    assert response.status_code == 200
    root = parse(response.data)
    assert [c.tag for c in root] == ["Enqueue", "Hangup"] and root[0].text == "fuzhou-12345"


def test_fallback_url_hands_a_call_in_progress_to_the_seats(
    harness: Harness, hotline: Hotline
) -> None:
    peer = TwilioPeer(harness.client, "+8659312345")  # Ningde
    peer.call()
    response = peer.post("/twilio/fallback", ErrorCode="11200", ErrorUrl=f"{PUBLIC}/twilio/x")
    root = parse(response.data)
    assert response.status_code == 200 and root[0].text == "ningde-12345"
    result = summary(harness, hotline, peer.sid)
    assert result["fallbacks"][-1]["reason"] == "twilio_fallback"
    assert harness.events.types()[-1] == "call_ended"


def test_fallback_url_for_a_call_we_never_saw_counts_it(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, "+8659212345")
    response = peer.post("/twilio/fallback", ErrorCode="11205")
    assert parse(response.data)[0].text == "xiamen-12345"
    assert harness.events.types() == ["call_offered", "call_ended"]
    assert harness.events.of_type("call_ended")[0]["target_kind"] == "seats"


def test_fallback_url_needs_a_signature_too(harness: Harness) -> None:
    response = TwilioPeer(harness.client, FUZHOU_12345).post("/twilio/fallback", sign=False)
    assert response.status_code == 403


# -- the connect results, the wait URL and prompts ---------------------------------------


@pytest.mark.parametrize(
    ("form", "outcome", "wait"),
    [
        ({"DialCallStatus": "completed", "DialCallDuration": "50"}, "answered", 10.0),
        ({"DialCallStatus": "answered"}, "answered", 60.0),
        ({"DialCallStatus": "no-answer"}, "noanswer", 60.0),
        ({"DialCallStatus": "busy"}, "busy", 60.0),
        ({"DialCallStatus": "failed"}, "failed", 60.0),
        ({"DialCallStatus": "canceled"}, "noanswer", 60.0),
        ({"QueueResult": "bridged", "QueueTime": "9"}, "answered", 9.0),
        ({"QueueResult": "leave", "QueueTime": "45"}, "noanswer", 45.0),
        ({"QueueResult": "queue-full"}, "busy", 60.0),
        ({"QueueResult": "system-error"}, "failed", 60.0),
        ({"QueueResult": "error"}, "failed", 60.0),
        ({"QueueResult": "something-new"}, "failed", 60.0),
    ],
)
def test_connect_results(form: dict, outcome: str, wait: float) -> None:
    record = CallRecord(step=1, state={}, connect_at=1000.0, via="dial")
    assert connect_result(form, record, 1060.0) == ConnectResult(outcome, wait)


def test_wait_url_without_queue_time_uses_its_deadline(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, "+8659512315")
    root = parse(peer.post(peer.call()[-1].text or "").data)
    wait_url = only(root, "Enqueue").get("waitUrl", "")
    assert int(query(wait_url)["d"]) == int(NOW.timestamp()) + 20
    harness.clock.now = datetime(2024, 6, 1, 10, 0, 15, tzinfo=SHANGHAI)
    holding = parse(peer.post(wait_url).data)
    assert holding[0].tag == "Pause" and holding[0].get("length") == "5"
    harness.clock.now = datetime(2024, 6, 1, 10, 0, 21, tzinfo=SHANGHAI)
    assert [c.tag for c in parse(peer.post(wait_url).data)] == ["Leave"]


def test_wait_url_with_a_changed_limit_is_refused(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, "+8659512315")
    root = parse(peer.post(peer.call()[-1].text or "").data)
    wait_url = only(root, "Enqueue").get("waitUrl", "")
    longer = wait_url.replace("l=20", "l=2000")
    assert peer.post(longer, QueueTime="25").status_code == 403


def test_hold_music_plays_while_queued(hotline: Hotline) -> None:
    h = make_harness(hotline, NOW, settings=make_settings(hold_music_url=f"{PUBLIC}/hold.wav"))
    peer = TwilioPeer(h.client, "+8659512315")
    root = parse(peer.post(peer.call()[-1].text or "").data)
    holding = parse(peer.post(only(root, "Enqueue").get("waitUrl", ""), QueueTime="1").data)
    assert [c.tag for c in holding] == ["Play", "Redirect"] and holding[
        0
    ].text == f"{PUBLIC}/hold.wav"


def test_prompts_are_served_to_twilio_without_a_signature(hotline: Hotline, tmp_path: Path) -> None:
    sounds = tmp_path / "prompts" / "sounds"
    sounds.mkdir(parents=True)
    (sounds / "greeting_12345.wav").write_bytes(b"RIFF0000WAVEfmt ")
    settings = dataclasses.replace(
        make_settings(), prompts_dir=sounds, prompts_base_url=f"{PUBLIC}/twilio/prompts"
    )
    h = make_harness(hotline, NOW, settings=settings)
    root = TwilioPeer(h.client, FUZHOU_12345).call()
    url = only(only(root, "Gather"), "Play").text or ""
    assert url == f"{PUBLIC}/twilio/prompts/greeting_12345.wav"
    fetched = h.client.get(urlsplit(url).path)
    assert fetched.status_code == 200 and fetched.mimetype == "audio/wav"
    assert fetched.data.startswith(b"RIFF")
    assert h.client.get("/twilio/prompts/missing.wav").status_code == 404
    assert h.client.get("/twilio/prompts/..%2Fsecret.wav").status_code == 404


def test_events_carry_the_call_and_run_on_across_webhooks(harness: Harness) -> None:
    walk(TwilioPeer(harness.client, FUZHOU_12345), keys="1")
    calls = [call for call, _ in harness.events.batches]
    assert {c.front_end for c in calls} == {"twilio"}
    assert {c.caller for c in calls} == {CALLER}
    assert {c.route.region for c in calls} == {"fuzhou"}
    counted = 0
    for call, events in harness.events.batches:
        assert call.seq_base == counted  # each batch starts where the last one ended
        counted += len(events)
    assert len(harness.events.batches) >= 3


def test_a_failing_wait_url_keeps_the_caller_queued(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, "+8659512315")
    root = parse(peer.post(peer.call()[-1].text or "").data)
    wait_url = only(root, "Enqueue").get("waitUrl", "")
    harness.clock.now = None  # type: ignore[assignment] - our clock breaks mid-call
    response = peer.post(wait_url)  # no QueueTime: the deadline needs the clock
    assert response.status_code == 200
    assert [c.tag for c in parse(response.data)] == ["Pause", "Redirect"]  # no <Enqueue> here


def test_redis_down_still_reaches_the_seats(
    hotline: Hotline, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStateStore.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    h = make_harness(hotline, NOW, store=store)
    peer = TwilioPeer(h.client, "+8659312345")
    response = peer.post("/twilio/voice")
    assert response.status_code == 200
    root = parse(response.data)
    assert [c.tag for c in root] == ["Enqueue", "Hangup"] and root[0].text == "ningde-12345"
    # The call still counts: its offer and its hand-over go to the publisher, which
    # keeps them through the outage (it used to publish nothing at all).
    assert h.events.types(peer.sid) == ["call_offered", "call_ended"]
    ended = h.events.of_type("call_ended")[0]
    assert (ended["target_kind"], ended["target"], ended["fallbacks"]) == (
        "seats", "ningde-12345", 1
    )  # fmt: skip
    assert h.events.batches[0][0].seq_base == 0  # numbered from the call's first event
    # An outage is logged as one, not as a failure with a trace per call.
    warned = [r for r in caplog.records if "call state unavailable" in r.getMessage()]
    assert warned and all(r.exc_info is None for r in caplog.records)


class SwitchedStore(MemoryStateStore):
    """One process's calls, behind a Redis that can be taken away mid-call."""

    down = False

    def get(self, call_sid: str) -> CallRecord | None:
        if self.down:
            raise StateUnavailable("redis: ConnectionError: refused")
        return super().get(call_sid)

    def create(self, call_sid: str, record: CallRecord) -> bool:
        if self.down:
            raise StateUnavailable("redis: ConnectionError: refused")
        return super().create(call_sid, record)

    def replace(self, call_sid: str, expected_step: int, record: CallRecord) -> bool:
        if self.down:
            raise StateUnavailable("redis: ConnectionError: refused")
        return super().replace(call_sid, expected_step, record)


@pytest.mark.parametrize("failed", ["/twilio/voice", "/twilio/continue"])
def test_fallback_url_in_an_outage_counts_only_a_call_it_knows_is_new(
    hotline: Hotline, failed: str
) -> None:
    store = SwitchedStore()
    h = make_harness(hotline, NOW, store=store)
    peer = TwilioPeer(h.client, "+8659212345")
    if failed != "/twilio/voice":
        peer.call()  # the call is under way: its events so far are numbered in the store
    published = h.events.types(peer.sid)
    store.down = True
    response = peer.post("/twilio/fallback", ErrorCode="11200", ErrorUrl=PUBLIC + failed)
    assert parse(response.data)[0].text == "xiamen-12345"  # the seats either way
    if failed == "/twilio/voice":
        assert h.events.types(peer.sid) == ["call_offered", "call_ended"]
    else:
        # Numbered from 1 again, a second offer would be taken for the first one (the
        # platform drops a number it has) and the hand-over for a later event.
        assert h.events.types(peer.sid) == published


def test_a_continuation_in_an_outage_reaches_the_seats_and_invents_no_events(
    hotline: Hotline,
) -> None:
    store = SwitchedStore()
    h = make_harness(hotline, NOW, store=store)
    peer = TwilioPeer(h.client, "+8659212345")
    action = only(peer.call(), "Gather").get("action", "")
    published = h.events.types(peer.sid)
    store.down = True
    root = parse(peer.post(action).data)
    assert [c.tag for c in root] == ["Enqueue", "Hangup"] and root[0].text == "xiamen-12345"
    assert h.events.types(peer.sid) == published
    # and the status callback at its end is refused, for Twilio to log, not made up
    assert peer.post("/twilio/status", CallStatus="completed").status_code == 503

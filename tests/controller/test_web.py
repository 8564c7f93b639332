"""/metrics and /healthz, through Flask's test client."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from ivr.agi.calls import CallInfo
from ivr.core.clock import SHANGHAI
from ivr.core.engine import CallSession, Connect, ConnectResult, HangUp
from ivr.core.routing import Call, Hotline
from ivr.web import create_app
from ivr.web.metrics import IndicatorCollector, LiveIndicators


def run_call(hotline: Hotline, sink: LiveIndicators, n: int, outcome: str, key: str = "") -> None:
    call = Call(
        "12345",
        datetime(2024, 6, 3, 10, tzinfo=SHANGHAI),
        caller="13912340000",
        region="xiamen",
        call_id=f"c{n}",
    )
    route = hotline.route(call)
    info = CallInfo(call.call_id, call.caller, route)
    session, instruction = CallSession.start(hotline, route)
    while not isinstance(instruction, HangUp):
        if isinstance(instruction, Connect):
            if outcome == "abandon":
                session.caller_hung_up(wait_s=40.0)
                break
            instruction = session.resume(ConnectResult("answered", wait_s=float(n * 10)))
        else:
            instruction = session.resume(key or None)
        sink.call_events(info, session.take_events())
    sink.call_events(info, session.take_events())


def test_metrics_expose_the_indicators(hotline: Hotline) -> None:
    live = LiveIndicators()
    run_call(hotline, live, 1, "answer", key="1")  # 10 s wait, survey key 1: 非常满意
    run_call(hotline, live, 2, "answer")  # 20 s wait
    run_call(hotline, live, 3, "abandon")  # a missed-call callback
    registry = CollectorRegistry()
    registry.register(IndicatorCollector(live))
    client = create_app(registry=registry).test_client()
    body = client.get("/metrics").get_data(as_text=True)
    labels = 'line="12345",region="xiamen"'
    assert f"ivr_calls_offered_total{{{labels}}} 3.0" in body
    assert f"ivr_calls_answered_by_person_total{{{labels}}} 2.0" in body
    assert f"ivr_answer_rate_15s{{{labels}}} 0.3333" in body
    assert f"ivr_connection_rate{{{labels}}} 0.6667" in body
    assert f"ivr_abandonment_rate{{{labels}}} 0.3333" in body
    assert f"ivr_calls_callbacks_total{{{labels}}} 1.0" in body
    assert f"ivr_calls_fell_back_total{{{labels}}} 0.0" in body
    assert 'ivr_survey_results_total{grade="非常满意",line="12345",region="xiamen"} 1.0' in body
    assert "13912340000" not in body and "1391" not in body


def test_healthz_is_503_when_unhealthy() -> None:
    app = create_app(registry=CollectorRegistry(), health=lambda: {"ok": False, "why": "spool"})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503 and response.get_json()["why"] == "spool"
    ok = create_app(registry=CollectorRegistry(), health=lambda: {"ok": True})
    assert ok.test_client().get("/healthz").status_code == 200


def test_calls_never_wait_for_a_scrape(hotline: Hotline) -> None:
    # A scrape holds the indicators' lock while it works out every figure since the
    # start (longer the longer the controller runs); the calls must go on meanwhile.
    live = LiveIndicators()
    fed = threading.Event()

    def calls() -> None:
        for n in range(2 * LiveIndicators.FOLD_AT):  # enough to make a call want to fold
            run_call(hotline, live, n, "answer")
        fed.set()

    with live.lock:  # the scrape
        feeder = threading.Thread(target=calls, daemon=True)
        feeder.start()
        assert fed.wait(10), "a call waited for the scrape"
    (row,) = live.snapshot()  # folds what waited: nothing is lost
    assert row["offered"] == 2 * LiveIndicators.FOLD_AT
    assert row["answered_by_person"] == 2 * LiveIndicators.FOLD_AT


def test_the_live_indicators_keep_one_bucket_per_region_and_line(
    hotline: Hotline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hours are for ivr stats; /metrics is since the start, and must not grow with time.
    import time as time_module

    live = LiveIndicators()
    clock = [1_717_380_000.0]
    monkeypatch.setattr(time_module, "time", lambda: clock[0])
    for n in range(1, 5):
        run_call(hotline, live, n, "answer")
        clock[0] += 7200  # two hours on
    live.snapshot()
    assert len(live.indicators.buckets) == 1

"""/metrics (Prometheus) and /healthz. Labels carry regions and lines, never numbers."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ivr.indicators import COUNTED, GRADES, Indicators

metrics = Blueprint("metrics", __name__)


@metrics.get("/metrics")
def prometheus() -> Response:
    registry: CollectorRegistry = current_app.extensions["ivr"]["registry"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


@metrics.get("/healthz")
def healthz() -> tuple[Response, int]:
    health = current_app.extensions["ivr"].get("health")
    report: dict[str, Any] = health() if health else {"ok": True}
    return jsonify(report), 200 if report.get("ok", True) else 503


SINCE_START = "since start"


class LiveIndicators:
    """An event sink that folds every call's events as they pass, for /metrics.

    Calls hand their events over without waiting: a scrape works out every figure
    since the start under the lock, which takes longer the longer the controller
    runs, and the calls (one thread for all of them) must not wait for it. Events
    wait in a queue until a scrape folds them, or until a call finds many waiting
    and the lock free."""

    FOLD_AT = 256  # events waiting before a call folds them itself

    def __init__(self) -> None:
        self.indicators = Indicators()
        self.lock = threading.Lock()
        # (call id, region, line, hour, counted events); appends need no lock
        self._waiting: deque[tuple[str, str, str, str, list[dict[str, Any]]]] = deque()

    def call_events(self, call: Any, events: list[dict[str, Any]]) -> None:
        # Most of a call's events (prompts, keys) count for nothing: skip them cheaply.
        counted = [raw for raw in events if raw.get("type") in COUNTED]
        if not counted:
            return
        route = call.route
        # /metrics shows region and line since the start: one bucket each, however long
        # the controller runs (hours are for `ivr stats`, over the streams)
        self._waiting.append((call.call_id, route.region, route.line, SINCE_START, counted))
        if len(self._waiting) >= self.FOLD_AT and self.lock.acquire(blocking=False):
            try:
                self._fold()
            finally:
                self.lock.release()

    def _fold(self) -> None:
        """Fold the waiting events, oldest first (with the lock held)."""
        waiting, indicators = self._waiting, self.indicators
        while waiting:
            call_id, region, line, hour, counted = waiting.popleft()
            for raw in counted:
                kind = raw["type"]
                if kind == "call_offered":
                    indicators.offer(call_id, region, line, hour)
                else:
                    # the engine names a survey's grade by its label
                    indicators.fold(kind, call_id, raw, str(raw.get("grade") or ""))

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            self._fold()
            return self.indicators.rows(by=("region", "line"))


class IndicatorCollector(Collector):
    """The indicators per region and line since the controller started."""

    def __init__(self, live: LiveIndicators) -> None:
        self.live = live

    def collect(self) -> Iterator[Any]:
        rows = self.live.snapshot()
        labels = ["region", "line"]
        counters = {
            "offered": "calls offered",
            "asked_for_person": "calls that asked for a person",
            "answered_by_person": "calls answered by a person",
            "callbacks": "calls that got a callback (missed, or asked for)",
            "fell_back": "calls a failure of ours sent to the 12345 seats",
        }
        for name, doc in counters.items():
            family = CounterMetricFamily(f"ivr_calls_{name}", doc, labels=labels)
            for row in rows:
                family.add_metric([row["region"], row["line"]], row[name])
            yield family
        gauges = {
            "answer_rate_15s": "answered within 15 s / asked for a person",
            "connection_rate": "answered by a person / asked for a person (GB/T 33358)",
            "abandonment_rate": "hung up while waiting / asked for a person",
            "wait_mean_s": "mean wait of answered calls, seconds",
            "wait_p90_s": "90th percentile wait of answered calls, seconds",
            "transfer_success_rate": "transferred / transfers tried",
        }
        for name, doc in gauges.items():
            gauge = GaugeMetricFamily(f"ivr_{name}", doc, labels=labels)
            for row in rows:
                if row[name] is not None:
                    gauge.add_metric([row["region"], row["line"]], row[name])
            yield gauge
        survey = CounterMetricFamily(
            "ivr_survey_results", "好差评 results by grade", labels=[*labels, "grade"]
        )
        for row in rows:
            for grade in GRADES:
                survey.add_metric([row["region"], row["line"], grade], row["survey"][grade])
        yield survey

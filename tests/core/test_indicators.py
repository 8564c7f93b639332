"""The indicators on a known set of calls, computed by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from ivr.events import EVENT_TYPES
from ivr.indicators import COUNTED, Indicators, local_hour, render_table

T = "2024-06-03T10:{:02d}:00+08:00"


def call(call_id: str, *events: tuple[str, dict], line: str = "12345", minute: int = 5):
    yield {
        "type": "call_offered",
        "call_id": call_id,
        "region": "fuzhou",
        "line": line,
        "ts_local": T.format(minute),
    }
    for kind, fields in events:
        yield {
            "type": kind,
            "call_id": call_id,
            "region": "fuzhou",
            "line": line,
            "ts_local": T.format(minute),
            **fields,
        }


KNOWN = [
    # answered in 5 s, very satisfied
    *call(
        "c1",
        ("queued", {}),
        ("answered", {"wait_s": 5.0, "total_wait_s": 5.0}),
        ("survey_result", {"label": "非常满意", "grade": 5}),
        ("call_ended", {}),
    ),
    # answered in 20 s: answered, but not within 15 s
    *call(
        "c2",
        ("queued", {}),
        ("answered", {"wait_s": 20.0, "total_wait_s": 20.0}),
        ("call_ended", {}),
    ),
    # gave up after 30 s
    *call("c3", ("queued", {}), ("abandoned", {"wait_s": 30.0}), ("call_ended", {})),
    # a retired line's announcement: never asked for a person
    *call("c4", ("call_ended", {})),
    # sub-centre failed, then 12345 answered: 40 s in all though 8 s on the last queue
    *call(
        "c5",
        ("queued", {}),
        ("transfer_failed", {}),
        ("queued", {}),
        ("answered", {"wait_s": 8.0, "total_wait_s": 40.0}),
        ("survey_result", {"label": "不满意", "grade": 2}),
        ("call_ended", {}),
    ),
    # one-key to 110, answered in 2 s
    *call(
        "c6",
        ("queued", {}),
        ("answered", {"wait_s": 2.0, "total_wait_s": 2.0}),
        ("transferred", {}),
        ("call_ended", {}),
    ),
    # still in progress: not counted
    *call("c7", ("queued", {})),
    # another line, another hour
    *call(
        "d1",
        ("queued", {}),
        ("answered", {"wait_s": 1.0, "total_wait_s": 1.0}),
        ("call_ended", {}),
        line="12358",
        minute=59,
    ),
]


def test_indicators_match_hand_computed_values() -> None:
    indicators = Indicators().extend(KNOWN)
    (row,) = indicators.rows(by=("region", "line"), region="fuzhou")[:1]
    assert row["line"] == "12345"
    assert row["offered"] == 6
    assert row["asked_for_person"] == 5
    assert row["answered_by_person"] == 4
    assert row["answer_rate_15s"] == 0.4  # c1 and c6 of five that asked
    assert row["connection_rate"] == 0.8
    assert row["abandonment_rate"] == 0.2
    assert row["wait_mean_s"] == 16.75  # (5 + 20 + 40 + 2) / 4
    assert row["wait_p90_s"] == 40.0
    assert row["transfer_success_rate"] == 0.5
    assert row["survey"] == {"非常满意": 1, "满意": 0, "基本满意": 0, "不满意": 1, "非常不满意": 0}
    assert list(indicators.open) == ["c7"]


def test_grouping_by_region_merges_lines() -> None:
    (row,) = Indicators().extend(KNOWN).rows(by=("region",))
    assert (row["offered"], row["answered_by_person"], row["answer_rate_15s"]) == (7, 5, 0.5)


def test_hours_are_local_and_since_filters_them() -> None:
    indicators = Indicators().extend(KNOWN)
    hours = {row["hour"] for row in indicators.rows()}
    assert hours == {"2024-06-03 10:00"}
    from datetime import datetime

    from ivr.core.clock import SHANGHAI

    assert indicators.rows(since=datetime(2024, 6, 3, 11, tzinfo=SHANGHAI)) == []


def test_no_calls_gives_no_rates_not_zero() -> None:
    indicators = Indicators().extend(call("x", ("call_ended", {})))
    (row,) = indicators.rows(by=("line",))
    assert row["connection_rate"] is None and row["wait_mean_s"] is None


def test_table_renders_rates_as_percentages() -> None:
    text = render_table(Indicators().extend(KNOWN).rows(by=("line",)), ("line",))
    header, first, second = text.splitlines()
    assert header.split()[:4] == ["line", "offered", "asked", "answered"]
    assert "40.0%" in first and "80.0%" in first and "1/0/0/1/0" in first
    assert second.startswith("12358")


def test_event_types_outside_counted_change_no_indicator() -> None:
    # The live /metrics sink skips events whose type is not in COUNTED before
    # building them: any type Indicators.add reads must be listed there.
    def call(extra_type: str | None) -> list[dict[str, object]]:
        base = {"call_id": "c1", "region": "fuzhou", "line": "12345",
                "ts_local": "2026-11-26T10:00:00+08:00", "wait_s": 3.0,
                "total_wait_s": 3.0, "grade": "满意", "label": "满意"}  # fmt: skip
        kinds = ["call_offered", "queued", "answered", "transferred", "survey_result"]
        kinds += [extra_type] if extra_type else []
        return [{**base, "type": kind} for kind in [*kinds, "call_ended"]]

    plain = Indicators().extend(call(None)).rows()
    for kind in EVENT_TYPES:
        if kind not in COUNTED:
            assert Indicators().extend(call(kind)).rows() == plain, kind
    assert Indicators().extend(call("abandoned")).rows() != plain  # a counted one does


def test_local_hour_is_shanghai_time_and_follows_the_clock() -> None:
    # 2026-11-26 15:59:59 UTC is 23:59:59 in Shanghai; a second later is the next day.
    before = datetime(2026, 11, 26, 15, 59, 59, tzinfo=UTC).timestamp()
    assert local_hour(before) == "2026-11-26 23:00"
    assert local_hour(before + 1) == "2026-11-27 00:00"
    assert local_hour(before) == "2026-11-26 23:00"  # the cached hour is not kept too long
    assert local_hour(before + 1 + 3599) == "2026-11-27 00:00"
    assert local_hour(before + 1 + 3600) == "2026-11-27 01:00"


def test_hours_in_the_table_say_their_offset() -> None:
    text = render_table(Indicators().extend(KNOWN).rows(by=("hour",)), ("hour",))
    assert text.splitlines()[0].startswith("hour (+08:00)")


def _numbered(events: list[dict]) -> list[dict]:
    return [{**event, "seq": n} for n, event in enumerate(events, start=1)]


def test_one_calls_events_count_the_same_in_any_order() -> None:
    # Two gunicorn workers publish one Twilio call's events; the one that spooled
    # through a Redis outage sends its earlier events after the other's later ones.
    events = _numbered(list(call(
        "c1",
        ("queued", {}),
        ("answered", {"wait_s": 5.0, "total_wait_s": 5.0}),
        ("survey_result", {"label": "满意", "grade": 4}),
        ("call_ended", {}),
    )))  # fmt: skip
    in_order = Indicators().extend(events).rows(by=("line",))
    assert in_order[0]["answered_by_person"] == 1
    for order in ([3, 4, 5, 1, 2], [2, 5, 1, 3, 4], [5, 4, 3, 2, 1], [1, 5, 2, 3, 4]):
        shuffled = Indicators().extend(events[n - 1] for n in order)
        assert shuffled.rows(by=("line",)) == in_order, order
        assert shuffled.open == {} and shuffled.early == {}


def test_events_of_a_call_offered_before_the_window_are_not_counted() -> None:
    late = [
        e for e in call("c9", ("queued", {}), ("call_ended", {})) if e["type"] != "call_offered"
    ]
    indicators = Indicators().extend(late)
    assert indicators.rows() == []


# -- an event read twice counts once (docs/events.md: event_id is the idempotence key) --


def _event(type_: str, seq: int, **fields: object) -> dict:
    return {"type": type_, "call_id": "c1", "seq": str(seq), "region": "fuzhou",
            "line": "12345", "ts_local": T.format(5), **fields}  # fmt: skip


def test_a_call_offered_read_again_mid_call_does_not_start_it_over() -> None:
    offered = _event("call_offered", 1)
    events = [offered, _event("queued", 2),
              _event("answered", 3, wait_s="5.0", total_wait_s="5.0"),
              offered, _event("call_ended", 4)]  # fmt: skip
    (row,) = Indicators().extend(events).rows(by=("region",))
    assert (row["offered"], row["asked_for_person"], row["answered_by_person"]) == (1, 1, 1)


def test_a_call_offered_read_again_after_the_end_leaves_nothing_in_progress() -> None:
    offered = _event("call_offered", 1)
    indicators = Indicators().extend([offered, _event("queued", 2), _event("call_ended", 3),
                                      offered])  # fmt: skip
    assert indicators.open == {}


def test_a_transfer_failure_read_twice_counts_once() -> None:
    failed = _event("transfer_failed", 3, kind="sub_centre", target="fuzhou-12366",
                    outcome="noanswer")  # fmt: skip
    events = [_event("call_offered", 1), _event("queued", 2), failed, failed,
              _event("queued", 4), _event("answered", 5, wait_s="5.0", total_wait_s="25.0"),
              _event("transferred", 6, kind="sub_centre", target="fuzhou-12366"),
              _event("call_ended", 7)]  # fmt: skip
    (row,) = Indicators().extend(events).rows(by=("region",))
    assert row["transfer_success_rate"] == 0.5  # one of two tries, not one of three


def test_a_late_copy_of_a_counted_call_changes_nothing() -> None:
    failed = _event("transfer_failed", 3, kind="sub_centre", target="fuzhou-12366",
                    outcome="noanswer")  # fmt: skip
    events = [_event("call_offered", 1), _event("queued", 2), failed,
              _event("queued", 4), _event("answered", 5, wait_s="5.0", total_wait_s="25.0"),
              _event("transferred", 6, kind="sub_centre", target="fuzhou-12366"),
              _event("call_ended", 7)]  # fmt: skip
    indicators = Indicators().extend(events)
    before = indicators.rows(by=("region",))
    indicators.extend([failed])  # read again, after the call ended
    assert indicators.rows(by=("region",)) == before
    assert before[0]["transfer_success_rate"] == 0.5


def test_callbacks_and_failures_of_ours_are_counted() -> None:
    events = [
        *call("c1", ("queued", {}), ("abandoned", {"wait_s": 30.0}),
              ("missed_call_callback_created", {"reason": "abandoned"}),
              ("call_ended", {"fallbacks": 0})),
        *call("c2", ("queued", {}), ("callback_requested", {"reason": "overflow"}),
              ("call_ended", {"fallbacks": 0})),
        # the controller failed: the switch put the caller through to the seats
        *call("c3", ("call_ended", {"fallbacks": 1})),
        *call("c4", ("queued", {}), ("answered", {"wait_s": 3.0}), ("call_ended", {})),
    ]  # fmt: skip
    (row,) = Indicators().extend(events).rows(by=("region",))
    assert (row["offered"], row["callbacks"], row["fell_back"]) == (4, 2, 1)


def test_waits_are_kept_in_bounded_memory_with_the_same_figures() -> None:
    # A controller runs for months: its waits are counted per tenth of a second.
    import random

    rng = random.Random(7)
    waits = [round(rng.uniform(0, 60), 1) for _ in range(20_000)]
    events = [e for n, w in enumerate(waits)
              for e in call(f"c{n}", ("queued", {}), ("answered", {"wait_s": w}),
                            ("call_ended", {}))]  # fmt: skip
    indicators = Indicators().extend(events)
    (bucket,) = indicators.buckets.values()
    assert len(bucket.wait_bins) <= 601
    (row,) = indicators.rows(by=("region",))
    ordered = sorted(waits)
    assert row["wait_p90_s"] == ordered[math.ceil(0.9 * len(ordered)) - 1]
    assert row["wait_mean_s"] == round(sum(waits) / len(waits), 2)


def test_calls_whose_end_never_comes_do_not_stay_for_good(monkeypatch) -> None:
    import ivr.indicators as module

    monkeypatch.setattr(module, "OPEN_MAX", 100)
    indicators = Indicators()
    for n in range(1000):
        indicators.offer(f"c{n}", "fuzhou", "12345", "2024-06-03 10:00")
    assert len(indicators.open) == 100 and "c999" in indicators.open


def test_p90_never_reads_below_the_waits_it_covers() -> None:
    events = [e for n in range(10)
              for e in call(f"c{n}", ("queued", {}), ("answered", {"wait_s": 15.04}),
                            ("call_ended", {}))]  # fmt: skip
    (row,) = Indicators().extend(events).rows(by=("region",))
    assert row["answer_rate_15s"] == 0.0 and row["wait_p90_s"] == 15.1

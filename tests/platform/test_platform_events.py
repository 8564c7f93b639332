"""The event schema: building, validating and the flat wire form (no Redis)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from platform_support import START, call_info, simulate_call

from ivr.events import (
    EVENT_TYPES,
    GRADE_LABELS,
    SCHEMA,
    SCHEMA_VERSION,
    CallEvent,
    CallInfo,
    EventError,
    EventRecorder,
    from_engine,
    normalise_caller,
)

CALL = CallInfo("1717378200.7", "pingtan", "12345", "main", "13912347777")
OUTCOMES = ("answered", "abandoned", "callback", "transfer_failed")


def test_grades_map_five_to_very_satisfied() -> None:
    assert dict(GRADE_LABELS) == {
        5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意",
    }  # fmt: skip
    event = CallEvent.make("survey_result", CALL, 1, START, grade=1)
    assert event.fields["label"] == "非常不满意"


def test_every_type_is_exercised_by_the_simulated_calls() -> None:
    seen = {e.type for outcome in OUTCOMES for e in simulate_call(call_info(1), outcome=outcome)}
    assert seen | {"transferred"} == set(EVENT_TYPES)
    assert CallEvent.make("transferred", CALL, 1, START, kind="emergency", target="110")


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_wire_form_round_trips(outcome: str) -> None:
    for event in simulate_call(call_info(4), outcome=outcome):
        fields = event.to_fields(full_numbers=True)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
        assert CallEvent.from_fields(fields) == event
        # Redis hands back bytes unless told otherwise.
        assert CallEvent.from_fields({k.encode(): v.encode() for k, v in fields.items()}) == event


def test_common_fields_ids_and_times() -> None:
    events = simulate_call(call_info(2))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    first = events[0].to_fields(full_numbers=True)
    assert first["event_id"] == "1717378200.2:1"
    assert first["schema"] == str(SCHEMA_VERSION)
    assert first["ts_utc"] == "2024-06-03T01:30:00.000+00:00"
    assert first["ts_local"] == "2024-06-03T09:30:00.000+08:00"
    assert first["caller"] == "13912340002"
    assert first["mode"] == "dual_number" and first["line"] == "12315"


def test_caller_is_masked_unless_full_numbers_asked() -> None:
    event = CallEvent.make("call_offered", CALL, 1, START)
    assert event.to_fields()["caller"] == "139****7777"
    assert "13912347777" not in repr(event) and "13912347777" not in repr(CALL)
    masked = CallEvent.from_fields(event.to_fields())
    assert masked.caller == "139****7777" and "139****7777" in repr(masked)


def test_withheld_and_formatted_callers_are_normalised() -> None:
    assert normalise_caller("anonymous") == ""
    assert normalise_caller(None) == ""
    assert normalise_caller("+86 139-1234-7777") == "+8613912347777"
    event = CallEvent.make("call_offered", dataclasses.replace(CALL, caller="Restricted"), 1, START)
    assert event.caller == "" and event.to_fields()["caller"] == ""


def test_local_time_is_shanghai_whatever_zone_now_came_in() -> None:
    now = datetime(2024, 6, 3, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    event = CallEvent.make("call_offered", CALL, 1, now)
    assert event.ts_local == "2024-06-04T09:00:00.000+08:00"
    assert event.ts_utc == "2024-06-04T01:00:00.000+00:00"


def _replace(event: CallEvent, **changes: object) -> CallEvent:
    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]


GOOD = CallEvent.make("answered", CALL, 3, START, target_kind="seats", target="q1", wait_s=4.5)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"type": "coffee_break"}, "unknown event type"),
        ({"fields": {"target_kind": "seats", "target": "q1"}}, "answered needs field wait_s"),
        ({"fields": {**GOOD.fields, "wait_s": "4.5"}}, "field wait_s must be float, not str"),
        ({"fields": {**GOOD.fields, "wait_s": True}}, "field wait_s must be float, not bool"),
        ({"fields": {**GOOD.fields, "wait_s": -1.0}}, "field wait_s must not be negative"),
        ({"fields": {**GOOD.fields, "wait_s": float("nan")}}, "field wait_s must be float"),
        ({"fields": {**GOOD.fields, "mood": "grumpy"}}, "answered has no field mood"),
        ({"ts": datetime(2024, 6, 3, 9, 30)}, "ts is a naive datetime"),
        ({"ts": "2024-06-03T09:30:00+08:00"}, "ts must be a datetime"),
        ({"seq": 0}, "seq must be an int >= 1"),
        ({"seq": True}, "seq must be an int >= 1"),
        ({"mode": "whole-merge"}, "mode must be one of"),
        ({"region": "Fuzhou City"}, "region is malformed"),
        ({"line": "12345a"}, "line is malformed"),
        ({"call_id": ""}, "call_id is malformed"),
        ({"caller": "call me maybe"}, "caller is not a phone number"),
        ({"schema": 1}, "schema must be 2"),
    ],
)
def test_malformed_events_are_refused_with_a_reason(changes: dict, reason: str) -> None:
    GOOD.validate()
    with pytest.raises(EventError) as err:
        _replace(GOOD, **changes).validate()
    assert err.value.reason.startswith(reason)
    assert "13912347777" not in err.value.reason


def test_survey_label_must_match_grade() -> None:
    with pytest.raises(EventError, match="label does not match grade"):
        CallEvent.make("survey_result", CALL, 1, START, grade=5, label="不满意")
    with pytest.raises(EventError, match=r"grade must be 1\.\.5"):
        CallEvent.make("survey_result", CALL, 1, START, grade=6)


def test_from_fields_refuses_tampered_entries() -> None:
    fields = GOOD.to_fields(full_numbers=True)
    for broken, reason in [
        ({**fields, "schema": "3"}, "unsupported schema"),
        ({**fields, "event_id": "1717378200.7:9"}, "event_id does not match"),
        ({**fields, "wait_s": "soon"}, "field wait_s is not a valid float"),
        ({**fields, "ts_local": "2024-06-03T09:31:00.000+08:00"}, "ts_utc and ts_local disagree"),
        ({k: v for k, v in fields.items() if k != "region"}, "missing field region"),
        ({**fields, "extra": "x"}, "answered has no field extra"),
    ]:
        with pytest.raises(EventError) as err:
            CallEvent.from_fields(broken)
        assert err.value.reason.startswith(reason)


def test_version_1_entries_are_still_read_but_never_with_version_2_fields() -> None:
    failed = CallEvent.make("transfer_failed", CALL, 4, START, kind="sub_centre",
                            target="fuzhou-12366", outcome="noanswer")  # fmt: skip
    v1 = {**failed.to_fields(full_numbers=True), "schema": "1"}
    assert CallEvent.from_fields(v1).fields["outcome"] == "noanswer"
    with pytest.raises(EventError, match="has no field work_order"):
        CallEvent.from_fields({**v1, "work_order": "true"})
    v2 = CallEvent.make("transfer_failed", CALL, 4, START, kind="sub_centre",
                        target="fuzhou-12366", outcome="noanswer", method="three_way",
                        work_order=True)  # fmt: skip
    assert CallEvent.from_fields(v2.to_fields(full_numbers=True)).fields["work_order"] is True


def test_recorder_numbers_without_gaps_and_stops_at_the_end() -> None:
    sent: list[CallEvent] = []
    rec = EventRecorder(CALL, sent.append)
    rec.record("call_offered", START)
    with pytest.raises(EventError):
        rec.record("answered", START, wait_s=1.0)  # no target: refused, no seq used
    rec.record("abandoned", START, wait_s=3.0)
    rec.record("call_ended", START, duration_s=5.0, answered=False, target_kind="",
               target="", fallbacks=0)  # fmt: skip
    assert [e.seq for e in sent] == [1, 2, 3] and rec.ended
    with pytest.raises(EventError, match="already ended"):
        rec.record("survey_result", START, grade=5)


def test_engine_events_are_adapted() -> None:
    # The shapes ivr.core.engine reports today.
    engine = [
        {"type": "call_offered", "known": True, "region_source": "trunk"},
        {"type": "prompt_played", "prompt": "transition_12358", "transition": True},
        {"type": "queued", "via": "queue", "target_kind": "seats", "target": "pingtan-12345"},
        {"type": "survey_result", "grade": "基本满意", "score": 3, "key": "3"},
        {"type": "call_ended", "answered": True, "target_kind": "seats",
         "target": "pingtan-12345", "fallbacks": 1, "prompts": 2},
    ]  # fmt: skip
    rec = EventRecorder(CALL)
    for raw in engine[:-1]:
        rec.record_engine(raw, START)
    rec.record_engine(engine[-1], START, duration_s=61.0)
    survey = rec.events[3]
    assert survey.fields == {"grade": 3, "label": "基本满意", "key": "3"}
    assert rec.events[-1].fields["duration_s"] == 61.0
    with pytest.raises(EventError, match="needs field duration_s"):
        from_engine(engine[-1], CALL, 9, START)
    with pytest.raises(EventError, match="unknown event type"):
        from_engine({"type": "emergency_advised"}, CALL, 9, START)


def test_call_info_from_the_core_route() -> None:
    @dataclasses.dataclass
    class Call:
        call_id: str = "CA123"
        caller: str | None = "+86 139 1234 7777"

    @dataclasses.dataclass
    class Route:
        region: str = "xiamen"
        line: str = "12358"
        mode: str = "whole_merge"

    info = CallInfo.from_route(Call(), Route())
    assert info == CallInfo("CA123", "xiamen", "12358", "whole_merge", "+8613912347777")


# Any value of any kind in any field: validation either accepts or raises EventError.
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
    st.text(max_size=40), st.lists(st.integers(), max_size=3),
)  # fmt: skip


@given(
    kind=st.sampled_from((*EVENT_TYPES, "nope")),
    fields=st.dictionaries(
        st.sampled_from(sorted({n for spec in SCHEMA.values() for n in spec})), _values
    ),
)
def test_validation_never_fails_any_other_way(kind: str, fields: dict) -> None:
    try:
        event = CallEvent.make(kind, CALL, 1, START, **fields)
    except EventError:
        return
    assert CallEvent.from_fields(event.to_fields(full_numbers=True)) == event


@given(
    wait=st.floats(0, 86_400, allow_nan=False),
    keys=st.text("0123456789*#", min_size=1, max_size=32),
    at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_valid_events_round_trip(wait: float, keys: str, at: datetime) -> None:
    for event in (
        CallEvent.make("keys_pressed", CALL, 2, at, keys=keys),
        CallEvent.make("abandoned", CALL, 3, at, wait_s=wait),
    ):
        assert CallEvent.from_fields(event.to_fields(full_numbers=True)) == event


@given(
    raw=st.dictionaries(
        st.sampled_from(sorted({"type", "score", *(n for spec in SCHEMA.values() for n in spec)})),
        st.one_of(_values, st.sampled_from((*EVENT_TYPES, *GRADE_LABELS.values()))),
    )
)
def test_engine_adapter_never_fails_any_other_way(raw: dict) -> None:
    try:
        event = from_engine(raw, CALL, 1, START)
    except EventError:
        return
    assert event.type == raw["type"]

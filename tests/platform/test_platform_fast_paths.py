"""The publishing hot path's short cuts give exactly what the plain code gives:
validation, the wire timestamps, the JSON spool lines (no Redis)."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from platform_support import START, call_info, simulate_call

from ivr.core.clock import SHANGHAI
from ivr.events import (
    EVENT_TYPES,
    SCHEMA,
    CallEvent,
    CallInfo,
    EventError,
    normalise_caller,
    wire_times,
)
from ivr.platform.callbacks import task_fields, wants_callback
from ivr.platform.publisher import Publisher, _Record

OUTCOMES = ("answered", "abandoned", "callback", "transfer_failed")
CALL = CallInfo("1717378200.7", "pingtan", "12345", "main", "13912347777")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- timestamps --------------------------------------------------------------------------

_zones = st.sampled_from(
    [UTC, SHANGHAI, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=45))]
)


@given(
    at=st.datetimes(
        min_value=datetime(1890, 1, 1), max_value=datetime(2200, 1, 1), timezones=_zones
    )
)
def test_wire_times_are_isoformat_in_utc_and_shanghai(at: datetime) -> None:
    # 1890-2200 covers Shanghai's local mean time (+08:05:43), its summer times of the
    # 1940s and 1986-91, and every microsecond value (truncated, not rounded).
    assert wire_times(at) == (
        at.astimezone(UTC).isoformat(timespec="milliseconds"),
        at.astimezone(SHANGHAI).isoformat(timespec="milliseconds"),
    )


def test_wire_times_around_a_shanghai_clock_change() -> None:
    # 1991-04-14 02:00 local (18:00 UTC the day before): clocks went forward an hour.
    change = datetime(1991, 4, 13, 18, 0, tzinfo=UTC)
    before, after = wire_times(change - timedelta(milliseconds=1)), wire_times(change)
    assert before == ("1991-04-13T17:59:59.999+00:00", "1991-04-14T01:59:59.999+08:00")
    assert after == ("1991-04-13T18:00:00.000+00:00", "1991-04-14T03:00:00.000+09:00")
    # A Shanghai time that never was (clocks went from 00:00 to 01:00) stays as given,
    # as astimezone() leaves it.
    never = datetime(1949, 5, 1, 0, 30, tzinfo=SHANGHAI)
    assert wire_times(never) == ("1949-04-30T16:30:00.000+00:00", "1949-05-01T00:30:00.000+08:00")


def test_make_cuts_to_milliseconds_like_replace() -> None:
    at = datetime(2024, 6, 3, 1, 30, 0, 123_999, tzinfo=UTC)
    event = CallEvent.make("call_offered", CALL, 1, at)
    assert event.ts == at.replace(microsecond=123_000)
    assert event.ts_utc == "2024-06-03T01:30:00.123+00:00"
    assert event.ts_local == "2024-06-03T09:30:00.123+08:00"


# -- validation ----------------------------------------------------------------------------


def test_make_gives_what_the_constructor_gives() -> None:
    event = CallEvent.make("abandoned", CALL, 5, START, wait_s=41.5, target="x-1")
    assert event == CallEvent(
        type="abandoned", call_id=CALL.call_id, seq=5, region="pingtan", line="12345",
        mode="main", ts=START, caller="13912347777", fields={"wait_s": 41.5, "target": "x-1"},
    )  # fmt: skip
    assert isinstance(event.fields, MappingProxyType) and event.checked
    assert repr(event) == repr(dataclasses.replace(event))


@given(caller=st.one_of(st.text(max_size=20), st.text("+0123456789 -*٣", max_size=20), st.none()))
def test_normalise_caller_short_cut(caller: str | None) -> None:
    expected = ""
    if caller and caller.strip():
        text = caller.strip()
        digits = "".join(ch for ch in text if ch.isdigit() and ch.isascii())
        expected = ("+" if text.startswith("+") and digits else "") + digits
    assert normalise_caller(caller) == expected


def test_every_simulated_event_takes_the_short_cut() -> None:
    # If the short cut stopped applying, validation would be right but slow again.
    for n, outcome in enumerate(OUTCOMES):
        for event in simulate_call(call_info(n), outcome=outcome):
            assert event._plainly_valid(), event
            assert list(event._problems()) == []


def _agree(event: CallEvent) -> None:
    """The short cut passes only what the full check passes; validate() says the
    full check's first problem."""
    problems = list(event._problems())
    if event._plainly_valid():
        assert problems == []
    try:
        event.validate()
    except EventError as exc:
        assert problems and exc.reason == problems[0]
    else:
        assert problems == []


_BASE = CallEvent.make("answered", CALL, 4, START, target_kind="seats", target="x", wait_s=1.0)
# Mostly values some field accepts, so that most events are nearly valid.
_values = st.one_of(
    st.sampled_from([
        "seats", "fuzhou-12345", "满意", "4", "", "Seats", "-", 0.0, 8.5, -1.0, 1, 4, 0,
        True, False, None,
    ]),
    st.floats(allow_nan=True), st.integers(-3, 10**6), st.text(max_size=8),
)  # fmt: skip
_names = st.sampled_from(sorted({n for spec in SCHEMA.values() for n in spec}))


@given(kind=st.sampled_from((*EVENT_TYPES, "nope")), fields=st.dictionaries(_names, _values))
def test_the_short_cut_agrees_on_type_fields(kind: str, fields: dict) -> None:
    _agree(dataclasses.replace(_BASE, type=kind, fields=fields))


class _Text(str):
    pass


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *[("seq", v) for v in (0, -1, True, 1.0, "1", 2**40)],
        *[("ts", v) for v in (START.replace(tzinfo=None), "2024-06-03", None)],
        *[("schema", v) for v in (1, 3, True, 2.0, "2")],
        *[("caller", v) for v in ("+86 139", "abc", "139****7777", "", None, _Text("139"))],
        *[("mode", v) for v in ("nope", "", None, _Text("main"))],
        *[("call_id", v) for v in ("", "a b", 'a"b', 17, _Text("17.1"))],
        *[("region", v) for v in ("Fuzhou", "", None)],
        *[("line", v) for v in ("12a", "", 12345)],
        *[("fields", v) for v in ({"wait_s": 1.0}, None, [])],
        ("type", None),
        ("type", ["answered"]),
    ],
)
def test_the_short_cut_agrees_on_common_fields(name: str, value: Any) -> None:
    _agree(dataclasses.replace(_BASE, **{name: value}))


# -- the JSON lines ------------------------------------------------------------------------

# Anything validation lets through: quotes, backslashes, 满意, U+2028 ...
_texts = st.text(min_size=1, max_size=12).filter(lambda s: not re.search(r"[\x00-\x1f\x7f]", s))


@given(target=_texts, prompt=_texts, full=st.booleans())
def test_json_lines_are_what_json_dumps_writes(target: str, prompt: str, full: bool) -> None:
    events = [
        CallEvent.make("prompt_played", CALL, 1, START, prompt=prompt, transition=True),
        CallEvent.make("abandoned", CALL, 2, START, wait_s=1e16, target=target),
        CallEvent.make("survey_result", CALL, 3, START, grade=4, key="4"),
        CallEvent.make(
            "call_ended",
            CALL,
            4,
            START,
            duration_s=0.1,
            answered=False,
            target_kind="",
            target=target,
            fallbacks=2,
        ),
    ]
    # The same event not built by make(): the plain JSON encoder writes it.
    events.append(dataclasses.replace(events[1]))
    assert not events[-1].checked
    for event in events:
        flat = event.to_field_list(full_numbers=full)
        assert dict(zip(flat[::2], flat[1::2], strict=True)) == event.to_fields(full_numbers=full)
        assert event.to_json_list(full_numbers=full) == _dumps(flat)


def test_spool_lines_are_what_json_dumps_writes(tmp_path: Path) -> None:
    pub = Publisher("redis://127.0.0.1:1/0", tmp_path, linger_s=60)  # never reached
    try:
        tasks = 0
        odd = CallInfo('a"b\\c', "fuzhou", "12345", "main", "13912340000")  # not valid,
        for event in [  # and still encoded the plain way
            *simulate_call(call_info(3), outcome="abandoned"),
            dataclasses.replace(simulate_call(call_info(4))[0], call_id=odd.call_id),
        ]:
            line = pub._prepare(event).line
            task = [x for kv in task_fields(event).items() for x in kv]
            tasks += wants_callback(event)
            assert line == _dumps(
                {
                    "s": f"ivr:events:{event.region}",
                    "d": f"ivr:seen:{event.call_id}",
                    "m": str(event.seq),
                    "f": event.to_field_list(),
                    "t": task if wants_callback(event) else [],  # with the full number
                }
            )
            again = _Record.from_line(line)
            assert (again.stream, again.seen) == (f"ivr:events:{event.region}",
                                                  f"ivr:seen:{event.call_id}")  # fmt: skip
        assert tasks == 2  # abandoned, missed_call_callback_created
    finally:
        pub.close(timeout=0)

"""Call events: one versioned schema for everything a call tells the 12345 platform.

Pure: no Redis, no clock. Every event is built from the call it belongs to, a
per-call sequence number and an explicit aware `now`. The wire form is a flat
`dict[str, str]` (what Redis XADD takes); docs/events.md describes every field.

Privacy: an event holds the caller's full number because the missed-call callback
needs it, but `repr()` masks it and `to_fields()` writes it in full only when told.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any, Literal, Protocol

from ivr.core.clock import SHANGHAI
from ivr.core.privacy import mask_number

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# What readers accept. Version 2 added `method` and `work_order` to the transfer
# events (seats' transfers); a version-1 entry is a version-2 one without them.
READABLE_VERSIONS = ("1", "2")
_ADDED_IN_2 = {"transferred": {"method"}, "transfer_failed": {"method", "work_order"}}

CALL_OFFERED = "call_offered"
PROMPT_PLAYED = "prompt_played"
KEYS_PRESSED = "keys_pressed"
QUEUED = "queued"
ANSWERED = "answered"
TRANSFERRED = "transferred"
TRANSFER_FAILED = "transfer_failed"
ABANDONED = "abandoned"
CALLBACK_REQUESTED = "callback_requested"
MISSED_CALL_CALLBACK_CREATED = "missed_call_callback_created"
SURVEY_RESULT = "survey_result"
CALL_ENDED = "call_ended"

MODES = ("main", "whole_merge", "dual_number", "sub_centre", "emergency")

# 好差评: the five grades, highest first, by the score each counts for. Which key a
# caller presses for which grade is the survey dialplan's business (dialplans/survey.yaml).
GRADE_LABELS: Mapping[int, str] = MappingProxyType(
    {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
)

# Events after which the caller is owed a missed-call callback (漏接电话回拨): one
# task per call, whichever of them comes first.
CALLBACK_TRIGGERS = (ABANDONED, CALLBACK_REQUESTED, MISSED_CALL_CALLBACK_CREATED)

# Common fields, in wire order; `event_id` is derived, never stored.
COMMON_FIELDS = (
    "type", "schema", "event_id", "call_id", "seq", "region", "line", "mode",
    "ts_utc", "ts_local", "caller",
)  # fmt: skip


class EventError(ValueError):
    """A malformed event; `reason` says what is wrong without echoing personal data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Kind = Literal["str", "int", "float", "bool"]

_CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REGION = re.compile(r"[a-z][a-z0-9_]{0,31}")
_LINE = re.compile(r"[0-9]{3,20}")
_CALLER = re.compile(r"(\+?[0-9][0-9*]{0,23})?")
_KEYS = re.compile(r"[0-9*#]{1,32}")
_SLUG = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _ident(value: Any) -> str | None:
    if not value or len(value) > 128 or _CONTROL.search(value):
        return "must be 1-128 printable characters"
    return None


def _ident_or_empty(value: Any) -> str | None:
    return None if value == "" else _ident(value)


def _slug(value: Any) -> str | None:
    return None if _SLUG.fullmatch(value) else "must be a lower-case identifier"


def _keys(value: Any) -> str | None:
    return None if _KEYS.fullmatch(value) else "must be 1-32 of 0-9 * #"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must not be negative"


def _positive(value: Any) -> str | None:
    return None if value >= 1 else "must be at least 1"


def _grade(value: Any) -> str | None:
    return None if value in GRADE_LABELS else "must be 1..5"


def _grade_label(value: Any) -> str | None:
    return None if value in GRADE_LABELS.values() else "is not a 好差评 grade name"


@dataclass(frozen=True)
class FieldSpec:
    kind: Kind
    required: bool = True
    check: Callable[[Any], str | None] | None = None


def _utf8(value: Any) -> str | None:
    # Text that cannot be written as UTF-8 (a lone surrogate) would fail Redis's and
    # the spool's encoding for the whole batch it travels in: refuse the one event.
    if value.isascii():  # O(1) in CPython: the common case costs nothing
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not text that UTF-8 can carry"
    return None


def _text(check: Callable[[Any], str | None] | None) -> Callable[[Any], str | None]:
    if check is None:
        return _utf8
    return lambda value: _utf8(value) or check(value)


def _f(kind: Kind, check: Callable[[Any], str | None] | None = None) -> FieldSpec:
    return FieldSpec(kind, True, _text(check) if kind == "str" else check)


def _opt(kind: Kind, check: Callable[[Any], str | None] | None = None) -> FieldSpec:
    return FieldSpec(kind, False, _text(check) if kind == "str" else check)


# The type-specific fields of every event type. Names follow what the call engine
# (ivr.core.engine) already reports, so `from_engine` is a thin adapter. Adding
# or changing a field is a schema change: bump SCHEMA_VERSION, update docs/events.md.
SCHEMA: Mapping[str, Mapping[str, FieldSpec]] = MappingProxyType(
    {
        CALL_OFFERED: {
            "known": _opt("bool"),
            "region_source": _opt("str", _slug),
            "trunk": _opt("str", _ident),
        },
        PROMPT_PLAYED: {"prompt": _f("str", _ident), "transition": _f("bool")},
        KEYS_PRESSED: {"keys": _f("str", _keys), "step": _opt("str", _ident)},
        QUEUED: {
            "target_kind": _f("str", _slug),
            "target": _f("str", _ident),
            "via": _opt("str", _slug),
            "position": _opt("int", _positive),
        },
        ANSWERED: {
            "target_kind": _f("str", _slug),
            "target": _f("str", _ident),
            "wait_s": _f("float", _non_negative),
            "total_wait_s": _opt("float", _non_negative),
            "answered_by": _opt("str", _ident_or_empty),
        },
        TRANSFERRED: {
            "kind": _f("str", _slug),
            "target": _f("str", _ident),
            "method": _opt("str", _slug),
        },
        TRANSFER_FAILED: {
            "kind": _f("str", _slug),
            "target": _f("str", _ident),
            "outcome": _f("str", _slug),
            "method": _opt("str", _slug),
            "work_order": _opt("bool"),
        },
        ABANDONED: {
            "wait_s": _f("float", _non_negative),
            "total_wait_s": _opt("float", _non_negative),
            "target_kind": _opt("str", _slug),
            "target": _opt("str", _ident),
        },
        CALLBACK_REQUESTED: {
            "wait_s": _f("float", _non_negative),
            "reason": _opt("str", _slug),
            "callback_list": _opt("str", _ident),
        },
        MISSED_CALL_CALLBACK_CREATED: {
            "reason": _f("str", _slug),
            "wait_s": _opt("float", _non_negative),
            "callback_list": _opt("str", _ident),
        },
        SURVEY_RESULT: {
            "grade": _f("int", _grade),
            "label": _f("str", _grade_label),
            "key": _opt("str", _keys),
        },
        CALL_ENDED: {
            "duration_s": _f("float", _non_negative),
            "answered": _f("bool"),
            "target_kind": _f("str", _ident_or_empty),
            "target": _f("str", _ident_or_empty),
            "fallbacks": _f("int", _non_negative),
            "prompts": _opt("int", _non_negative),
        },
    }
)
EVENT_TYPES = tuple(SCHEMA)


class CallLike(Protocol):
    """What an event needs to know about its call (the core's call object fits)."""

    @property
    def call_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def line(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def caller(self) -> str: ...


@dataclass(frozen=True, repr=False)
class CallInfo:
    """A call as events see it: `line` is the dialed number, `caller` the calling one."""

    call_id: str
    region: str
    line: str
    mode: str
    caller: str = ""

    @classmethod
    def from_route(cls, call: Any, route: Any) -> CallInfo:
        """From the core's `Call` (call_id, caller) and its `Route` (region, line, mode)."""
        return cls(
            call_id=call.call_id,
            region=route.region,
            line=route.line,
            mode=str(route.mode),
            caller=normalise_caller(call.caller),
        )

    def __repr__(self) -> str:
        return (
            f"CallInfo({self.call_id!r}, region={self.region!r}, line={self.line!r}, "
            f"mode={self.mode!r}, caller={mask_number(self.caller)!r})"
        )


# A call's events all carry the same caller: mask it once, not once per event.
_mask_cached = lru_cache(maxsize=1024)(mask_number)


def _masked(caller: object) -> str:
    if not isinstance(caller, str):
        return "?"
    # A caller read back from a masked stream is masked already.
    return caller if "*" in caller else _mask_cached(caller)


# What normalise_caller() returns unchanged: checking costs less than normalising.
_NORMAL_CALLER = re.compile(r"\+?[0-9]+")


def normalise_caller(number: str | None) -> str:
    """Digits with an optional leading +; withheld or anonymous callers become ''."""
    if not number:
        return ""
    if number.__class__ is str and _NORMAL_CALLER.fullmatch(number):
        return number
    text = number.strip()
    digits = "".join(ch for ch in text if ch.isdigit() and ch.isascii())
    if not digits:
        return ""
    return ("+" if text.startswith("+") else "") + digits


def callback_task_id(call_id: str) -> str:
    """A call gets at most one callback task, and this is its id."""
    return f"{call_id}:callback"


def _kind_ok(kind: Kind, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    return isinstance(value, str)


def _encode_bool(value: Any) -> str:
    return "true" if value else "false"


def _encode_float(value: Any) -> str:
    number = float(value)
    # What json.dumps writes: repr for a finite float (the only kind validate() passes).
    return repr(number) if math.isfinite(number) else json.dumps(number)


_ENCODERS: Mapping[str, Callable[[Any], str]] = {
    "bool": _encode_bool,
    "int": str,
    "float": _encode_float,
    "str": str,
}


# Per event type: its fields in wire order with their encoders, and how many are required.
_WIRE_ORDER: Mapping[str, tuple[tuple[str, Callable[[Any], str]], ...]] = {
    kind: tuple((name, _ENCODERS[fs.kind]) for name, fs in spec.items())
    for kind, spec in SCHEMA.items()
}
_REQUIRED_COUNT: Mapping[str, int] = {
    kind: sum(1 for fs in spec.values() if fs.required) for kind, spec in SCHEMA.items()
}


def _finite_and(check: Callable[[Any], str | None] | None) -> Callable[[Any], str | None]:
    def finite_check(value: float) -> str | None:
        if not math.isfinite(value):
            return "must be finite"
        return check(value) if check is not None else None

    return finite_check


_PLAIN_CLASS = {"str": str, "int": int, "float": float, "bool": bool}
# Per event type, per field: (the value's exact class, its check, 1 if required), for
# CallEvent._plainly_valid; a float must also be finite.
_PLAIN_RULES: Mapping[str, Mapping[str, tuple[type, Callable[[Any], str | None] | None, int]]] = {
    kind: {
        name: (
            _PLAIN_CLASS[fs.kind],
            _finite_and(fs.check) if fs.kind == "float" else fs.check,
            int(fs.required),
        )
        for name, fs in spec.items()
    }
    for kind, spec in SCHEMA.items()
}


def _decode(kind: Kind, name: str, text: str) -> Any:
    try:
        if kind == "bool":
            if text not in ("true", "false"):
                raise ValueError
            return text == "true"
        if kind == "int":
            if not re.fullmatch(r"-?[0-9]{1,18}", text):
                raise ValueError
            return int(text)
        if kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise EventError(f"field {name} is not a valid {kind}") from None
    return text


_MICROSECONDS = tuple(timedelta(microseconds=n) for n in range(1000))


def _to_ms(now: datetime) -> datetime:
    extra = now.microsecond % 1000
    if not extra:
        return now
    if now.__class__ is datetime and not now.fold:
        return now - _MICROSECONDS[extra]  # the same instant as replace(), for less
    return now.replace(microsecond=now.microsecond - extra)


# -- the two wire timestamps, formatted once per second rather than once per event ----

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLIS = tuple(f".{n:03d}" for n in range(1000))
# whole UTC second since the epoch -> (UTC date-time, Shanghai date-time, Shanghai offset)
_SECONDS: dict[int, tuple[str, str, str]] = {}


def _second(second: int) -> tuple[str, str, str]:
    start = _EPOCH + timedelta(seconds=second)
    utc = start.isoformat()  # YYYY-MM-DDTHH:MM:SS+00:00: always 19 characters, then the offset
    local = start.astimezone(SHANGHAI).isoformat()
    heads = (utc[:19], local[:19], local[19:])
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    _SECONDS[second] = heads
    return heads


def wire_times(ts: datetime) -> tuple[str, str]:
    """`ts` as `ts_utc` and `ts_local`: exactly what
    `ts.astimezone(tz).isoformat(timespec="milliseconds")` gives for UTC and Shanghai."""
    if ts.tzinfo is None or ts.utcoffset() is None:  # not valid; the library's reading
        return (
            ts.astimezone(UTC).isoformat(timespec="milliseconds"),
            ts.astimezone(SHANGHAI).isoformat(timespec="milliseconds"),
        )
    since = ts - _EPOCH
    second = since.days * 86_400 + since.seconds
    heads = _SECONDS.get(second) or _second(second)
    millis = _MILLIS[since.microseconds // 1000]
    if ts.tzinfo is SHANGHAI:  # astimezone() keeps it as it is, even a time that never was
        return f"{heads[0]}{millis}+00:00", ts.isoformat(timespec="milliseconds")
    # Offsets change on whole seconds, so the second's offset holds for its milliseconds.
    return f"{heads[0]}{millis}+00:00", f"{heads[1]}{millis}{heads[2]}"


# Calls whose identifying fields passed validation; bounded, cleared when full.
_GOOD_CALLS: set[tuple[str, str, str, str, str]] = set()


@dataclass(frozen=True, repr=False)
class CallEvent:
    """One thing that happened on one call.

    `fields` holds the type-specific fields (SCHEMA[type]); the rest is common to
    every event. Build events with `CallEvent.make` or an `EventRecorder`.
    """

    type: str
    call_id: str
    seq: int
    region: str
    line: str
    mode: str
    ts: datetime
    caller: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Read-only view of a private copy: a frozen event must not change later.
        fields = self.fields
        if fields.__class__ is dict or isinstance(fields, Mapping):
            object.__setattr__(self, "fields", MappingProxyType(dict(fields)))

    @classmethod
    def make(
        cls, type: str, call: CallLike, seq: int, now: datetime, /, **fields: Any
    ) -> CallEvent:
        """A validated event; raises EventError. A survey label is filled from its grade."""
        return cls._make(type, call, seq, now, fields)

    @classmethod
    def _make(
        cls, type: str, call: CallLike, seq: int, now: datetime, fields: dict[str, Any]
    ) -> CallEvent:
        """`make()`, for a `fields` dict the event may keep as its own."""
        grade = fields.get("grade")
        if type == SURVEY_RESULT and "label" not in fields and isinstance(grade, int):
            fields["label"] = GRADE_LABELS.get(grade, "")
        if isinstance(now, datetime) and now.tzinfo is not None:
            # Milliseconds are plenty for call events and make the wire form exact.
            now = _to_ms(now)
        values: dict[str, Any] = {
            "type": type,
            "call_id": call.call_id,
            "seq": seq,
            "region": call.region,
            "line": call.line,
            "mode": call.mode,
            "ts": now,
            "caller": normalise_caller(call.caller),
        }
        if cls is CallEvent:
            # What the generated __init__ and __post_init__ do, in one step: `fields`
            # is the event's own dict already, so it needs no private copy.
            event = object.__new__(cls)
            event.__dict__.update(values, fields=MappingProxyType(fields), schema=SCHEMA_VERSION)
        else:
            event = cls(**values, fields=fields)
        event.validate()
        # Frozen and checked: the publisher need not check it again on the call's time.
        event.mark_checked()
        return event

    @property
    def checked(self) -> bool:
        """Built by make(), or validated since (and frozen all along)."""
        return getattr(self, "_checked", False)

    def mark_checked(self) -> None:
        """Note that validate() passed, so that nobody repeats it (a frozen event
        stays valid)."""
        object.__setattr__(self, "_checked", True)

    @property
    def event_id(self) -> str:
        """Deterministic per call and sequence, so publishing twice is idempotent."""
        return f"{self.call_id}:{self.seq}"

    @property
    def ts_utc(self) -> str:
        return wire_times(self.ts)[0]

    @property
    def ts_local(self) -> str:
        return wire_times(self.ts)[1]

    def __repr__(self) -> str:
        return (
            f"CallEvent({self.type!r}, call_id={self.call_id!r}, seq={self.seq}, "
            f"region={self.region!r}, line={self.line!r}, mode={self.mode!r}, "
            f"ts={self.ts_utc if self._aware() else self.ts!r}, "
            f"caller={_masked(self.caller)!r}, fields={dict(self.fields)!r})"
        )

    def _aware(self) -> bool:
        return (
            isinstance(self.ts, datetime)
            and self.ts.tzinfo is not None
            and self.ts.utcoffset() is not None
        )

    def validate(self) -> None:
        """Raise EventError(reason) unless this event matches the schema exactly."""
        if self._plainly_valid():
            return
        for problem in self._problems():
            raise EventError(problem)

    def _plain_call(self) -> bool:
        """The call's part of the event is well-formed (remembered per call, since
        every event of a call repeats it)."""
        call = (self.call_id, self.region, self.line, self.mode, self.caller)
        try:
            if call in _GOOD_CALLS:  # only ever holds tuples of five str
                return True
        except TypeError:  # something unhashable: certainly not plain
            return False
        if not (
            self.call_id.__class__ is str
            and _CALL_ID.fullmatch(self.call_id)
            and self.region.__class__ is str
            and _REGION.fullmatch(self.region)
            and self.line.__class__ is str
            and _LINE.fullmatch(self.line)
            and self.mode.__class__ is str
            and self.mode in MODES
            and self.caller.__class__ is str
            and _CALLER.fullmatch(self.caller)
        ):
            return False
        if len(_GOOD_CALLS) >= 4096:
            _GOOD_CALLS.clear()
        _GOOD_CALLS.add(call)
        return True

    def _plainly_valid(self) -> bool:
        """The common case, quickly: True only if `_problems()` would find nothing.
        Anything unusual (a subclass, an int where a float goes...) answers False and
        gets the full check, which alone says what is wrong."""
        kind = self.type
        if kind.__class__ is not str:
            return False
        rules = _PLAIN_RULES.get(kind)
        if rules is None:
            return False
        seq, ts, fields = self.seq, self.ts, self.fields
        if not (
            self.schema.__class__ is int
            and self.schema == SCHEMA_VERSION
            and seq.__class__ is int
            and seq >= 1
            and ts.__class__ is datetime
            and ts.tzinfo is not None
            and ts.utcoffset() is not None
            and fields.__class__ is MappingProxyType
            and self._plain_call()
        ):
            return False
        required = 0
        for name, value in fields.items():
            rule = rules.get(name)
            if rule is None or value.__class__ is not rule[0]:
                return False
            check = rule[1]
            if check is not None and check(value) is not None:
                return False
            required += rule[2]
        if required != _REQUIRED_COUNT[kind]:
            return False
        return kind != SURVEY_RESULT or GRADE_LABELS[fields["grade"]] == fields["label"]

    def _problems(self) -> Iterator[str]:
        if not isinstance(self.type, str) or self.type not in SCHEMA:
            yield "unknown event type"
            return
        if self.schema != SCHEMA_VERSION or isinstance(self.schema, bool):
            yield f"schema must be {SCHEMA_VERSION}"
        for name, pattern in (("call_id", _CALL_ID), ("region", _REGION), ("line", _LINE)):
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                yield f"{name} is malformed"
        if not isinstance(self.caller, str) or not _CALLER.fullmatch(self.caller):
            # Never echo the value: it may be a phone number.
            yield "caller is not a phone number"
        if self.mode not in MODES:
            yield f"mode must be one of {', '.join(MODES)}"
        if not isinstance(self.seq, int) or isinstance(self.seq, bool) or self.seq < 1:
            yield "seq must be an int >= 1"
        if not isinstance(self.ts, datetime):
            yield "ts must be a datetime"
        elif not self._aware():
            yield "ts is a naive datetime"
        if not isinstance(self.fields, Mapping):
            yield "fields must be a mapping"
            return
        spec = SCHEMA[self.type]
        bad_fields = False
        for name in self.fields:
            if name not in spec:
                bad_fields = True
                yield f"{self.type} has no field {name}"
        for name, fs in spec.items():
            if name not in self.fields:
                if fs.required:
                    bad_fields = True
                    yield f"{self.type} needs field {name}"
                continue
            value = self.fields[name]
            if not _kind_ok(fs.kind, value):
                bad_fields = True
                yield f"field {name} must be {fs.kind}, not {type(value).__name__}"
                continue
            problem = fs.check(value) if fs.check else None
            if problem:
                bad_fields = True
                yield f"field {name} {problem}"
        if (
            self.type == SURVEY_RESULT
            and not bad_fields
            and GRADE_LABELS[self.fields["grade"]] != self.fields["label"]
        ):
            yield "field label does not match grade"

    def to_fields(self, *, full_numbers: bool = False) -> dict[str, str]:
        """Flat string fields for XADD; the caller is masked unless `full_numbers`."""
        flat = self.to_field_list(full_numbers=full_numbers)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def to_field_list(self, *, full_numbers: bool = False) -> list[str]:
        """`to_fields()` as XADD takes it: name, value, name, value ... in wire order."""
        caller = self.caller if full_numbers or not self.caller else _masked(self.caller)
        ts_utc, ts_local = wire_times(self.ts)
        seq = str(self.seq)
        out = [
            "type", self.type,
            "schema", str(self.schema),
            "event_id", f"{self.call_id}:{seq}",
            "call_id", self.call_id,
            "seq", seq,
            "region", self.region,
            "line", self.line,
            "mode", self.mode,
            "ts_utc", ts_utc,
            "ts_local", ts_local,
            "caller", caller,
        ]  # fmt: skip
        fields = self.fields
        for name, encode in _WIRE_ORDER[self.type]:
            if name in fields:
                out += (name, encode(fields[name]))
        return out

    def to_json_list(self, *, full_numbers: bool = False) -> str:
        """`to_field_list()` as the JSON array `json.dumps(..., ensure_ascii=False,
        separators=(",", ":"))` writes, for less: in a checked event every common
        value is plain ASCII that JSON leaves as it is, so only the type's own
        string values need escaping."""
        if not self.checked:
            return json.dumps(
                self.to_field_list(full_numbers=full_numbers),
                ensure_ascii=False,
                separators=(",", ":"),
            )
        caller = self.caller if full_numbers or not self.caller else _masked(self.caller)
        ts_utc, ts_local = wire_times(self.ts)
        call_id, seq = self.call_id, self.seq
        out = (
            f'["type","{self.type}","schema","{self.schema}","event_id","{call_id}:{seq}",'
            f'"call_id","{call_id}","seq","{seq}","region","{self.region}",'
            f'"line","{self.line}","mode","{self.mode}","ts_utc","{ts_utc}",'
            f'"ts_local","{ts_local}","caller","{caller}"'
        )
        fields = self.fields
        for name, encode in _WIRE_ORDER[self.type]:
            if name in fields:
                out += f',"{name}",{encode_basestring(encode(fields[name]))}'
        return out + "]"

    @classmethod
    def from_fields(cls, raw: Mapping[str | bytes, str | bytes]) -> CallEvent:
        """Parse and validate a stream entry; raises EventError.

        A caller masked on the way out stays masked: the round trip is exact only
        for entries written with full numbers.
        """
        data = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        for name in COMMON_FIELDS:
            if name not in data:
                raise EventError(f"missing field {name}")
        if data["schema"] not in READABLE_VERSIONS:
            raise EventError(f"unsupported schema {data['schema'][:8]!r}")
        kind = data["type"]
        if kind not in SCHEMA:
            raise EventError("unknown event type")
        spec = SCHEMA[kind]
        extra = set(data) - set(COMMON_FIELDS) - set(spec)
        if data["schema"] == "1":
            extra |= set(data) & _ADDED_IN_2.get(kind, set())
        if extra:
            raise EventError(f"{kind} has no field {sorted(extra)[0]}")
        try:
            ts = datetime.fromisoformat(data["ts_utc"])
            local = datetime.fromisoformat(data["ts_local"])
        except ValueError:
            raise EventError("ts_utc or ts_local is not ISO 8601") from None
        if ts.tzinfo is None or local.tzinfo is None or ts != local:
            raise EventError("ts_utc and ts_local disagree or lack an offset")
        event = cls(
            type=kind,
            call_id=data["call_id"],
            seq=_decode("int", "seq", data["seq"]),
            region=data["region"],
            line=data["line"],
            mode=data["mode"],
            ts=ts,
            caller=data["caller"],
            fields={
                name: _decode(fs.kind, name, data[name])
                for name, fs in spec.items()
                if name in data
            },
        )
        event.validate()
        if data["event_id"] != event.event_id:
            raise EventError("event_id does not match call_id and seq")
        return event


def from_engine(
    raw: Mapping[str, Any], call: CallLike, seq: int, now: datetime, /, **extra: Any
) -> CallEvent:
    """A CallEvent from one of the call engine's event dicts (`take_events()`).

    The engine reads no clock, so what only the front-end knows comes in `extra`
    (`duration_s` of `call_ended`, `position` of `queued`...). The engine names a
    survey grade by its label; the schema wants the number. Fields the schema
    does not know are left out rather than refusing the whole event. Raises
    EventError for an unknown type or a malformed field.
    """
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise EventError("unknown event type")
    spec = SCHEMA[kind]
    if kind != SURVEY_RESULT:
        fields = {k: v for k, v in raw.items() if k in spec}  # "type" is in no spec
        for k, v in extra.items():
            if k in spec:
                fields[k] = v
        return CallEvent._make(kind, call, seq, now, fields)
    fields = {k: v for k, v in raw.items() if k != "type"}
    label = fields.pop("grade", None)
    score = fields.pop("score", None)
    if isinstance(label, int) and not isinstance(label, bool):
        score, label = label, GRADE_LABELS.get(label)
    if score is None and label in GRADE_LABELS.values():
        score = next(g for g, name in GRADE_LABELS.items() if name == label)
    fields.update(grade=score, label=label)
    fields.update(extra)
    return CallEvent.make(kind, call, seq, now, **{k: v for k, v in fields.items() if k in spec})


class EventRecorder:
    """Numbers one call's events from 1 and hands each to an optional sink
    (typically `Publisher.publish`). Nothing may follow `call_ended`.
    """

    def __init__(
        self,
        call: CallLike,
        sink: Callable[[CallEvent], object] | None = None,
    ) -> None:
        self.call = call
        self._sink = sink
        self._events: list[CallEvent] = []

    @property
    def events(self) -> tuple[CallEvent, ...]:
        return tuple(self._events)

    @property
    def next_seq(self) -> int:
        return len(self._events) + 1

    @property
    def ended(self) -> bool:
        return bool(self._events) and self._events[-1].type == CALL_ENDED

    def record(self, type: str, now: datetime, /, **fields: Any) -> CallEvent:
        """Build, number and emit one event. Raises EventError; a refused event
        uses no sequence number, so the numbers stay gap-free."""
        self._check_open()
        return self._emit(CallEvent.make(type, self.call, self.next_seq, now, **fields))

    def record_engine(self, raw: Mapping[str, Any], now: datetime, /, **extra: Any) -> CallEvent:
        """Like `record`, for an event dict of the call engine (see `from_engine`)."""
        events = self._events
        if events and events[-1].type == CALL_ENDED:
            raise EventError("the call has already ended")
        return self._emit(from_engine(raw, self.call, len(events) + 1, now, **extra))

    def _check_open(self) -> None:
        if self.ended:
            raise EventError("the call has already ended")

    def _emit(self, event: CallEvent) -> CallEvent:
        self._events.append(event)
        if self._sink is not None:
            self._sink(event)
        return event


# -- where a front-end hands a call's engine events ------------------------------------


class EventSink(Protocol):
    """What both front-ends hand a call's engine events to, a few at a time:
    ``call`` carries ``call_id``, ``caller`` and ``route``; ``events`` are the engine's
    dicts. A sink never raises into the call."""

    def call_events(self, call: Any, events: list[dict[str, Any]]) -> None: ...


class NoEvents:
    """A sink that drops everything: tests, benchmarks, a controller with no platform."""

    def call_events(self, call: Any, events: list[dict[str, Any]]) -> None:
        return None


class FanOut:
    """One call's events to several sinks; one failing sink never stops the others."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = tuple(sinks)

    def call_events(self, call: Any, events: list[dict[str, Any]]) -> None:
        for sink in self.sinks:
            try:
                sink.call_events(call, events)
            except Exception:
                _log.exception("call %s: an event sink failed", getattr(call, "call_id", "?"))

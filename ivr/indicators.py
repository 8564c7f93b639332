"""The hotline's indicators, folded from call events (the stream, or live as they pass).

Definitions (GB/T 33358 and common call-centre practice):
- asked for a person: the call was queued or dialled to someone at least once;
- answered by a person: it was answered on one of those attempts;
- 15-second answer rate: answered within 15 s of the first queue (total_wait_s) /
  asked for a person;
- connection rate (电话接通率): answered by a person / asked for a person;
- abandonment rate: hung up while waiting for a person / asked for a person;
- wait: total_wait_s of answered calls (mean, p90);
- transfer success rate: transferred / (transferred + transfer failed);
- survey: how many calls gave each of the five "好差评" grades;
- callbacks: calls that got a callback (a missed call's, or one the caller asked for);
- fell back: calls a failure of ours sent to the 12345 seats (call_ended.fallbacks).

A call is counted in the region, line and local hour of its call_offered, once it has
ended; calls still in progress are reported apart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ivr.core.clock import SHANGHAI

ANSWER_WITHIN_S = 15.0
GRADES = ("非常满意", "满意", "基本满意", "不满意", "非常不满意")
# The event types the indicators read; `Indicators.add` ignores every other.
COUNTED = frozenset(
    {"call_offered", "queued", "answered", "abandoned", "transferred", "transfer_failed",
     "survey_result", "callback_requested", "missed_call_callback_created", "call_ended"}
)  # fmt: skip


@dataclass
class _Call:
    region: str
    line: str
    hour: str
    asked: bool = False
    answered: bool = False
    wait_s: float | None = None
    abandoned: bool = False
    transfers_ok: int = 0
    transfers_failed: int = 0
    grade: str | None = None
    callback: bool = False
    fell_back: bool = False
    seen: set[str] = field(default_factory=set)  # seq numbers counted (add())


@dataclass
class Bucket:
    """Ended calls of one region, line and hour (or any coarser grouping)."""

    offered: int = 0
    asked: int = 0
    answered: int = 0
    answered_15s: int = 0
    abandoned: int = 0
    transfers_ok: int = 0
    transfers_failed: int = 0
    callbacks: int = 0
    fell_back: int = 0
    # Waits of answered calls, counted per tenth of a second: a controller that runs
    # for months keeps a bounded table, not every wait (p90 to the tenth, mean exact).
    wait_bins: Counter[int] = field(default_factory=Counter)
    wait_sum: float = 0.0
    wait_n: int = 0
    survey: Counter[str] = field(default_factory=Counter)

    def add(self, call: _Call) -> None:
        self._count(call, +1)

    def remove(self, call: _Call) -> None:
        """Take back what `add` counted for `call` (it is about to be counted again)."""
        self._count(call, -1)

    def _count(self, call: _Call, sign: int) -> None:
        # One place for what a call counts, so that taking it back always matches.
        self.offered += sign
        self.asked += sign * call.asked
        self.answered += sign * call.answered
        self.abandoned += sign * call.abandoned
        self.transfers_ok += sign * call.transfers_ok
        self.transfers_failed += sign * call.transfers_failed
        self.callbacks += sign * call.callback
        self.fell_back += sign * call.fell_back
        if call.answered and call.wait_s is not None:
            # up to the tenth: a p90 never reads below the waits it covers
            self.wait_bins[math.ceil(call.wait_s * 10 - 1e-9)] += sign
            self.wait_sum += sign * call.wait_s
            self.wait_n += sign
            self.answered_15s += sign * (call.wait_s <= ANSWER_WITHIN_S)
        if call.grade:
            self.survey[call.grade] += sign

    def merge(self, other: Bucket) -> None:
        for name in (
            "offered",
            "asked",
            "answered",
            "answered_15s",
            "abandoned",
            "transfers_ok",
            "transfers_failed",
            "callbacks",
            "fell_back",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.wait_bins.update(other.wait_bins)
        self.wait_sum += other.wait_sum
        self.wait_n += other.wait_n
        self.survey.update(other.survey)

    def figures(self) -> dict[str, Any]:
        transfers = self.transfers_ok + self.transfers_failed
        return {
            "offered": self.offered,
            "asked_for_person": self.asked,
            "answered_by_person": self.answered,
            "answer_rate_15s": _ratio(self.answered_15s, self.asked),
            "connection_rate": _ratio(self.answered, self.asked),
            "abandonment_rate": _ratio(self.abandoned, self.asked),
            "wait_mean_s": round(self.wait_sum / self.wait_n, 2) if self.wait_n else None,
            "wait_p90_s": _percentile(self.wait_bins, 0.9),
            "transfer_success_rate": _ratio(self.transfers_ok, transfers),
            "callbacks": self.callbacks,
            "fell_back": self.fell_back,
            "survey": {grade: self.survey.get(grade, 0) for grade in GRADES},
        }


# Calls whose events may still come in late, out of their order (below).
EARLY_MAX = 100_000  # events of calls not offered yet
ENDED_MAX = 10_000  # calls already counted
# Calls in progress; one whose end never comes (a Twilio call whose status callback
# was lost) must not stay for good: far more than a hotline has at once.
OPEN_MAX = 50_000


class Indicators:
    """Feed events in any order; read buckets.

    Within a call, events normally come in order. On the stream they may not: each
    gunicorn worker publishes its own webhooks' events, and one that spooled through
    a Redis outage sends them after another worker's later ones. So events of a call
    not offered yet are held until it is, and a late event of a call already counted
    counts it again, corrected. Both are bounded; what is older is not counted. An
    event read twice (the same call and seq: a replay, a second reader) counts once."""

    def __init__(self) -> None:
        self.open: dict[str, _Call] = {}
        self.buckets: dict[tuple[str, str, str], Bucket] = {}
        self.early: dict[str, list[Mapping[str, Any]]] = {}
        self.ended: dict[str, _Call] = {}
        self._held = 0

    def add(self, event: Mapping[str, Any]) -> None:
        """One event as read from the stream (its fields as the schema names them)."""
        kind = event.get("type")
        call_id = str(event.get("call_id", ""))
        if self._repeated(call_id, kind, event.get("seq")):
            return
        if kind == "call_offered":
            self.offer(call_id, str(event.get("region", "")), str(event.get("line", "")),
                       _hour(event))  # fmt: skip
            held = self.early.pop(call_id, None)
            if held:
                self._held -= len(held)
                for early in sorted(held, key=lambda e: _number(e.get("seq")) or 0.0):
                    self.add(early)
            return
        grade = ""
        if kind == "survey_result":
            grade = str(event.get("label") or event.get("grade_label") or "")
        if not self.fold(kind, call_id, event, grade) and kind in COUNTED:
            self._hold(call_id, event)

    def _repeated(self, call_id: str, kind: Any, seq: Any) -> bool:
        """Was this event counted already? Its call's other events are known by seq;
        a second call_offered would start the call over."""
        call = self.open.get(call_id) or self.ended.get(call_id)
        if call is None:
            return False
        if kind == "call_offered":
            return True
        if seq is None:
            return False
        key = str(seq)
        if key in call.seen:
            return True
        call.seen.add(key)
        return False

    def _hold(self, call_id: str, event: Mapping[str, Any]) -> None:
        if self._held >= EARLY_MAX:  # the oldest call's events: its start is not coming
            self._held -= len(self.early.pop(next(iter(self.early))))
        self.early.setdefault(call_id, []).append(event)
        self._held += 1

    def offer(self, call_id: str, region: str, line: str, hour: str) -> None:
        """A call starts: it will count in this region, line and local hour."""
        self.open[call_id] = _Call(region, line, hour)
        if len(self.open) > OPEN_MAX:  # the oldest: its end is not coming
            del self.open[next(iter(self.open))]

    def fold(self, kind: Any, call_id: str, event: Mapping[str, Any], grade: str = "") -> bool:
        """Any later event of an offered call; `grade` is a survey's grade label. False
        when the call is not known (not offered yet, or long counted)."""
        call = self.open.get(call_id)
        if call is None:
            counted = self.ended.get(call_id)
            if counted is None:
                return False
            call = counted  # a late event: count the call again, corrected
            counted_in = self.buckets[_bucket_key(call)]
            counted_in.remove(call)
            _apply(call, kind, event, grade)
            counted_in.add(call)
            return True
        if kind == "call_ended":
            call.fell_back = (_number(event.get("fallbacks")) or 0) > 0
            del self.open[call_id]
            key = _bucket_key(call)
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = Bucket()
            bucket.add(call)
            self.ended[call_id] = call
            if len(self.ended) > ENDED_MAX:
                del self.ended[next(iter(self.ended))]
            return True
        _apply(call, kind, event, grade)
        return True

    def extend(self, events: Iterable[Mapping[str, Any]]) -> Indicators:
        for event in events:
            self.add(event)
        return self

    def rows(
        self,
        by: tuple[str, ...] = ("region", "line", "hour"),
        region: str | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Figures grouped by any of region, line and hour, oldest hour first."""
        since_hour = since.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:00") if since else ""
        grouped: dict[tuple[str, ...], Bucket] = {}
        for (r, line, hour), bucket in self.buckets.items():
            if (region and r != region) or hour < since_hour:
                continue
            values = {"region": r, "line": line, "hour": hour}
            key = tuple(values[name] for name in by)
            grouped.setdefault(key, Bucket()).merge(bucket)
        return [
            {**dict(zip(by, key, strict=True)), **bucket.figures()}
            for key, bucket in sorted(grouped.items())
        ]


def _bucket_key(call: _Call) -> tuple[str, str, str]:
    return (call.region, call.line, call.hour)


def _apply(call: _Call, kind: Any, event: Mapping[str, Any], grade: str) -> None:
    """What one event (other than the call's start and end) says about its call."""
    if kind == "queued":
        call.asked = True
    elif kind == "answered" and not call.answered:
        call.answered = True
        call.wait_s = _number(event.get("total_wait_s", event.get("wait_s")))
    elif kind == "abandoned":
        call.abandoned = True
    elif kind == "transferred":
        call.transfers_ok += 1
    elif kind == "transfer_failed":
        call.transfers_failed += 1
    elif kind == "survey_result":
        call.grade = grade
    elif kind in ("callback_requested", "missed_call_callback_created"):
        call.callback = True


_this_hour: tuple[int, str] = (-1, "")


def local_hour(epoch_s: float) -> str:
    """The Asia/Shanghai hour of a moment, as buckets name it; worked out once an hour
    (the live indicators ask on every call)."""
    global _this_hour
    hour = int(epoch_s // 3600)
    cached = _this_hour
    if cached[0] != hour:
        cached = (hour, datetime.fromtimestamp(hour * 3600, SHANGHAI).strftime("%Y-%m-%d %H:00"))
        _this_hour = cached
    return cached[1]


def _hour(event: Mapping[str, Any]) -> str:
    stamp = event.get("ts_local") or event.get("ts_utc")
    try:
        return local_hour(datetime.fromisoformat(str(stamp)).timestamp())
    except (ValueError, OverflowError, OSError):
        return "unknown"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _percentile(bins: Counter[int], q: float) -> float | None:
    """Nearest-rank percentile over waits counted in tenths of a second: the smallest
    wait that q of the calls did not exceed."""
    total = sum(n for n in bins.values() if n > 0)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for tenths in sorted(bins):
        seen += max(0, bins[tenths])
        if seen >= rank:
            return round(tenths / 10, 2)
    return None


def render_table(rows: list[dict[str, Any]], by: tuple[str, ...]) -> str:
    """The rows as a fixed-width table for a terminal."""
    columns = [
        *by,
        "offered",
        "asked_for_person",
        "answered_by_person",
        "answer_rate_15s",
        "connection_rate",
        "abandonment_rate",
        "wait_mean_s",
        "wait_p90_s",
        "transfer_success_rate",
        "callbacks",
        "fell_back",
        "survey",
    ]
    heads = {
        "asked_for_person": "asked",
        "answered_by_person": "answered",
        "answer_rate_15s": "15s_rate",
        "connection_rate": "connected",
        "abandonment_rate": "abandoned",
        "wait_mean_s": "wait_mean",
        "wait_p90_s": "wait_p90",
        "transfer_success_rate": "transfer_ok",
        "survey": "survey 5/4/3/2/1",
        "hour": "hour (+08:00)",
    }

    def cell(row: dict[str, Any], name: str) -> str:
        value = row[name]
        if name == "survey":
            return "/".join(str(value[g]) for g in GRADES)
        if value is None:
            return "-"
        if "rate" in name:
            return f"{value:.1%}"
        return str(value)

    table = [[heads.get(c, c) for c in columns]] + [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in table
    )

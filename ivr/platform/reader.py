"""Reading call events back, for the platform and for tests.

A platform service reads a region's stream through a consumer group (default
`platform`, created by the publisher with the stream), acknowledges what it has
stored, and should treat `event_id` as the idempotence key: the publisher already
refuses duplicates, the key makes the consumer safe on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis

from ivr.events import CallEvent, EventError
from ivr.platform.callbacks import no_group_yet, stream_entries
from ivr.platform.layout import DEFAULT_PREFIX, EVENT_GROUP, events_stream

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(entries: list[tuple[Any, Any]]) -> list[tuple[str, CallEvent]]:
    out = []
    for entry_id, fields in entries:
        if not fields:
            continue
        try:
            out.append((_text(entry_id), CallEvent.from_fields(fields)))
        except EventError as exc:
            # Skip it rather than stop the reader; the entry stays for inspection.
            log.error("unreadable event entry %s: %s", _text(entry_id), exc.reason)
    return out


def read_group(
    r: redis.Redis,
    region: str,
    consumer: str,
    *,
    group: str = EVENT_GROUP,
    count: int = 100,
    block_ms: int | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> list[tuple[str, CallEvent]]:
    """New events of one region for `consumer` of `group`, as (entry id, event)."""
    try:
        response = r.xreadgroup(
            group, consumer, {events_stream(region, prefix): ">"}, count=count, block=block_ms
        )
    except redis.ResponseError as exc:
        if no_group_yet(exc):
            return []
        raise
    return _decode(stream_entries(response))


def ack(
    r: redis.Redis,
    region: str,
    entry_ids: list[str],
    *,
    group: str = EVENT_GROUP,
    prefix: str = DEFAULT_PREFIX,
) -> int:
    if not entry_ids:
        return 0
    return int(r.xack(events_stream(region, prefix), group, *entry_ids))


def read_all(
    r: redis.Redis, region: str, *, prefix: str = DEFAULT_PREFIX
) -> list[tuple[str, CallEvent]]:
    """Every event still kept for `region`, oldest first (XRANGE; for audits and tests)."""
    return _decode(r.xrange(events_stream(region, prefix)) or [])


def iter_events(
    r: redis.Redis,
    region: str,
    *,
    since_ms: int = 0,
    chunk: int = 5_000,
    prefix: str = DEFAULT_PREFIX,
) -> Iterator[CallEvent]:
    """Every event of one region from `since_ms` (stream ids are milliseconds), oldest
    first, read in chunks so a long stream never sits in memory whole."""
    stream = events_stream(region, prefix)
    start = f"{since_ms}-0"
    while True:
        entries = r.xrange(stream, min=start, max="+", count=chunk) or []
        for _, event in _decode(entries):
            yield event
        if len(entries) < chunk:
            return
        last = _text(entries[-1][0])
        start = f"({last}"  # exclusive: go on after the last entry read


def as_record(event: CallEvent) -> dict[str, Any]:
    """An event as one flat mapping: the common fields and its own."""
    return {
        "type": event.type,
        "call_id": event.call_id,
        "region": event.region,
        "line": event.line,
        "mode": event.mode,
        "ts_local": event.ts_local,
        **event.fields,
    }

"""Missed-call callback tasks (漏接电话回拨) on the `ivr:callbacks` stream.

The publisher writes one task per call that was abandoned in the queue or whose
caller asked to be called back; agents' desks take tasks through the consumer
group `agents`. XREADGROUP hands each new task to exactly one agent; a task an
agent took and never finished is taken over with XAUTOCLAIM once it has been idle
for `min_idle_ms`. Because a slow agent may still hold such a task, a desk calls
`owns_task()` just before dialling, and `ack_task()` only acknowledges a task the
agent still owns.

A task carries the caller's full number: calling back is its whole purpose.
Only the platform ACL user can read this stream, and a finished task is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from ivr.core.privacy import mask_number
from ivr.events import (
    ABANDONED,
    CALLBACK_TRIGGERS,
    SCHEMA_VERSION,
    CallEvent,
    callback_task_id,
)
from ivr.platform.layout import CALLBACK_GROUP, DEFAULT_PREFIX, callbacks_stream

TASK_FIELDS = (
    "task_id", "schema", "call_id", "event_id", "reason", "number", "number_masked",
    "line", "region", "mode", "wait_s", "callback_list", "ts_utc", "ts_local",
)  # fmt: skip


def wants_callback(event: CallEvent) -> bool:
    """Abandoned calls and callback requests from a known number get a task (the
    publisher keeps it to one per call, whichever trigger comes first)."""
    return event.type in CALLBACK_TRIGGERS and bool(event.caller)


def _reason(event: CallEvent) -> str:
    if event.type == ABANDONED:
        return "abandoned"
    return str(event.fields.get("reason", "requested"))


def task_fields(event: CallEvent) -> dict[str, str]:
    """The stream entry for the task `event` asks for (see `wants_callback`)."""
    # The whole wait, over every attempt: a desk calls the longest waits back first.
    wait = event.fields.get("total_wait_s", event.fields.get("wait_s", 0.0))
    return {
        "task_id": callback_task_id(event.call_id),
        "schema": str(SCHEMA_VERSION),
        "call_id": event.call_id,
        "event_id": event.event_id,
        "reason": _reason(event),
        "number": event.caller,
        # For lists and screens that need not show the whole number.
        "number_masked": mask_number(event.caller),
        "line": event.line,
        "region": event.region,
        "mode": event.mode,
        "wait_s": f"{float(wait):.3f}",
        "callback_list": str(event.fields.get("callback_list", "")),
        "ts_utc": event.ts_utc,
        "ts_local": event.ts_local,
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, repr=False)
class CallbackTask:
    entry_id: str
    task_id: str
    call_id: str
    reason: str
    number: str
    line: str
    region: str
    mode: str
    wait_s: float
    callback_list: str
    ts_utc: str
    ts_local: str

    @classmethod
    def from_entry(cls, entry_id: Any, raw: Mapping[Any, Any]) -> CallbackTask:
        data = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            entry_id=_text(entry_id),
            task_id=data["task_id"],
            call_id=data["call_id"],
            reason=data["reason"],
            number=data["number"],
            line=data["line"],
            region=data["region"],
            mode=data["mode"],
            wait_s=float(data["wait_s"]),
            callback_list=data.get("callback_list", ""),
            ts_utc=data["ts_utc"],
            ts_local=data["ts_local"],
        )

    def __repr__(self) -> str:
        return (
            f"CallbackTask({self.task_id!r}, entry={self.entry_id!r}, reason={self.reason!r}, "
            f"number={mask_number(self.number)!r}, line={self.line!r}, region={self.region!r})"
        )


def no_group_yet(exc: redis.ResponseError) -> bool:
    """The publisher creates a stream and its groups with the first entry; before
    that, reading through the group just finds nothing."""
    return str(exc).startswith("NOGROUP")


def stream_entries(response: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP replies differ by protocol and client options; flatten them."""
    if not response:
        return []
    if isinstance(response, Mapping):
        out: list[tuple[Any, Any]] = []
        for value in response.values():
            for part in value:
                # RESP3 wraps each stream's entries in one more list.
                if isinstance(part, list):
                    out.extend(part)
                else:
                    out.append(part)
        return out
    return [entry for _stream, entries in response for entry in entries]


def claim_tasks(
    r: redis.Redis,
    consumer: str,
    *,
    count: int = 1,
    block_ms: int | None = None,
    prefix: str = DEFAULT_PREFIX,
    group: str = CALLBACK_GROUP,
) -> list[CallbackTask]:
    """New tasks for `consumer`; no other consumer of the group gets them."""
    try:
        response = r.xreadgroup(
            group, consumer, {callbacks_stream(prefix): ">"}, count=count, block=block_ms
        )
    except redis.ResponseError as exc:
        if no_group_yet(exc):
            return []
        raise
    return [
        CallbackTask.from_entry(entry_id, fields)
        for entry_id, fields in stream_entries(response)
        if fields
    ]


def claim_stale_tasks(
    r: redis.Redis,
    consumer: str,
    *,
    min_idle_ms: int,
    count: int = 10,
    prefix: str = DEFAULT_PREFIX,
    group: str = CALLBACK_GROUP,
) -> list[CallbackTask]:
    """Take over tasks another agent took more than `min_idle_ms` ago and never acked."""
    stream = callbacks_stream(prefix)
    tasks: list[CallbackTask] = []
    start: Any = "0-0"
    while len(tasks) < count:
        try:
            reply = r.xautoclaim(stream, group, consumer, min_idle_ms, start,
                                 count=count - len(tasks))  # fmt: skip
        except redis.ResponseError as exc:
            if no_group_yet(exc):
                return tasks
            raise
        start, claimed = reply[0], reply[1]
        # Entries trimmed away by retention come back empty: nothing left to call.
        tasks.extend(
            CallbackTask.from_entry(entry_id, fields) for entry_id, fields in claimed if fields
        )
        if _text(start) == "0-0":
            break
    return tasks


def owns_task(
    r: redis.Redis,
    task: CallbackTask,
    consumer: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    group: str = CALLBACK_GROUP,
) -> bool:
    """Whether `consumer` still holds `task` (nobody took it over since)."""
    pending = r.xpending_range(
        callbacks_stream(prefix),
        group,
        min=task.entry_id,
        max=task.entry_id,
        count=1,
        consumername=consumer,
    )
    return bool(pending)


def ack_task(
    r: redis.Redis,
    task: CallbackTask,
    consumer: str,
    *,
    delete: bool = True,
    prefix: str = DEFAULT_PREFIX,
    group: str = CALLBACK_GROUP,
) -> bool:
    """Mark a task done if `consumer` still owns it; by default delete the entry too,
    so the caller's number leaves Redis as soon as it is no longer needed.
    """
    if not owns_task(r, task, consumer, prefix=prefix, group=group):
        return False
    stream = callbacks_stream(prefix)
    pipe = r.pipeline(transaction=True)
    pipe.xack(stream, group, task.entry_id)
    if delete:
        pipe.xdel(stream, task.entry_id)
    acked = pipe.execute()[0]
    return bool(acked)


def pending_count(
    r: redis.Redis, *, prefix: str = DEFAULT_PREFIX, group: str = CALLBACK_GROUP
) -> int:
    """Tasks taken by an agent and not finished yet."""
    try:
        summary = r.xpending(callbacks_stream(prefix), group)
    except redis.ResponseError as exc:
        if no_group_yet(exc):
            return 0
        raise
    return int(summary["pending"] if isinstance(summary, Mapping) else summary[0])

"""The bridge from a front-end's event sink to the Publisher.

The FastAGI front-end hands over a call's engine events a few at a time
(`call_events(call, events)`, after every instruction). This sink stamps each batch
with the time it was handed over and leaves the rest to the publisher's worker
(`Publisher.publish_later`): there it keeps one `EventRecorder` per call in progress,
so the sequence numbers run on across batches, adds the call's duration to
`call_ended`, and buffers the events. The call pays for a clock read and an append;
it never blocks, and nothing raises into it. A batch's events are the sink's once
handed over: the front-end must not change them afterwards.

A call's numbering lives in this process's memory: all of one call's events must
go through one sink (true for FastAGI, where a call is one connection).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from ivr.events import CALL_ENDED, CallEvent, CallInfo, EventError, EventRecorder
from ivr.platform.publisher import Publisher

log = logging.getLogger(__name__)


class FrontEndCall(Protocol):
    """What the front-ends pass: the call's id and caller, and its route."""

    @property
    def call_id(self) -> str: ...
    @property
    def caller(self) -> str | None: ...
    @property
    def route(self) -> Any: ...


@dataclass
class _Open:
    recorder: EventRecorder
    started: datetime


class PublishingSink:
    """`call_events(call, events)` for the front-ends, publishing through `publisher`.

    `max_call_s` bounds memory: a call that never reported `call_ended` (a crash
    on the switch side) is forgotten after that long (looked for once a minute at
    most, not on every hand-over).
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        clock: Callable[[], datetime] | None = None,
        max_call_s: float = 6 * 3600,
    ) -> None:
        self._publisher = publisher
        self._clock = clock or (lambda: datetime.now(UTC))
        self._max_call_s = max_call_s
        self._sweep_every = timedelta(seconds=min(60.0, max_call_s))
        self._next_sweep: datetime | None = None
        self._calls: dict[str, _Open] = {}
        self._lock = threading.Lock()

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def call_events(self, call: FrontEndCall, events: Sequence[Mapping[str, Any]]) -> None:
        if not events:
            return
        try:
            self._publisher.publish_later(partial(self._record, call, events, self._clock()))
        except Exception as exc:  # events must never cost a call
            log.error("call %s: events not published: %s", getattr(call, "call_id", "?"),
                      type(exc).__name__)  # fmt: skip

    def _record(
        self, call: FrontEndCall, events: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[CallEvent]:
        """The batch's events, numbered on from the call's earlier ones (on the
        publisher's worker, in the order the batches were handed over)."""
        with self._lock:
            entry = self._calls.get(call.call_id)
            if entry is None:
                info = CallInfo.from_route(call, call.route)
                entry = _Open(EventRecorder(info), now)
                self._calls[call.call_id] = entry
            due = self._next_sweep
            # (a clock that went back a long way sweeps now rather than much later)
            if due is None or now >= due or now < due - 2 * self._sweep_every:
                self._next_sweep = now + self._sweep_every
                self._forget_stale(now)
        recorder = entry.recorder
        made = []
        try:
            for raw in events:
                extra: dict[str, Any] = {}
                if raw.get("type") == CALL_ENDED and "duration_s" not in raw:
                    extra["duration_s"] = max(0.0, (now - entry.started).total_seconds())
                try:
                    made.append(recorder.record_engine(raw, now, **extra))
                except EventError as exc:
                    self._publisher.refuse(
                        exc.reason, call_id=call.call_id, event_type=raw.get("type")
                    )
        except Exception as exc:  # a bug of ours: the events made so far still go
            log.error("call %s: events not published: %s", call.call_id, type(exc).__name__)
        if recorder.ended:
            with self._lock:
                self._calls.pop(call.call_id, None)
        return made

    def _forget_stale(self, now: datetime) -> None:
        stale = [
            call_id
            for call_id, entry in self._calls.items()
            if (now - entry.started).total_seconds() > self._max_call_s
        ]
        for call_id in stale:
            del self._calls[call_id]
            log.warning("call %s never ended; its event numbering is forgotten", call_id)

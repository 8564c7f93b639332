"""The bridge from a front-end's event sink to the Publisher.

The FastAGI and Twilio front-ends hand over a call's engine events a few at a time
(`call_events(call, events)`, after every instruction). This sink keeps one
`EventRecorder` per call in progress, so the sequence numbers run on across those
batches, stamps each event with the time it was handed over, adds the call's
duration to `call_ended`, and publishes. It never raises and never blocks.

A call's numbering lives in this process's memory: all of one call's events must
go through one sink (true for FastAGI, where a call is one connection).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ivr.events import CALL_ENDED, CallInfo, EventError, EventRecorder
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
    on the switch side) is forgotten after that long.
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
        self._calls: dict[str, _Open] = {}
        self._lock = threading.Lock()

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def call_events(self, call: FrontEndCall, events: Sequence[Mapping[str, Any]]) -> None:
        try:
            self._record(call, events)
        except Exception as exc:  # events must never cost a call
            log.error("call %s: events not published: %s", getattr(call, "call_id", "?"),
                      type(exc).__name__)  # fmt: skip

    def _record(self, call: FrontEndCall, events: Sequence[Mapping[str, Any]]) -> None:
        now = self._clock()
        with self._lock:
            entry = self._calls.get(call.call_id)
            if entry is None:
                info = CallInfo.from_route(call, call.route)
                entry = _Open(EventRecorder(info, self._publisher.publish), now)
                self._calls[call.call_id] = entry
            self._forget_stale(now)
        recorder = entry.recorder
        for raw in events:
            extra: dict[str, Any] = {}
            if raw.get("type") == CALL_ENDED and "duration_s" not in raw:
                extra["duration_s"] = max(0.0, (now - entry.started).total_seconds())
            try:
                recorder.record_engine(raw, now, **extra)
            except EventError as exc:
                self._publisher.refuse(exc.reason, call_id=call.call_id, event_type=raw.get("type"))
        if recorder.ended:
            with self._lock:
                self._calls.pop(call.call_id, None)

    def _forget_stale(self, now: datetime) -> None:
        stale = [
            call_id
            for call_id, entry in self._calls.items()
            if (now - entry.started).total_seconds() > self._max_call_s
        ]
        for call_id in stale:
            del self._calls[call_id]
            log.warning("call %s never ended; its event numbering is forgotten", call_id)

"""Twilio calls on the platform's event streams, numbered from the call's own state.

A Twilio call is many webhooks, and under gunicorn each may reach another worker. The
platform's `PublishingSink` numbers a call's events in the memory of one process, so a
second worker would start again at 1 and the publisher would drop those events as
duplicates. `SequencedSink` numbers them from the count kept in the call's state
(`TwilioCall.seq_base`), which every worker reads from the same store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ivr.core.routing import Route
from ivr.events import CALL_ENDED, CallEvent, CallInfo, EventError, NoEvents, from_engine
from ivr.platform.publisher import Publisher

__all__ = ["NoEvents", "SequencedSink", "TwilioCall"]  # NoEvents: ivr.events' own

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TwilioCall:
    """What every event of one Twilio call carries (the shape every sink takes)."""

    call_id: str
    caller: str | None
    route: Route
    front_end: str = "twilio"
    seq_base: int = 0  # events of this call already handed to the sinks
    started_at: float = 0.0  # epoch seconds the call came in


class SequencedSink:
    """`call_events(call, events)` publishing through ``publisher``, numbering each
    event ``call.seq_base + n``; never raises, never blocks.

    The webhook only stamps the batch with the time; the publisher's worker builds the
    events (`Publisher.publish_later`), a few dozen batches at a time, off the request.
    """

    def __init__(self, publisher: Publisher, *, clock: Callable[[], datetime] | None = None):
        self._publisher = publisher
        self._clock = clock or (lambda: datetime.now(UTC))

    def call_events(self, call: Any, events: Sequence[Mapping[str, Any]]) -> None:
        if not events:
            return
        try:
            self._publisher.publish_later(partial(self._build, call, events, self._clock()))
        except Exception as exc:  # events must never cost a call
            log.error("call %s: events not published: %s", getattr(call, "call_id", "?"),
                      type(exc).__name__)  # fmt: skip

    def _build(
        self, call: Any, events: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[CallEvent]:
        info = CallInfo.from_route(call, call.route)
        seq = int(getattr(call, "seq_base", 0))
        started = getattr(call, "started_at", 0.0)
        made = []
        for raw in events:
            # The blueprint counted every event into the next seq_base, so a refused one
            # leaves a gap rather than shifting the numbers of the next webhook's events.
            seq += 1
            try:
                if raw.get("type") == CALL_ENDED and "duration_s" not in raw and started:
                    duration = max(0.0, now.timestamp() - started)
                    made.append(from_engine(raw, info, seq, now, duration_s=duration))
                else:
                    made.append(from_engine(raw, info, seq, now))
            except EventError as exc:
                self._publisher.refuse(exc.reason, call_id=call.call_id, event_type=raw.get("type"))
        return made

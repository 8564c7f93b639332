"""Front-end sink: a call walked by the real engine, its events handed over in
batches as the FastAGI front-end does, arrive numbered, complete and in order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from ivr.core.engine import CallSession, CollectDigits, Connect, ConnectResult, HangUp
from ivr.core.routing import Call, Hotline, Route
from ivr.events import CallEvent
from ivr.platform.callbacks import claim_tasks
from ivr.platform.layout import events_stream
from ivr.platform.publisher import Publisher
from ivr.platform.sink import PublishingSink


@dataclass(frozen=True)
class FrontEndInfo:
    """The shape the FastAGI front-end hands to its sink."""

    call_id: str
    caller: str | None
    route: Route


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 6, 3, 1, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=2)
        return self.now


def walk(
    hotline: Hotline, sink: PublishingSink, call_id: str, dialed: str, *, hang_up: bool
) -> list[dict[str, Any]]:
    call = Call(dialed=dialed, now=datetime(2024, 6, 3, 1, 30, tzinfo=UTC),
                caller="+86 139 1234 5678", call_id=call_id)  # fmt: skip
    info = FrontEndInfo(call.call_id, call.caller, hotline.route(call))
    session, instruction = CallSession.start(hotline, info.route)
    handed: list[dict[str, Any]] = []

    def publish() -> None:
        batch = session.take_events()
        handed.extend(batch)
        sink.call_events(info, batch)

    while not isinstance(instruction, HangUp):
        publish()
        if hang_up and isinstance(instruction, Connect):  # tired of waiting in the queue
            session.caller_hung_up(answered=False, wait_s=30.0)
            break
        result: Any = None
        if isinstance(instruction, CollectDigits):
            result = "1"
        elif isinstance(instruction, Connect):
            result = ConnectResult("answered", wait_s=5.0)
        instruction = session.resume(result)
    publish()
    return handed


@pytest.mark.parametrize(("dialed", "hang_up"), [("12358", False), ("12345", True)])
def test_engine_calls_arrive_through_the_sink(
    hotline: Hotline,
    make_publisher: Callable[..., Publisher],
    platform: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    dialed: str,
    hang_up: bool,
) -> None:
    pub = make_publisher()
    sink = PublishingSink(pub, clock=Clock())
    with caplog.at_level(logging.WARNING):
        handed = walk(hotline, sink, "1717378200.99", dialed, hang_up=hang_up)
    assert pub.flush(5)

    assert sink.open_calls == 0  # forgotten once ended
    assert pub.stats()["refused"] == 0, caplog.text
    region = hotline.route(Call(dialed=dialed, now=datetime.now(UTC))).region
    got = [CallEvent.from_fields(f) for _, f in platform.xrange(events_stream(region))]
    assert [e.type for e in got] == [raw["type"] for raw in handed]
    assert [e.seq for e in got] == list(range(1, len(handed) + 1))
    assert got[-1].type == "call_ended" and got[-1].fields["duration_s"] > 0
    assert all(e.caller == "861****5678" or e.caller == "139****5678" for e in got)
    tasks = claim_tasks(platform, "desk-1", count=5)
    if not hang_up:
        assert tasks == []
    else:  # hung up while queued: abandoned, and a task with the full number
        assert "abandoned" in [e.type for e in got]
        assert [t.number for t in tasks] == ["+8613912345678"]


def test_a_bad_engine_event_is_refused_and_counted(
    make_publisher: Callable[..., Publisher],
) -> None:
    pub = make_publisher()
    sink = PublishingSink(pub, clock=Clock())
    route = Route(line="12345", mode="main", region="fuzhou", region_source="trunk", flow="main",
                  known=True)  # type: ignore[arg-type]  # fmt: skip
    info = FrontEndInfo("1717378200.5", "13912345678", route)
    sink.call_events(info, [{"type": "call_offered"}, {"type": "survey_result", "grade": "好"},
                            {"type": "keys_pressed", "keys": "12"}])  # fmt: skip
    assert pub.flush(5)
    stats = pub.stats()
    assert stats["refused"] == 1 and stats["published"] == 2
    assert sink.open_calls == 1

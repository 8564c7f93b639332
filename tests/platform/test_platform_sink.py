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
from ivr.twilio.events import SequencedSink, TwilioCall


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


def caller_and_seat(instruction: Any) -> Any:
    """What the caller presses (1) and the queue reports (a seat answered in 5 s)."""
    if isinstance(instruction, CollectDigits):
        return "1"
    if isinstance(instruction, Connect):
        return ConnectResult("answered", wait_s=5.0)
    return None


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
        instruction = session.resume(caller_and_seat(instruction))
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


def test_twilio_batches_arrive_numbered_from_the_call_state(
    hotline: Hotline,
    make_publisher: Callable[..., Publisher],
    platform: redis.Redis,
) -> None:
    """A Twilio call's webhooks may reach two workers: each numbers its batch on from the
    count kept in the call's state, the publisher's worker builds it, and an event that
    cannot be built leaves a gap rather than renumbering the ones after it."""
    pub = make_publisher()
    clock = Clock()
    call = Call(dialed="12345", now=datetime(2024, 6, 3, 1, 30, tzinfo=UTC),
                caller="+8613912345678", call_id="CA-two-workers")  # fmt: skip
    route = hotline.route(call)
    started = clock().timestamp()
    session, instruction = CallSession.start(hotline, route)
    first = session.take_events()
    SequencedSink(pub, clock=clock).call_events(
        TwilioCall(call.call_id, call.caller, route, seq_base=0, started_at=started), first
    )
    while not isinstance(instruction, HangUp):
        instruction = session.resume(caller_and_seat(instruction))
    second = [{"type": "no_such_event"}, *session.take_events()]
    SequencedSink(pub, clock=clock).call_events(  # the other worker
        TwilioCall(call.call_id, call.caller, route, seq_base=len(first), started_at=started),
        second,
    )
    assert pub.flush(5)

    got = [CallEvent.from_fields(f) for _, f in platform.xrange(events_stream(route.region))]
    n = len(first)
    assert [e.seq for e in got] == [*range(1, n + 1), *range(n + 2, n + len(second) + 1)]
    assert pub.stats()["refused"] == 1
    assert {e.call_id for e in got} == {"CA-two-workers"}
    assert got[-1].type == "call_ended" and got[-1].fields["duration_s"] > 0


def test_a_batch_refused_after_close_does_not_cost_one_handed_before_it(
    hotline: Hotline, make_publisher: Callable[..., Publisher], platform: redis.Redis
) -> None:
    # The refused batch was built at once on the caller's thread, while the worker
    # had not yet built the call's batch handed before close(): its call_ended made
    # the sink forget the call, and that batch was then numbered from 1 again and
    # thrown away as a duplicate of the call's first event.
    import threading
    import time

    pub = make_publisher(linger_s=0.0)
    sink = PublishingSink(pub)
    route = hotline.route(Call("12345", datetime(2024, 6, 3, 1, 30, tzinfo=UTC)))
    call = FrontEndInfo("1717378200.77", "13912345678", route)
    sink.call_events(call, [{"type": "call_offered", "known": True, "region_source": "trunk"}])
    assert pub.flush(5)
    release, building = threading.Event(), threading.Event()

    def slow_batch() -> list[CallEvent]:  # another call's batch, slow to build
        building.set()
        release.wait(5)
        return []

    pub.publish_later(slow_batch)
    assert building.wait(5)
    sink.call_events(call, [{"type": "keys_pressed", "keys": "1", "step": "greeting"}])
    closing = threading.Thread(target=pub.close, args=(5,))
    closing.start()
    deadline = time.monotonic() + 5
    while not pub._closed and time.monotonic() < deadline:  # close() has begun
        time.sleep(0.01)
    threading.Timer(0.2, release.set).start()  # the worker goes on a moment later
    ended = {"type": "call_ended", "answered": False, "target_kind": "", "target": "",
             "fallbacks": 0, "prompts": 0}  # fmt: skip
    sink.call_events(call, [ended])  # refused: the publisher is closed
    closing.join(10)
    stream = [(f["seq"], f["type"]) for _, f in platform.xrange(events_stream(route.region))]
    assert stream == [("1", "call_offered"), ("2", "keys_pressed")]
    assert pub.stats()["refused"] == 1

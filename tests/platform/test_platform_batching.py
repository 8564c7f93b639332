"""Batching against a real redis-server: the worker lingers to gather a batch, sends
it with one script call, and a batch mixing many calls keeps every call's order,
across a lost reply and an outage alike."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from platform_support import (
    WRITER_PASSWORD,
    RedisServer,
    call_info,
    simulate_call,
    wait_for,
)
from test_platform_publisher import OUTCOMES, TimedSink, expected, read_calls, run_calls

from ivr.core.routing import Route
from ivr.events import CallEvent
from ivr.platform.acl import WRITER_USER
from ivr.platform.publisher import Publisher
from ivr.platform.sink import PublishingSink

MakePublisher = Callable[..., Publisher]


def interleaved(calls: range) -> list[CallEvent]:
    """The events of several calls, taken in turn: one batch then mixes them all."""
    per_call = [simulate_call(call_info(n), outcome=OUTCOMES[n % 4]) for n in calls]
    return [e for group in itertools.zip_longest(*per_call) for e in group if e is not None]


def script_calls(server: RedisServer) -> int:
    stats = server.admin().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_batch_waits_for_the_linger_and_is_one_script_call(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer
) -> None:
    pub = make_publisher(linger_s=30.0, batch_size=1000)
    warm_up = simulate_call(call_info(99))
    assert pub.publish_many(warm_up) == len(warm_up)
    assert pub.flush(5)  # loads the script, too
    before = script_calls(server)

    events = interleaved(range(12))
    for event in events:
        assert pub.publish(event)
    time.sleep(0.3)
    lingering = pub.stats()
    assert lingering["published"] == len(warm_up)  # nothing sent while lingering
    assert lingering["queue_depth"] == len(events)
    assert pub.flush(5)  # flush() does not wait for the linger

    assert script_calls(server) == before + 1  # 12 calls, 3 regions: one round trip
    assert read_calls(platform) == expected(warm_up + events)
    stats = pub.stats()
    assert stats["published"] == stats["buffered"] == len(warm_up) + len(events)
    assert stats["callback_tasks"] == 6


def test_a_full_batch_does_not_wait_for_the_linger(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher(linger_s=30.0, batch_size=10)
    events = interleaved(range(4))
    for event in events[:10]:
        pub.publish(event)
    assert wait_for(lambda: pub.stats()["published"] == 10, timeout=3)
    for event in events[10:13]:
        pub.publish(event)
    time.sleep(0.3)
    assert pub.stats()["published"] == 10  # three wait for the linger or a flush
    for event in events[13:]:
        pub.publish(event)
    assert pub.flush(5)
    assert read_calls(platform) == expected(events)


def test_without_lingering_each_event_goes_at_once(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher(linger_s=0.0)
    events = simulate_call(call_info(7))
    for n, event in enumerate(events, 1):
        pub.publish(event)
        assert wait_for(lambda n=n: pub.stats()["published"] == n, timeout=3)
    assert read_calls(platform) == expected(events)


def test_a_lost_reply_is_sent_again_and_written_once(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher(linger_s=30.0, batch_size=1000)
    real = pub._script
    lost: list[Any] = []

    def reply_lost_once(*args: Any, **kwargs: Any) -> Any:
        reply = real(*args, **kwargs)  # Redis ran the script...
        if not lost:
            lost.append(reply)
            raise redis.ConnectionError("connection reset")  # ...and the reply was lost
        return reply

    pub._script = reply_lost_once  # type: ignore[method-assign]
    events = interleaved(range(8))
    assert pub.publish_many(events) == len(events)
    assert pub.flush(5)

    assert lost and len(lost[0]) == len(events)
    assert read_calls(platform) == expected(events)  # each once, each call in order
    stats = pub.stats()
    assert stats["published"] == 0 and stats["duplicates"] == len(events)
    assert stats["spooled"] == stats["replayed"] == len(events)
    assert stats["outages"] == 1 and stats["dropped"] == 0
    assert platform.xlen("ivr:callbacks") == 4


def test_big_batches_keep_each_calls_order_across_an_outage(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer
) -> None:
    pub = make_publisher(linger_s=0.1, batch_size=500)
    sink = TimedSink(pub)
    done = threading.Event()

    def outage() -> None:
        while len(sink.events) < 40:
            time.sleep(0.001)
        server.kill()
        time.sleep(0.3)
        server.start()
        done.set()

    t = threading.Thread(target=outage)
    t.start()
    run_calls(sink, range(32), threads=8, between=lambda: time.sleep(0.01))
    t.join()
    assert done.is_set()
    assert pub.flush(10)

    assert read_calls(platform) == expected(sink.events)
    stats = pub.stats()
    assert stats["published"] + stats["duplicates"] == len(sink.events)
    assert stats["spooled"] > 0 and stats["replayed"] > 0
    assert stats["dropped"] == 0 and stats["outages"] == 1
    assert sink.worst < 0.1


def test_publish_many_refuses_the_bad_and_keeps_the_order(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher()
    good = simulate_call(call_info(2))
    bad = dataclasses.replace(good[2], fields={"keys": "x"})
    mixed: list[Any] = [*good[:2], bad, "nonsense", *good[2:]]
    assert pub.publish_many(mixed) == len(good)
    assert pub.flush(5)
    assert pub.stats()["refused"] == 2
    assert read_calls(platform) == expected(good)


class Broken(CallEvent):
    def validate(self) -> None:
        raise RuntimeError("a bug of ours")


def test_publish_many_loses_only_the_event_that_breaks(
    server: RedisServer, platform: redis.Redis, tmp_path: Path
) -> None:
    pub = Publisher(server.url(WRITER_USER, WRITER_PASSWORD), tmp_path / "spool")
    try:
        good = simulate_call(call_info(5))
        broken = Broken(**{f.name: getattr(good[1], f.name) for f in dataclasses.fields(good[1])})
        assert pub.publish_many([*good[:3], broken, *good[3:]]) == len(good)
        assert pub.flush(5)
        stats = pub.stats()
        assert stats["dropped"] == 1 and stats["published"] == len(good)
        assert read_calls(platform) == expected(good)
    finally:
        pub.close(5)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 6, 3, 1, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass(frozen=True)
class FrontEndInfo:
    call_id: str
    caller: str | None
    route: Route


def test_a_call_that_never_ends_is_still_forgotten(make_publisher: MakePublisher) -> None:
    pub = make_publisher()
    clock = Clock()
    sink = PublishingSink(pub, clock=clock, max_call_s=10)
    route = Route(line="12345", mode="main", region="fuzhou", region_source="trunk", flow="main",
                  known=True)  # type: ignore[arg-type]  # fmt: skip

    def offer(n: int) -> None:
        sink.call_events(FrontEndInfo(f"1717378200.{n}", "13912345678", route),
                         [{"type": "call_offered"}])  # fmt: skip
        assert pub.flush(5)  # the worker builds the events, and counts the calls

    offer(1)
    clock.now += timedelta(seconds=5)
    offer(2)
    assert sink.open_calls == 2  # nobody is stale yet
    clock.now += timedelta(seconds=6)
    offer(3)
    assert sink.open_calls == 2  # the first, 11 s old, is forgotten
    clock.now += timedelta(seconds=9)
    offer(4)
    assert sink.open_calls == 3  # the second is 15 s old, but the next sweep is not due
    clock.now += timedelta(seconds=1)
    offer(5)
    assert sink.open_calls == 3  # swept: the second went, the fifth came
    assert pub.flush(5) and pub.stats()["published"] == 5


# -- publish_later: a front-end's batches, built by the worker ----------------------------


def test_handed_batches_are_built_on_the_worker_in_the_order_handed(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher(linger_s=30.0, batch_size=1000)
    events = interleaved(range(6))
    built_on: set[str] = set()

    def batch(part: list[CallEvent]) -> Callable[[], list[CallEvent]]:
        def build() -> list[CallEvent]:
            built_on.add(threading.current_thread().name)
            return part

        return build

    for n in range(0, len(events), 4):
        pub.publish_later(batch(events[n : n + 4]))
    time.sleep(0.2)
    assert built_on == set()  # nothing built on the caller's time, nor before the linger
    handed = len(range(0, len(events), 4))
    assert pub.pending() == handed and pub.stats()["handed_over"] == handed
    assert pub.flush(5)  # flush() has the worker build and send them at once
    assert built_on == {"ivr-event-publisher"}
    assert read_calls(platform) == expected(events)


def test_batches_handed_before_close_are_delivered_and_after_it_refused(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher(linger_s=30.0)
    before, after = simulate_call(call_info(1)), simulate_call(call_info(2))
    pub.publish_later(lambda: before)
    assert pub.close(5)  # the worker builds and sends what was handed before
    assert read_calls(platform) == expected(before)
    pub.publish_later(lambda: after)
    stats = pub.stats()
    assert stats["published"] == len(before)
    assert stats["refused"] == len(after) and stats["dropped"] == 0


def test_a_batch_after_close_leaves_those_handed_before_it_to_the_worker(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer
) -> None:
    # The worker is stuck on a hung Redis with batch A still queued behind it when
    # close() begins; a batch C handed after that is refused, and A must not be
    # refused with it: A was handed before close.
    pub = make_publisher(linger_s=0.0)
    x, a, c = (simulate_call(call_info(n)) for n in (11, 12, 13))
    server.pause()
    try:
        pub.publish_later(lambda: x)
        deadline = time.monotonic() + 5
        while pub.stats()["handed_over"]:  # the worker took x and waits on Redis
            assert time.monotonic() < deadline
            time.sleep(0.005)
        pub.publish_later(lambda: a)
        closing = threading.Thread(target=pub.close, args=(10,))
        closing.start()
        while not pub._closed:
            time.sleep(0.001)
        pub.publish_later(lambda: c)
    finally:
        server.resume()
    closing.join(15)
    assert read_calls(platform) == {**expected(x), **expected(a)}
    stats = pub.stats()
    assert stats["refused"] == len(c) and stats["dropped"] == 0


def test_a_worker_far_behind_has_the_caller_build_the_oldest_first(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    # A queue of 3 batches with a worker lingering for long: the fourth hand-over
    # finds it full, builds the three oldest itself and queues its own; the worker
    # builds the rest. The call's events keep their order on the stream.
    pub = make_publisher(linger_s=30.0, buffer_size=3, batch_size=1000)
    events = simulate_call(call_info(7), outcome=OUTCOMES[1])
    assert len(events) >= 6
    parts = [events[:1], events[1:2], events[2:3], events[3:4], events[4:5], events[5:]]
    built_on: list[str] = []
    for part in parts:

        def build(part: list[CallEvent] = part) -> list[CallEvent]:
            built_on.append(threading.current_thread().name)
            return part

        pub.publish_later(build)
    here = threading.current_thread().name
    assert built_on == [here] * 3 and pub.stats()["handed_over"] == 3
    assert pub.flush(5)
    assert built_on == [here] * 3 + ["ivr-event-publisher"] * 3
    assert read_calls(platform) == expected(events)
    assert pub.stats()["dropped"] == 0


def test_a_failing_batch_is_logged_and_counted_and_the_rest_go_on(
    server: RedisServer, platform: redis.Redis, tmp_path: Path, caplog: Any
) -> None:
    pub = Publisher(server.url(WRITER_USER, WRITER_PASSWORD), tmp_path / "spool")
    events = simulate_call(call_info(3))

    def broken() -> list[CallEvent]:
        raise RuntimeError("a bug in a sink")

    try:
        pub.publish_later(broken)
        pub.publish_later(lambda: events)
        assert pub.flush(5)
        assert read_calls(platform) == expected(events)
        assert "could not be built: RuntimeError" in caplog.text
        assert pub.stats()["dropped"] == 1  # a loss, and said so
    finally:
        pub.close(5)

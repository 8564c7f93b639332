"""The publisher against a real redis-server: order, idempotence, outages, spool."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from platform_support import (
    REGIONS,
    WRITER_PASSWORD,
    RedisServer,
    call_info,
    simulate_call,
    wait_for,
)
from prometheus_client import CollectorRegistry, generate_latest

from ivr.events import CallEvent, EventError
from ivr.platform import reader
from ivr.platform.acl import WRITER_USER
from ivr.platform.layout import Retention, callbacks_stream, events_stream, seen_key
from ivr.platform.publisher import Publisher
from ivr.platform.spool import Spool

OUTCOMES = ("answered", "abandoned", "callback", "transfer_failed")
MakePublisher = Callable[..., Publisher]


def read_calls(r: redis.Redis) -> dict[str, list[dict[str, str]]]:
    """Every event entry of every region, grouped by call, in stream order."""
    calls: dict[str, list[dict[str, str]]] = defaultdict(list)
    for region in REGIONS:
        for _entry_id, fields in r.xrange(events_stream(region)):
            calls[fields["call_id"]].append(fields)
    return dict(calls)


def expected(events: list[CallEvent], *, full: bool = False) -> dict[str, list[dict[str, str]]]:
    calls: dict[str, list[dict[str, str]]] = defaultdict(list)
    for event in events:
        calls[event.call_id].append(event.to_fields(full_numbers=full))
    return dict(calls)


class TimedSink:
    """Publishes and remembers how long the slowest publish() took."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.worst = 0.0
        self.events: list[CallEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: CallEvent) -> None:
        start = time.perf_counter()
        accepted = self.pub.publish(event)
        took = time.perf_counter() - start
        with self._lock:
            assert accepted
            self.worst = max(self.worst, took)
            self.events.append(event)


def run_calls(
    sink: Callable[[CallEvent], object],
    numbers: range,
    *,
    threads: int = 4,
    between: Callable[[], None] | None = None,
) -> None:
    """Several calls at once, one thread per call as a front-end would run them."""
    pending = list(numbers)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                n = pending.pop(0)
            simulate_call(call_info(n), sink, outcome=OUTCOMES[n % 4], between=between)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def outage_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage().startswith("Redis unavailable")
    ]


def test_events_of_calls_arrive_complete_and_in_order(
    make_publisher: MakePublisher, platform: redis.Redis, no_personal_data: list[str]
) -> None:
    pub = make_publisher()
    sink = TimedSink(pub)
    run_calls(sink, range(12))
    assert pub.flush(5)

    assert read_calls(platform) == expected(sink.events)
    stats = pub.stats()
    assert stats["published"] == stats["buffered"] == len(sink.events) == 12 * 7 - 3 * 1
    assert stats["duplicates"] == stats["spooled"] == stats["refused"] == stats["dropped"] == 0
    # The platform reads through its consumer group, decoding every entry.
    got = reader.read_group(platform, "xiamen", "platform-1", count=1000)
    assert [e for _, e in got] == [
        CallEvent.from_fields(e.to_fields()) for e in sink.events if e.region == "xiamen"
    ]
    assert reader.ack(platform, "xiamen", [entry_id for entry_id, _ in got]) == len(got)
    # Callers' numbers are masked on the event streams by default...
    no_personal_data.extend(e.caller for e in sink.events)
    for events in read_calls(platform).values():
        for fields in events:
            assert fields["caller"].startswith("139****")
    # ...and in full on the callback tasks: one per abandoned or callback call.
    tasks = platform.xrange(callbacks_stream())
    assert sorted(f["call_id"] for _, f in tasks) == sorted(
        call_info(n).call_id for n in range(12) if OUTCOMES[n % 4] in ("abandoned", "callback")
    )
    assert all(f["number"] == call_info(int(f["call_id"].split(".")[1])).caller for _, f in tasks)
    assert stats["callback_tasks"] == len(tasks) == 6


def test_full_numbers_when_allowed(make_publisher: MakePublisher, platform: redis.Redis) -> None:
    pub = make_publisher(full_numbers=True)
    events = simulate_call(call_info(3), pub.publish)
    assert pub.flush(5)
    assert read_calls(platform) == expected(events, full=True)
    assert {f["caller"] for f in read_calls(platform)[events[0].call_id]} == {"13912340003"}


def test_malformed_event_is_refused_and_nothing_is_written(
    make_publisher: MakePublisher,
    platform: redis.Redis,
    server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pub = make_publisher()
    good = simulate_call(call_info(1))
    bad_call = call_info(2)
    bad = CallEvent.make("abandoned", bad_call, 1, good[0].ts, wait_s=3.0)
    # a front-end's own event, built without make(): the boundary must check it
    bad = dataclasses.replace(bad, fields={"wait_s": "three seconds"})
    with caplog.at_level(logging.WARNING, logger="ivr.platform.publisher"):
        assert pub.publish(bad) is False
        assert pub.publish("call_offered") is False  # type: ignore[arg-type]
        for event in good:
            assert pub.publish(event)
    assert pub.flush(5)

    messages = [r.getMessage() for r in caplog.records]
    assert any("field wait_s must be float, not str" in m and bad.call_id in m for m in messages)
    assert any("not a CallEvent" in m for m in messages)
    assert not any("13912340002" in m for m in messages)
    assert pub.stats()["refused"] == 2
    assert read_calls(platform) == expected(good)
    admin = server.admin()
    assert admin.exists(seen_key(bad.call_id)) == 0
    assert admin.xlen(callbacks_stream()) == 0  # the refused abandon made no task either


def test_text_utf8_cannot_carry_is_refused_alone(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    # A lone surrogate passed the schema (any text is a target) and then failed the
    # encoding of the whole batch it went out in: 14 good events of two other calls
    # were lost with it, and it counted as a Redis outage.
    pub = make_publisher(linger_s=30.0, batch_size=1000)
    good = simulate_call(call_info(1)) + simulate_call(call_info(2))
    odd = call_info(4)
    fields = {"target_kind": "seats", "target": "seat-\udc80", "via": "queue"}
    with pytest.raises(EventError, match="field target is not text that UTF-8 can carry"):
        CallEvent.make("queued", odd, 4, good[0].ts, **fields)
    built = CallEvent.make("queued", odd, 4, good[0].ts, **{**fields, "target": "福州12345"})
    bad = dataclasses.replace(built, fields=fields)  # a front-end's own, unchecked
    assert pub.publish(bad) is False
    for event in good:
        assert pub.publish(event)
    assert pub.publish(built)  # text beyond ASCII is fine
    assert pub.flush(5)
    stats = pub.stats()
    assert (stats["refused"], stats["dropped"], stats["outages"]) == (1, 0, 0)
    assert read_calls(platform) == expected([*good, built])


def test_a_key_of_another_type_holds_up_only_its_own_call(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer
) -> None:
    # Written by hand or by another program: the batch script refuses the whole batch
    # when a key it writes holds another type. That was taken for an outage, and the
    # same batch at the head of the backlog failed for good, with every call behind it.
    pub = make_publisher()
    stuck = simulate_call(call_info(1))
    server.admin().set(seen_key(stuck[0].call_id), "x")
    others = [e for n in range(2, 6) for e in simulate_call(call_info(n))]
    assert pub.publish_many([*stuck, *others]) == len(stuck) + len(others)
    assert pub.flush(5)
    assert read_calls(platform) == expected(others)
    stats = pub.stats()
    assert (stats["set_aside"], stats["dropped"], stats["outages"]) == (len(stuck), 0, 0)
    kept = (pub.spool_dir / "set-aside.jsonl").read_text().splitlines()
    assert [json.loads(line)["m"] for line in kept] == [str(e.seq) for e in stuck]
    assert (pub.spool_dir / "set-aside.jsonl").stat().st_mode & 0o777 == 0o600
    # The operator mends the key and hands the file back, as docs/events.md says.
    pub.close(timeout=5)
    server.admin().delete(seen_key(stuck[0].call_id))
    (pub.spool_dir / "set-aside.jsonl").rename(pub.spool_dir / "spill-0-manual.jsonl")
    assert make_publisher().flush(5)
    assert read_calls(platform) == expected([*stuck, *others])


def test_a_callbacks_stream_of_another_type_is_an_outage_for_all(
    make_publisher: MakePublisher,
    platform: redis.Redis,
    server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No one call's key: nothing to set aside, and every event waits for it to be mended.
    pub = make_publisher()
    server.admin().set(callbacks_stream(), "x")
    events = simulate_call(call_info(1))
    assert pub.publish_many(events) == len(events)
    assert wait_for(lambda: pub.stats()["backlog_disk"] == len(events))  # waiting, all
    assert pub.stats()["outages"] == 1 and pub.stats()["set_aside"] == 0
    server.admin().delete(callbacks_stream())
    assert pub.flush(5)
    assert read_calls(platform) == expected(events)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("Redis unavailable (ResponseError")


def test_publishing_twice_writes_once(make_publisher: MakePublisher, platform: redis.Redis) -> None:
    pub = make_publisher()
    events = simulate_call(call_info(5), outcome="abandoned")
    for event in events + events[2:]:
        pub.publish(event)
    assert pub.flush(5)
    assert read_calls(platform) == expected(events)
    assert pub.stats()["duplicates"] == len(events) - 2
    assert platform.xlen(callbacks_stream()) == 1


def test_outage_mid_stream_loses_nothing_and_never_waits(
    make_publisher: MakePublisher,
    platform: redis.Redis,
    server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    no_personal_data: list[str],
) -> None:
    pub = make_publisher()
    sink = TimedSink(pub)
    published = threading.Event()

    def killer() -> None:
        # Kill Redis once the first calls are half-way through.
        while len(sink.events) < 30:
            time.sleep(0.001)
        server.kill()
        published.set()

    k = threading.Thread(target=killer)
    k.start()
    with caplog.at_level(logging.INFO, logger="ivr.platform.publisher"):
        run_calls(sink, range(16), between=lambda: time.sleep(0.002))
        k.join()
        assert published.is_set()
        time.sleep(0.3)  # let the worker find out and spool
        down = pub.stats()
        assert down["redis_up"] is False and down["backlog_disk"] > 0
        server.start()
        assert pub.flush(10)

    assert read_calls(platform) == expected(sink.events)
    stats = pub.stats()
    # A batch Redis wrote just before dying had no reply: it was sent again and
    # found already there, which is what `duplicates` counts.
    assert stats["published"] + stats["duplicates"] == len(sink.events)
    assert stats["spooled"] > 0 and stats["replayed"] > 0
    assert stats["dropped"] == 0 and stats["outages"] == 1
    assert stats["backlog_disk"] == 0 and not list(pub.spool_dir.glob("seg-*"))
    assert len(outage_errors(caplog)) == 1  # loud, but once per outage
    assert sink.worst < 0.1, f"publish() took {sink.worst:.3f} s"
    no_personal_data.extend(e.caller for e in sink.events)


def _break_password(server: RedisServer) -> Callable[[], None]:
    admin = server.admin()
    admin.execute_command("ACL", "SETUSER", WRITER_USER, "resetpass", ">rotated-elsewhere")
    admin.client_kill_filter(user=WRITER_USER)  # its open connection must log in again
    return lambda: admin.execute_command(
        "ACL", "SETUSER", WRITER_USER, "resetpass", f">{WRITER_PASSWORD}"
    )


def _fill_memory(server: RedisServer) -> Callable[[], None]:
    admin = server.admin()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    return lambda: admin.config_set("maxmemory", "0")


def _make_replica(server: RedisServer) -> Callable[[], None]:
    admin = server.admin()
    admin.replicaof("127.0.0.1", "1")  # a master that is not there: read-only, data kept
    return lambda: admin.replicaof("NO", "ONE")


@pytest.mark.parametrize(
    ("breakage", "symptom"),
    [
        (_break_password, "WRONGPASS|invalid username-password"),
        (_fill_memory, "OutOfMemoryError"),
        (_make_replica, "ReadOnlyError"),
    ],
    ids=["wrong-password", "out-of-memory", "read-only-replica"],
)
def test_redis_errors_count_as_an_outage(
    make_publisher: MakePublisher,
    platform: redis.Redis,
    server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    breakage: Callable[[RedisServer], Callable[[], None]],
    symptom: str,
) -> None:
    pub = make_publisher()
    sink = TimedSink(pub)
    run_calls(sink, range(0, 4))
    assert pub.flush(5)
    with caplog.at_level(logging.INFO, logger="ivr.platform.publisher"):
        repair = breakage(server)
        run_calls(sink, range(4, 10))
        time.sleep(0.2)
        assert pub.stats()["redis_up"] is False
        repair()
        assert pub.flush(10)

    errors = outage_errors(caplog)
    assert len(errors) == 1
    assert any(s in errors[0].getMessage() for s in symptom.split("|"))
    assert read_calls(platform) == expected(sink.events)
    stats = pub.stats()
    assert stats["spooled"] > 0 and stats["replayed"] > 0 and stats["dropped"] == 0


def test_hung_redis_and_full_buffer_spill_to_disk_in_order(
    make_publisher: MakePublisher,
    platform: redis.Redis,
    server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    append = Spool.append

    def slow_disk(self: Spool, lines: list[str]) -> None:
        time.sleep(0.01)
        append(self, lines)

    monkeypatch.setattr(Spool, "append", slow_disk)
    pub = make_publisher(buffer_size=20, batch_size=4)
    sink = TimedSink(pub)
    run_calls(sink, range(0, 2))
    assert pub.flush(5)
    server.pause()  # connections stay open, nothing is answered: every call times out
    try:
        # Long enough to outlast the first timeout, so the buffer drains and
        # fills again while older events still sit in the spill file.
        run_calls(sink, range(2, 26), between=lambda: time.sleep(0.02))
        during = pub.stats()
    finally:
        server.resume()
    assert pub.flush(10)

    assert during["spilled"] > 0
    assert sink.worst < 0.1, f"publish() took {sink.worst:.3f} s while Redis hung"
    assert read_calls(platform) == expected(sink.events)
    stats = pub.stats()
    assert stats["published"] + stats["duplicates"] == len(sink.events)
    assert stats["dropped"] == 0
    assert not list(pub.spool_dir.glob("spill-*")) and not list(pub.spool_dir.glob("seg-*"))


def test_unwritable_spool_is_loud_and_events_wait_in_memory(
    make_publisher: MakePublisher,
    platform: redis.Redis,
    server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("tests run as root, so chmod cannot stop us; a file in the way can\n")
    with caplog.at_level(logging.INFO, logger="ivr.platform.publisher"):
        pub = make_publisher(spool_dir=blocker / "spool")
    assert any(
        r.levelno == logging.ERROR and "event spool" in r.getMessage() for r in caplog.records
    )
    health = pub.stats()
    assert health["spool_ok"] is False and health["healthy"] is False
    assert health["spool_errors"] >= 1

    sink = TimedSink(pub)
    run_calls(sink, range(0, 3))
    assert pub.flush(5)  # Redis is up: the broken spool is not needed
    server.kill()
    run_calls(sink, range(3, 8))
    time.sleep(0.3)
    waiting = pub.stats()
    assert waiting["backlog_memory"] == waiting["held_in_memory"] > 0
    server.start()
    assert pub.flush(10)

    assert sink.worst < 0.1
    assert read_calls(platform) == expected(sink.events)
    assert pub.stats()["dropped"] == 0


def test_a_spool_usable_again_at_shutdown_takes_what_waits_in_memory(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer, tmp_path: Path
) -> None:
    # The spool had failed a moment before (its retry was not due yet): shutting down,
    # the events waiting in memory were lost instead of trying it once more.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("in the way of the spool\n")
    server.kill()
    pub = make_publisher(spool_dir=blocker / "spool", max_retry_interval=30.0)
    events = simulate_call(call_info(7))
    assert pub.publish_many(events) == len(events)
    assert wait_for(lambda: pub.stats()["backlog_memory"] == len(events))
    blocker.unlink()  # the disk is back
    pub.close(timeout=1)
    assert pub.stats()["dropped"] == 0
    server.start()
    assert make_publisher(spool_dir=blocker / "spool").flush(5)  # the next run
    assert read_calls(platform) == expected(events)


def test_spool_outlives_the_publisher_and_replay_skips_what_redis_has(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer, tmp_path: Path
) -> None:
    spool = tmp_path / "kept-spool"
    first = make_publisher(spool_dir=spool)
    events = simulate_call(call_info(9), outcome="abandoned")
    for event in events[:4]:
        first.publish(event)
    assert first.flush(5)
    server.kill()
    # Events 3 and 4 again, as after a reply lost in a crash, then the rest.
    for event in events[2:]:
        first.publish(event)
    assert first.close(timeout=0.5) is False  # Redis is gone: they stay on disk
    assert first.stats()["backlog_disk"] == len(events) - 2
    assert list(spool.glob("seg-*"))

    server.start()
    second = make_publisher(spool_dir=spool)
    assert second.flush(5)
    assert read_calls(platform) == expected(events)
    assert second.stats()["duplicates"] == 2
    assert second.stats()["replayed"] == len(events) - 2
    assert platform.xlen(callbacks_stream()) == 1


def test_retention_trims_streams(make_publisher: MakePublisher, platform: redis.Redis) -> None:
    pub = make_publisher(retention=Retention(maxlen=10), batch_size=1)
    for n in range(0, 60, 3):  # all in fuzhou
        simulate_call(call_info(n), pub.publish)
    assert pub.flush(5)
    # Approximate trimming drops whole macro nodes, so some slack is left.
    assert platform.xlen(events_stream("fuzhou")) < pub.stats()["published"]


def test_prometheus_counters_without_numbers(make_publisher: MakePublisher) -> None:
    registry = CollectorRegistry()
    pub = make_publisher(registry=registry)
    events = simulate_call(call_info(6), pub.publish, outcome="callback")
    assert pub.flush(5)
    text = generate_latest(registry).decode()
    assert f'ivr_events_total{{outcome="published"}} {float(len(events))}' in text
    assert "ivr_callback_tasks_total 1.0" in text
    assert "ivr_publisher_redis_up 1.0" in text
    assert 'ivr_publisher_backlog{where="disk"} 0.0' in text
    assert "1391234" not in text


def test_publish_never_raises_even_on_nonsense(make_publisher: MakePublisher) -> None:
    pub = make_publisher()
    nonsense: list[Any] = [None, 42, {"type": "call_offered"}, object()]
    assert [pub.publish(x) for x in nonsense] == [False] * 4
    assert pub.stats()["refused"] == 4


def test_calls_going_on_while_redis_returns_stay_in_order(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer
) -> None:
    # Small batches and slices: the replay runs many rounds, new events in between.
    pub = make_publisher(batch_size=2, replay_slice_s=0.0)
    sink = TimedSink(pub)
    server.kill()
    run_calls(sink, range(0, 60))  # a backlog to replay
    restarter = threading.Timer(0.15, server.start)
    restarter.start()
    # Calls that began during the outage and go on while the backlog is replayed:
    # their later events must not overtake their earlier, spooled ones.
    run_calls(sink, range(60, 76), threads=8, between=lambda: time.sleep(0.08))
    restarter.join()
    assert pub.flush(10)

    assert read_calls(platform) == expected(sink.events)
    assert pub.stats()["replayed"] > 0

"""The documented ACL users, on a real server: each can do its job and no more."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis
from platform_support import (
    PLATFORM_PASSWORD,
    WRITER_PASSWORD,
    RedisServer,
    call_info,
    simulate_call,
)

from ivr.platform.acl import PLATFORM_USER, WRITER_USER
from ivr.platform.callbacks import claim_tasks
from ivr.platform.layout import callbacks_stream, events_stream, seen_key
from ivr.platform.publisher import Publisher
from ivr.platform.reader import ack, read_group

MakePublisher = Callable[..., Publisher]
CALL = call_info(1)  # xiamen
EVENTS = events_stream(CALL.region)


@pytest.fixture
def published(make_publisher: MakePublisher) -> Publisher:
    pub = make_publisher()
    simulate_call(CALL, pub.publish, outcome="abandoned")
    assert pub.flush(5)
    return pub


def test_platform_user_reads_and_works_groups(published: Publisher, platform: redis.Redis) -> None:
    entries = read_group(platform, CALL.region, "p1")
    assert len(entries) == 7
    assert ack(platform, CALL.region, [entry_id for entry_id, _ in entries]) == 7
    assert platform.xlen(EVENTS) == 7 and platform.xrange(EVENTS, count=1)
    assert platform.xinfo_groups(EVENTS)[0]["name"] == "platform"
    [task] = claim_tasks(platform, "desk-1")
    assert platform.xdel(callbacks_stream(), task.entry_id) == 1  # its one delete right


@pytest.mark.parametrize(
    "command",
    [
        ("XADD", EVENTS, "*", "type", "forged"),
        ("XADD", callbacks_stream(), "*", "number", "110"),
        ("XDEL", EVENTS, "0-1"),
        ("XTRIM", EVENTS, "MAXLEN", "0"),
        ("DEL", EVENTS),
        ("SMEMBERS", seen_key(CALL.call_id)),
        ("XGROUP", "DESTROY", EVENTS, "platform"),
        ("EVAL", "return 1", "0"),
        ("KEYS", "*"),
        ("CONFIG", "GET", "requirepass"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_platform_user_cannot(
    published: Publisher, platform: redis.Redis, command: tuple[str, ...]
) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        platform.execute_command(*command)


@pytest.mark.parametrize(
    "command",
    [
        ("XRANGE", EVENTS, "-", "+"),
        ("XREADGROUP", "GROUP", "platform", "c", "STREAMS", EVENTS, ">"),
        ("XREAD", "STREAMS", callbacks_stream(), "0"),
        ("SMEMBERS", seen_key(CALL.call_id)),
        ("DEL", EVENTS),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("EVAL", "return 1", "0"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_writer_user_cannot_read_or_destroy(
    published: Publisher, server: RedisServer, command: tuple[str, ...]
) -> None:
    writer = server.client(WRITER_USER, WRITER_PASSWORD)
    with pytest.raises(redis.exceptions.NoPermissionError):
        writer.execute_command(*command)


def test_a_publisher_with_reader_rights_writes_nothing_and_loses_nothing(
    make_publisher: MakePublisher,
    server: RedisServer,
    platform: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pub = make_publisher(redis_url=server.url(PLATFORM_USER, PLATFORM_PASSWORD))
    with caplog.at_level(logging.ERROR, logger="ivr.platform.publisher"):
        events = simulate_call(call_info(2), pub.publish)
        assert pub.close(timeout=0.5) is False
    assert any("NoPermissionError" in r.getMessage() for r in caplog.records)
    assert platform.xlen(events_stream(call_info(2).region)) == 0
    stats = pub.stats()
    assert stats["backlog_disk"] == len(events) and stats["dropped"] == 0

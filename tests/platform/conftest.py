"""Fixtures for the platform tests; the server and call helpers live in
platform_support.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from platform_support import (
    PLATFORM_PASSWORD,
    REDIS_SERVER,
    WRITER_PASSWORD,
    RedisServer,
)

from ivr.platform.acl import PLATFORM_USER, WRITER_USER
from ivr.platform.publisher import Publisher


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed (scripts/test installs it)")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    srv = RedisServer(workdir)
    try:
        srv.start()
        srv.create_users()
        yield srv
    finally:
        if srv.proc is not None:
            srv.resume()  # a stopped process would ignore nothing but SIGKILL anyway
            srv.kill()


@pytest.fixture
def platform(server: RedisServer) -> redis.Redis:
    """The platform reader, with exactly the documented rights."""
    return server.client(PLATFORM_USER, PLATFORM_PASSWORD)


@pytest.fixture
def make_publisher(server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., Publisher]]:
    """Publishers as the controller's ACL user; each is closed after the test and
    must not have lost a single event."""
    made: list[Publisher] = []

    def make(**kwargs: Any) -> Publisher:
        options: dict[str, Any] = {
            "spool_dir": tmp_path / "spool",
            "retry_interval": 0.05,
            "max_retry_interval": 0.3,
            "socket_timeout": 0.3,
        }
        options.update(kwargs)
        url = options.pop("redis_url", server.url(WRITER_USER, WRITER_PASSWORD))
        pub = Publisher(url, **options)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close(timeout=5)
        assert pub.stats()["dropped"] == 0


@pytest.fixture
def no_personal_data(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Fails the test if a full caller number shows up in any log record."""
    numbers: list[str] = []
    yield numbers
    text = "\n".join(r.getMessage() for r in caplog.records)
    for number in numbers:
        assert number not in text, "a full caller number reached the logs"

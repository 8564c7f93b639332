"""Call state in a real Redis: compare-and-set steps, TTLs, and one call's webhooks
spread over two workers with its events numbered without a gap."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from twilio_peer import TwilioPeer, make_harness, make_settings, parse

from ivr.core.clock import SHANGHAI
from ivr.core.routing import Hotline
from ivr.events import CallEvent
from ivr.twilio import SequencedSink
from ivr.twilio.state import (
    CallRecord,
    MemoryStateStore,
    RedisStateStore,
    StateUnavailable,
    Tokens,
)
from ivr.web.metrics import LiveIndicators

NOW = datetime(2024, 6, 1, 10, 0, tzinfo=SHANGHAI)
REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed (scripts/test installs it)")
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not start")


def _record(step: int) -> CallRecord:
    return CallRecord(step=step, state={"done": False}, caller="+8613912340000", started=1.0)


@pytest.mark.redis
def test_redis_store_compare_and_set(redis_url: str) -> None:
    store = RedisStateStore.from_url(redis_url, ttl_s=120)
    assert store.get("CA1") is None
    assert store.create("CA1", _record(1))
    assert not store.create("CA1", _record(1))  # a second incoming webhook
    assert not store.replace("CA1", 2, _record(3))  # not the current step
    assert store.replace("CA1", 1, _record(2))
    assert not store.replace("CA1", 1, _record(2))  # the same step twice: once only
    assert store.get("CA1") == _record(2)
    assert not store.replace("CA-none", 0, _record(1))  # nothing to replace
    ttl = store.client.ttl(store.prefix + "CA1")
    assert 0 < ttl <= 120


@pytest.mark.redis
def test_redis_state_expires(redis_url: str) -> None:
    store = RedisStateStore.from_url(redis_url, ttl_s=1)
    store.create("CA2", _record(1))
    time.sleep(1.3)
    assert store.get("CA2") is None


@pytest.mark.redis
def test_redis_store_carries_on_after_a_redis_restart(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    try:
        store = RedisStateStore.from_url(f"redis://127.0.0.1:{port}/0", ttl_s=120)
        assert store.create("CA1", _record(1))
        proc.terminate()
        proc.wait(timeout=10)
        proc = _start_redis(port, tmp_path)
        # The kept connection is dead and the new server knows no script: neither shows.
        assert store.create("CA1", _record(1))
        assert store.replace("CA1", 1, _record(2))
        assert store.get("CA1") == _record(2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.redis
def test_a_forked_worker_opens_its_own_connections(redis_url: str) -> None:
    store = RedisStateStore.from_url(redis_url)
    assert store.create("CA-parent", _record(1))
    parent = store._command("CLIENT", "ID")  # the connection the store's commands use
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker forked after the app was loaded
        code = 1
        try:
            ok = store.create("CA-child", _record(1))
            code = 0 if ok and store._command("CLIENT", "ID") != parent else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("CA-child") == _record(1)  # and the parent's connection still works
    assert store.replace("CA-parent", 1, _record(2))


class ReplyCutter:
    """Between the store and a real Redis: passes everything on, except that on the
    first connection the reply to the first script never comes back once Redis has run
    it: the connection is closed (it broke mid-reply), or, with ``hold``, kept open
    with nothing sent (Redis stalled past the store's timeout)."""

    def __init__(self, upstream_port: int, hold: bool = False) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            first = True
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                threading.Thread(
                    target=self._relay, args=(client, upstream, first), daemon=True
                ).start()
                first = False

    def _relay(self, client: socket.socket, upstream: socket.socket, cut: bool) -> None:
        with contextlib.suppress(OSError), client, upstream:
            while data := client.recv(65536):
                upstream.sendall(data)
                reply = upstream.recv(65536)  # redis-py waits for each reply in turn
                if cut and b"EVALSHA" in data:
                    self.cut += 1
                    while self.hold and client.recv(65536):
                        pass  # until the store gives up on this connection
                    return  # Redis ran it; the store never hears so
                client.sendall(reply)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.redis
@pytest.mark.parametrize("lost", ["connection_broke", "reply_too_late"])
@pytest.mark.parametrize("write", ["create", "replace"])
def test_a_write_whose_reply_was_lost_is_not_refused_as_a_replay(
    redis_url: str, write: str, lost: str
) -> None:
    # The store sends a script again when its connection breaks. If the first one had
    # run, the second used to find the step moved and refuse it: a first call
    # answered 409, or a continuation refused, for a write that did happen. A reply
    # that came too late used to send the caller to the seats, though the write was
    # done, and leave that turn's events unpublished.
    direct = RedisStateStore.from_url(redis_url)
    assert direct.create("CA0", _record(1)) and direct.replace("CA0", 1, _record(2))
    # (Redis knows both scripts now: the cut reply is the script's, not a NOSCRIPT)
    if write == "replace":
        assert direct.create("CA1", _record(1))
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    cutter = ReplyCutter(port, hold=lost == "reply_too_late")
    try:
        store = RedisStateStore.from_url(f"redis://127.0.0.1:{cutter.port}/0")
        done = (
            store.create("CA1", _record(1))
            if write == "create"
            else store.replace("CA1", 1, _record(2))
        )
    finally:
        cutter.close()
    assert cutter.cut == 1 and done
    assert direct.get("CA1") == _record(1 if write == "create" else 2)
    # and anybody else's second write is still refused like a replay
    if write == "create":
        assert not direct.create("CA1", _record(1))
    else:
        assert not direct.replace("CA1", 1, _record(2))


def test_a_command_that_timed_out_is_sent_once_more_as_the_same_write() -> None:
    """A script whose reply never came may have run: it is sent once more with the same
    write id, which Redis would recognise, and no more. A Redis that answers only the
    connection's handshake, then nothing."""
    commands: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                peer, _ = listener.accept()
                while data := peer.recv(65536):
                    # the handshake redis-py sends (HELLO, CLIENT SETNAME/SETINFO): answered
                    peer.sendall(b"%1\r\n+proto\r\n:3\r\n" * data.count(b"HELLO"))
                    peer.sendall(b"+OK\r\n" * data.count(b"CLIENT"))
                    if b"EVALSHA" in data:
                        commands.append(data)

    threading.Thread(target=serve, daemon=True).start()
    store = RedisStateStore.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(StateUnavailable) as raised:
            store.replace("CA1", 1, _record(2))
    finally:
        listener.close()
    assert isinstance(raised.value.__cause__, redis.TimeoutError)
    assert len(commands) == 2 and commands[0] == commands[1]  # the write id included


def test_a_redis_that_cannot_be_reached_is_state_unavailable() -> None:
    """Not "no such call", which would send a call in progress to the seats as lost,
    and not redis-py's own errors, which the webhooks would take for a bug of ours."""
    store = RedisStateStore.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    for attempt in (
        lambda: store.get("CA1"),
        lambda: store.create("CA1", _record(1)),
        lambda: store.replace("CA1", 1, _record(2)),
    ):
        with pytest.raises(StateUnavailable, match="redis: ConnectionError"):
            attempt()


def test_memory_store_keeps_the_newest_calls() -> None:
    store = MemoryStateStore(ttl_s=60, max_calls=2)
    for sid in ("a", "b", "c"):
        assert store.create(sid, _record(1))
    assert store.get("a") is None and store.get("c") is not None
    assert store.replace("c", 1, _record(2)) and not store.replace("c", 1, _record(3))


def test_tokens_bind_call_step_and_purpose() -> None:
    tokens = Tokens(b"secret")
    token = tokens.make("CA1", 3, "continue")
    assert tokens.check(token, "CA1", 3, "continue")
    assert not tokens.check(token, "CA2", 3, "continue")
    assert not tokens.check(token, "CA1", 4, "continue")
    assert not tokens.check(token, "CA1", 3, "wait:20:0")
    assert not Tokens(b"other").check(token, "CA1", 3, "continue")
    with pytest.raises(ValueError):
        Tokens(b"")


def test_tokens_stay_what_continuation_urls_already_carry() -> None:
    """A rolling restart mixes workers of two releases: a token one of them issued must
    check on the other, so it stays HMAC-SHA256 over "sid|step|purpose", 18 bytes."""
    tokens = Tokens(b"secret")
    for sid, step, purpose in [("CA1", 3, "continue"), ("CA2", 10, "wait:20:0"), ("CA1", 3, "")]:
        digest = hmac.new(b"secret", f"{sid}|{step}|{purpose}".encode(), hashlib.sha256).digest()
        expected = base64.urlsafe_b64encode(digest[:18]).decode()
        assert tokens.make(sid, step, purpose) == expected  # and again: no state carried over
        assert tokens.make(sid, step, purpose) == expected


# -- two workers, one call ------------------------------------------------------------


class FakePublisher:
    """What SequencedSink needs of the platform's Publisher."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.refused: list[tuple[str, Any]] = []

    def publish(self, event: CallEvent) -> bool:
        event.validate()
        self.events.append(event)
        return True

    def refuse(self, reason: str, *, call_id: str = "?", event_type: object = "?") -> None:
        self.refused.append((reason, event_type))

    def publish_later(self, build: Callable[[], list[CallEvent]]) -> None:
        for event in build():  # the real one builds on its worker, in the same order
            self.publish(event)


@pytest.mark.redis
def test_one_call_across_two_workers_numbers_its_events_without_a_gap(
    hotline: Hotline, redis_url: str
) -> None:
    publisher = FakePublisher()
    settings = make_settings()
    ended_at = datetime(2024, 6, 1, 2, 3, tzinfo=UTC)  # 10:03 local: 180 s after NOW
    workers = [
        make_harness(
            hotline,
            NOW,
            settings=settings,
            store=RedisStateStore.from_url(redis_url),
            events=SequencedSink(publisher, clock=lambda: ended_at),  # type: ignore[arg-type]
        )
        for _ in range(2)
    ]
    peers = [TwilioPeer(w.client, "+8659112345") for w in workers]
    first = peers[0].call()[-1].text or ""
    root = parse(peers[1].post(first).data)  # the next webhook reaches worker 2
    assert peers[0].post(first).status_code == 409  # a replay to worker 1: the step is gone
    root = parse(peers[0].post(root[0].get("action", ""), QueueResult="bridged").data)
    root = parse(peers[1].post(root[0].get("action", ""), Digits="1").data)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    seqs = [e.seq for e in publisher.events]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 8
    assert publisher.refused == []
    assert {e.call_id for e in publisher.events} == {peers[0].sid}
    ended = publisher.events[-1]
    assert ended.type == "call_ended" and ended.fields["duration_s"] == 180.0


def test_twilio_calls_count_in_the_live_indicators(hotline: Hotline) -> None:
    live = LiveIndicators()
    h = make_harness(hotline, NOW, events=live)
    peer = TwilioPeer(h.client, "+8659212345")
    root = parse(peer.post(peer.call()[-1].text or "").data)
    root = parse(peer.post(root[0].get("action", ""), QueueResult="bridged", QueueTime="8").data)
    parse(peer.post(root[0].get("action", ""), Digits="1").data)  # the survey, then the end
    other = TwilioPeer(h.client, "+8659212345", sid="CA" + "7" * 32)
    parse(other.post(other.call()[-1].text or "").data)
    other.hang_up()  # abandoned while queued
    rows = {(r["region"], r["line"]): r for r in live.snapshot()}
    row = rows[("xiamen", "12345")]
    assert (row["offered"], row["asked_for_person"], row["answered_by_person"]) == (2, 2, 1)
    assert row["answer_rate_15s"] == 0.5 and row["abandonment_rate"] == 0.5
    assert row["survey"]["非常满意"] == 1

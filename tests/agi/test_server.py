"""AgiServer end to end over loopback TCP, with fake Asterisk peers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gevent
import pytest

from ivr.agi import (
    AgiServer,
    AgiSession,
    BadSession,
    CallerHungUp,
    SessionLimits,
    UnknownRoute,
)

from .fake_asterisk import CALLER, FakeAsterisk, env_block

FAST = SessionLimits(env_timeout=0.3, result_timeout=1.0, send_timeout=0.5, session_deadline=5.0)

Factory = Callable[..., AgiServer]


@pytest.fixture
def make_server() -> Iterator[Factory]:
    servers: list[AgiServer] = []

    def factory(**kwargs: object) -> AgiServer:
        kwargs.setdefault("limits", FAST)
        server = AgiServer(("127.0.0.1", 0), **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop(grace=1.0)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as ex:
        yield ex


def answer_then_set(session: AgiSession) -> None:
    session.answer()
    session.set_variable("ROUTE", "seats")


def normal_call(address: tuple[str, int], script: str = "answer_then_set") -> list[str]:
    peer = FakeAsterisk.connect(address)
    try:
        peer.send_env(script)
        return peer.play(["200 result=0", "200 result=1"])
    finally:
        peer.close()


NORMAL = ["ANSWER", 'SET VARIABLE "ROUTE" "seats"']


def test_dispatches_by_route_name_to_the_handler_with_the_session(make_server) -> None:
    seen: list[AgiSession] = []
    server = make_server()

    @server.register
    def ivr_main(session: AgiSession) -> None:
        seen.append(session)
        session.answer()
        session.set_variable("LANG", session.args[0])

    server.register(answer_then_set)
    peer = FakeAsterisk.connect(server.address)
    peer.send_env("ivr_main", agi_arg_1="zh")
    assert peer.play(["200 result=0", "200 result=1"]) == ["ANSWER", 'SET VARIABLE "LANG" "zh"']
    assert normal_call(server.address) == NORMAL
    assert len(seen) == 1
    assert seen[0].env["agi_callerid"] == CALLER
    assert seen[0].script == "ivr_main"
    assert server.stats().completed == 2


def test_register_one_handler_per_route() -> None:
    server = AgiServer(("127.0.0.1", 0), {"answer_then_set": answer_then_set})
    try:
        with pytest.raises(ValueError, match="already registered"):
            server.register(answer_then_set)
        assert server.register(normal_call, name="other") is normal_call
        assert set(server.handlers) == {"answer_then_set", "other"}
    finally:
        server.stop(grace=0.1)


def test_listens_with_a_backlog_of_at_least_1024() -> None:
    server = AgiServer(("127.0.0.1", 0), {"answer_then_set": answer_then_set})
    try:
        # ss shows a listening socket's accept queue bound as its Send-Q.
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.address[1]}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert int(out[2]) >= min(1024, somaxconn)
    finally:
        server.stop(grace=0.1)


def test_silent_client_is_closed_after_idle_timeout_others_unaffected(
    make_server, pool, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi")
    server = make_server(handlers={"answer_then_set": answer_then_set})
    silent = FakeAsterisk.connect(server.address)
    start = time.monotonic()

    def silent_closed_at() -> float:
        silent.wait_closed()
        return time.monotonic() - start

    closed = pool.submit(silent_closed_at)
    # A normal call made while the silent one holds its thread completes
    # before the silent one's idle timeout (0.3 s) has even run out.
    assert normal_call(server.address) == NORMAL
    normal_done = time.monotonic() - start
    silent_closed = closed.result(timeout=3)
    assert normal_done < 0.3 <= silent_closed < 2.0
    assert server.stats().bad_sessions == 1
    assert server.stats().completed == 1
    bad = [r for r in caplog.records if "agi session closed" in r.getMessage()]
    assert len(bad) == 1 and "reason=peer silent" in bad[0].getMessage()
    silent.close()


def test_garbage_env_closes_with_one_log_line(make_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi")
    called: list[AgiSession] = []
    server = make_server(handlers={"route": called.append})
    peer = FakeAsterisk.connect(server.address)
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert peer.wait_closed() < 0.2
    peer.close()
    assert called == []
    lines = [r.getMessage() for r in caplog.records if "agi session closed" in r.getMessage()]
    assert len(lines) == 1 and "not an AGI environment line" in lines[0]


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"needs {want} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def test_flood_of_500_connections_none_waits_a_second(make_server) -> None:
    _raise_nofile(4096)
    # Generous read limits: this test is about connecting, and one asyncio
    # client opening 500 connections can take a while to send every env block.
    server = make_server(
        handlers={"flood": lambda s: s.answer()},
        limits=SessionLimits(env_timeout=5.0, result_timeout=5.0),
    )
    host, port = server.address
    env = env_block("flood")

    async def one_call() -> tuple[float, bytes]:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        waited = time.monotonic() - start
        writer.write(env)
        command = await reader.readline()
        writer.write(b"200 result=0\n")
        rest = await reader.read()  # until the server closes
        writer.close()
        return waited, command + rest

    async def flood() -> list[tuple[float, bytes]]:
        return await asyncio.wait_for(asyncio.gather(*(one_call() for _ in range(500))), 15)

    results = asyncio.run(flood())
    waits = [w for w, _ in results]
    assert max(waits) < 1.0, f"slowest connect {max(waits):.2f}s"
    served = sum(got == b"ANSWER\n" for _, got in results)
    assert served == 500, f"{500 - served} calls not served: {server.stats()}"
    assert server.stats().completed == 500


@pytest.mark.parametrize(
    ("allowed", "source", "accepted"),
    [
        ("127.0.0.1", "127.0.0.2", False),
        ("127.0.0.2", "127.0.0.1", False),
        ("127.0.0.2", "127.0.0.2", True),
        ("127.0.0.0/29", "127.0.0.2", True),
    ],
)
def test_allow_list_of_client_hosts(make_server, caplog, allowed, source, accepted) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi")
    called: list[str] = []
    server = make_server(
        handlers={"route": lambda s: called.append(s.peer)}, allowed_hosts=[allowed]
    )
    peer = FakeAsterisk.connect(server.address, source=source)
    peer.send_env()
    assert peer.wait_closed() < 0.5
    peer.close()
    assert bool(called) is accepted
    stats = server.stats()
    assert stats.rejected_host == (0 if accepted else 1)
    refused = "reason=host not allowed" in caplog.text
    assert refused is not accepted
    if accepted:
        assert called[0].startswith(f"{source}:")


def test_a_flood_of_refused_connections_is_not_a_flood_of_log_lines(make_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi")
    server = make_server(handlers={"route": lambda s: None}, allowed_hosts=["127.0.0.2"])
    for _ in range(50):
        peer = FakeAsterisk.connect(server.address, source="127.0.0.1")
        peer.wait_closed()
        peer.close()
    assert server.stats().rejected_host == 50  # every one counted
    lines = [r.getMessage() for r in caplog.records if "host not allowed" in r.getMessage()]
    assert 1 <= len(lines) <= 3, lines
    time.sleep(1.1)
    peer = FakeAsterisk.connect(server.address, source="127.0.0.1")
    peer.wait_closed()
    peer.close()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not any("more like it" in r.getMessage()
                                                  for r in caplog.records):  # fmt: skip
        time.sleep(0.02)
    last = [r.getMessage() for r in caplog.records if "host not allowed" in r.getMessage()][-1]
    assert re.search(r"and \d+ more like it since \d\d:\d\d:\d\d", last), last


def test_handler_exception_goes_to_on_error_others_unaffected(make_server, pool) -> None:
    errors: list[tuple[AgiSession, Exception]] = []
    handled: list[AgiSession] = []

    def broken(session: AgiSession) -> None:
        handled.append(session)
        session.answer()
        raise RuntimeError("directory lookup failed")

    def send_to_seats(session: AgiSession, exc: Exception) -> None:
        errors.append((session, exc))
        session.appexec("Goto", "seats,s,1")

    server = make_server(
        handlers={"broken": broken, "answer_then_set": answer_then_set}, on_error=send_to_seats
    )

    def broken_call() -> list[str]:
        peer = FakeAsterisk.connect(server.address)
        peer.send_env("broken")
        try:
            return peer.play(["200 result=0", "200 result=0"])
        finally:
            peer.close()

    broken_calls = [pool.submit(broken_call) for _ in range(3)]
    normal_calls = [pool.submit(normal_call, server.address) for _ in range(3)]
    for f in broken_calls:
        assert f.result(timeout=3) == ["ANSWER", 'EXEC Goto "seats,s,1"']
    for f in normal_calls:
        assert f.result(timeout=3) == NORMAL
    assert len(errors) == 3
    assert {id(s) for s, _ in errors} == {id(s) for s in handled}
    assert all(isinstance(e, RuntimeError) for _, e in errors)
    stats = server.stats()
    assert (stats.handler_errors, stats.completed) == (3, 3)


def test_on_error_that_raises_does_not_hurt_the_server(make_server) -> None:
    def broken(session: AgiSession) -> None:
        raise KeyError("x")

    def hook(session: AgiSession, exc: Exception) -> None:
        raise ValueError("the hook itself is broken")

    server = make_server(
        handlers={"broken": broken, "answer_then_set": answer_then_set}, on_error=hook
    )
    peer = FakeAsterisk.connect(server.address)
    peer.send_env("broken")
    assert peer.play([]) == []
    peer.close()
    assert normal_call(server.address) == NORMAL
    assert server.stats().on_error_failures == 1


def test_unknown_route_goes_to_on_error(make_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi")
    errors: list[Exception] = []
    server = make_server(
        handlers={"answer_then_set": answer_then_set},
        on_error=lambda s, e: errors.append(e),
    )
    peer = FakeAsterisk.connect(server.address)
    peer.send_env("no_such_route")
    peer.wait_closed()
    peer.close()
    assert len(errors) == 1 and isinstance(errors[0], UnknownRoute)
    assert errors[0].route == "no_such_route"
    assert "reason=unknown route 'no_such_route'" in caplog.text
    assert server.stats().unknown_routes == 1


def test_hangup_in_handler_reaches_on_error_as_caller_hung_up(make_server) -> None:
    errors: list[tuple[bool, Exception]] = []
    server = make_server(
        handlers={"answer_then_set": answer_then_set},
        on_error=lambda s, e: errors.append((s.hung_up, e)),
    )
    peer = FakeAsterisk.connect(server.address)
    peer.send_env("answer_then_set")
    assert peer.play(["HANGUP"]) == ["ANSWER"]
    peer.close()
    assert len(errors) == 1
    assert errors[0][0] is True and isinstance(errors[0][1], CallerHungUp)
    assert server.stats().hangups == 1


def test_concurrency_bound_closes_extra_connections(make_server, pool, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi")

    def hold(session: AgiSession) -> None:
        session.answer()
        with session.command_timeout(3):
            session.appexec("Queue", "seats")  # a long call: the peer answers when told

    server = make_server(
        handlers={"hold": hold, "answer_then_set": answer_then_set}, max_sessions=2
    )
    holders = [FakeAsterisk.connect(server.address) for _ in range(2)]
    for peer in holders:
        peer.send_env("hold")
        assert peer.read_command() == "ANSWER"
        peer.reply("200 result=0")
        assert peer.read_command() == 'EXEC Queue "seats"'
    assert server.active_sessions == 2

    extra = FakeAsterisk.connect(server.address)
    extra.send_env("answer_then_set")
    assert extra.play([]) == []  # closed unanswered: Asterisk falls through at once
    extra.close()
    assert server.stats().rejected_busy == 1
    assert "reason=over capacity" in caplog.text

    for peer in holders:
        peer.reply("200 result=0")
        assert peer.wait_closed() < 1.0
        peer.close()
    deadline = time.monotonic() + 2
    while server.active_sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert normal_call(server.address) == NORMAL  # slots came back


def test_graceful_stop_finishes_calls_in_flight_and_refuses_new_ones(pool) -> None:
    def slow(session: AgiSession) -> None:
        session.answer()
        gevent.sleep(0.3)  # a handler waits cooperatively, as AGI commands do
        session.noop()

    server = AgiServer(("127.0.0.1", 0), {"slow": slow}, limits=FAST)
    address = server.start()
    peer = FakeAsterisk.connect(address)
    peer.send_env("slow")
    played = pool.submit(peer.play, ["200 result=0", "200 result=0"])
    time.sleep(0.05)
    start = time.monotonic()
    server.stop(grace=10.0)
    assert played.result(timeout=3) == ["ANSWER", "NOOP"]
    assert time.monotonic() - start < 3.0  # returned when the call ended, not after grace
    with pytest.raises(ConnectionRefusedError):
        FakeAsterisk.connect(address)
    peer.close()


def test_stop_cuts_sessions_that_outlive_the_grace(pool) -> None:
    errors: list[Exception] = []

    def stuck(session: AgiSession) -> None:
        with session.command_timeout(30):
            session.appexec("Dial", "PJSIP/seat1")  # never answered

    server = AgiServer(
        ("127.0.0.1", 0), {"stuck": stuck}, limits=FAST, on_error=lambda s, e: errors.append(e)
    )
    address = server.start()
    peer = FakeAsterisk.connect(address)
    peer.send_env("stuck")
    assert peer.read_command() == 'EXEC Dial "PJSIP/seat1"'
    start = time.monotonic()
    server.stop(grace=0.2)
    assert time.monotonic() - start < 5.0  # the Dial would have waited 30 s
    assert len(errors) == 1 and isinstance(errors[0], CallerHungUp)
    assert server.active_sessions == 0
    peer.close()


def test_stop_ends_a_serve_forever_run_by_the_caller() -> None:
    server = AgiServer(("127.0.0.1", 0), {"answer_then_set": answer_then_set}, limits=FAST)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    assert normal_call(server.address) == NORMAL
    server.stop(grace=1.0)
    thread.join(timeout=2.0)
    assert not thread.is_alive()


def test_garbage_mid_call_is_a_bad_session_and_reaches_on_error(make_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi")
    errors: list[Exception] = []
    server = make_server(
        handlers={"answer_then_set": answer_then_set}, on_error=lambda s, e: errors.append(e)
    )
    peer = FakeAsterisk.connect(server.address)
    peer.send_env("answer_then_set")
    assert peer.play(["<html>oops</html>"]) == ["ANSWER"]
    peer.close()
    assert len(errors) == 1 and isinstance(errors[0], BadSession)
    assert server.stats().bad_sessions == 1
    assert "reason=unparsable AGI response" in caplog.text


def _hub_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "agi-hub"}


def test_calls_in_flight_share_one_thread_that_ends_at_stop() -> None:
    threads: set[int] = set()

    def held(session: AgiSession) -> None:
        threads.add(threading.get_ident())
        with session.command_timeout(3):
            session.appexec("Queue", "seats")

    before = _hub_threads()
    server = AgiServer(("127.0.0.1", 0), {"held": held}, limits=FAST)
    server.start()
    peers = [FakeAsterisk.connect(server.address) for _ in range(20)]
    for peer in peers:
        peer.send_env("held")
    for peer in peers:  # all 20 are inside their Queue at once
        assert peer.read_command() == 'EXEC Queue "seats"'
    assert server.active_sessions == 20
    assert len(threads) == 1  # a thread per call would be 20
    ours = _hub_threads() - before
    assert len(ours) == 1 and threading.get_ident() not in threads
    for peer in peers:
        peer.reply("200 result=0")
        assert peer.wait_closed() < 1.0
        peer.close()
    server.stop(grace=1.0)
    for thread in ours:
        thread.join(timeout=2.0)
        assert not thread.is_alive()


def test_the_accept_loop_lets_calls_run_amid_a_burst_of_connections(make_server) -> None:
    # A "ticker" call yields to the hub over and over, noting how many sessions are in
    # flight each time it runs again. A burst is then queued all at once (a blocker
    # session holds the server's thread, which no real handler may do, while the
    # connections pile up): the accept loop must let the ticker run between batches
    # of accepts, not take the whole burst first.
    _raise_nofile(4096)
    in_flight: list[int] = []

    def ticker(session: AgiSession) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server.active_sessions < BURST:
            in_flight.append(server.active_sessions)
            # a timer, not sleep(0): a greenlet re-queuing itself at once can keep the
            # hub from polling the listener for seconds (seen), which no call does
            gevent.sleep(0.001)
        in_flight.append(server.active_sessions)

    server = make_server(
        handlers={"ticker": ticker, "blocker": lambda s: time.sleep(0.5)},
        limits=SessionLimits(env_timeout=5.0, result_timeout=5.0, session_deadline=10.0),
    )
    peers = [FakeAsterisk.connect(server.address)]
    peers[0].send_env("ticker")
    while not in_flight:
        time.sleep(0.01)
    peers.append(FakeAsterisk.connect(server.address))
    peers[1].send_env("blocker")
    time.sleep(0.1)  # the blocker holds the server's thread now
    peers += [FakeAsterisk.connect(server.address) for _ in range(BURST)]
    try:
        deadline = time.monotonic() + 10
        while server.active_sessions < BURST and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the ticker's last note
    finally:
        for peer in peers:
            peer.close()
    assert in_flight and in_flight[-1] >= BURST, "the burst was never taken in"
    # Between two of the ticker's turns the hub took in a few batches, never the burst.
    jumps = [later - earlier for earlier, later in itertools.pairwise(in_flight)]
    assert max(jumps) <= 4 * AgiServer.ACCEPT_BATCH, max(jumps)
    assert len([n for n in in_flight if 2 < n < BURST]) >= 3


BURST = 900

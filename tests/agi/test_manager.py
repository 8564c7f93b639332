"""The manager link's timeouts and event matching, against a fake manager."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ivr.agi.manager import AmiLink, AmiSettings, AmiUnavailable

from agi.fake_manager import FakeManager


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_manager_fails_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(AmiUnavailable, match="unreachable"):
        AmiLink(AmiSettings("127.0.0.1", free_port(), "ivr", "s3cret")).open()
    assert time.monotonic() - started < 2.5


def test_a_silent_manager_fails_within_the_action_timeout() -> None:
    manager = FakeManager(silent_on="Getvar")
    try:
        with AmiLink(AmiSettings("127.0.0.1", manager.port, "ivr", "s3cret"), 0.3) as link:
            started = time.monotonic()
            with pytest.raises(AmiUnavailable, match="no answer to Getvar"):
                link.getvar("PJSIP/x", "BRIDGEPEER")
            assert time.monotonic() - started < 1.0
    finally:
        manager.close()


def test_a_manager_that_never_greets_costs_no_thread_nor_socket() -> None:
    # A hung Asterisk still accepts TCP: every seat request then fails in open(), and
    # must not leave pyst2's threads and the socket behind. Both are judged by what this
    # test started, not by process-wide counts that other tests' leftovers can move.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    settings = AmiSettings("127.0.0.1", server.getsockname()[1], "ivr", "s3cret")
    before = set(threading.enumerate())
    try:
        for _ in range(4):
            with pytest.raises(AmiUnavailable, match="no answer to greeting"):
                AmiLink(settings, action_timeout=0.2).open()
        deadline = time.monotonic() + 3
        while started_threads(before) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started_threads(before) == []
        # Each attempt's connection is closed on our side (after a polite Logoff): the
        # server reads to end of file, where a leaked socket would leave it waiting.
        server.settimeout(1.0)
        for _ in range(4):
            accepted, _ = server.accept()
            with accepted:
                accepted.settimeout(1.0)
                while accepted.recv(4096):
                    pass
    finally:
        server.close()


def started_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_events_are_matched_to_their_action() -> None:
    manager = FakeManager(originate={"Response": "Failure", "Reason": "5"})
    try:
        with AmiLink(AmiSettings("127.0.0.1", manager.port, "ivr", "s3cret")) as link:
            other = link.expect("OriginateResponse", "someone-else")
            mine = link.expect("OriginateResponse", "mine")
            link.action("Originate", Channel="Local/110@ivr-outbound", ActionID="mine")
            event = mine(2.0)
            assert event is not None and event.get_header("Reason") == "5"
            assert other(0.1) is None
        # The Logoff is written, not waited for: give the fake manager time to read it.
        deadline = time.monotonic() + 2
        while manager.names()[-1] != "Logoff" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert manager.names()[0] == "Login" and manager.names()[-1] == "Logoff"
    finally:
        manager.close()


def test_an_event_that_comes_between_two_polls_is_kept() -> None:
    # A sub-centre rings for 25 s, watched in short polls: its OriginateResponse comes
    # long after the first poll gave up, and must still be there for the next one.
    manager = FakeManager(originate={"Response": "Failure", "Reason": "3"}, originate_delay=0.6)
    try:
        with AmiLink(AmiSettings("127.0.0.1", manager.port, "ivr", "s3cret")) as link:
            response = link.expect("OriginateResponse", "ring-1")
            link.action("Originate", Channel="Local/059412366@ivr-outbound", ActionID="ring-1")
            assert response(0.1) is None and response(0.1) is None
            event = None
            deadline = time.monotonic() + 3
            while event is None and time.monotonic() < deadline:
                event = response(0.1)
            assert event is not None and event.get_header("Reason") == "3"
            assert response(0.1) is None  # taken once
    finally:
        manager.close()


def test_a_link_whose_file_the_reader_closed_fails_as_unavailable() -> None:
    # pyst2's reader closes the socket's file when the manager leaves, and only then
    # marks the link down: a write in between must fail as AmiUnavailable, and closing
    # the link then must not raise at all.
    manager = FakeManager()
    try:
        link = AmiLink(AmiSettings("127.0.0.1", manager.port, "ivr", "s3cret")).open()
        link._sock.close()  # the reader's half of its own shutdown
        with pytest.raises(AmiUnavailable, match="manager link broke"):
            link.action("Setvar", Channel="PJSIP/x", Variable="A", Value="1")
        link.close()
    finally:
        manager.close()


def test_an_error_reply_is_an_error() -> None:
    manager = FakeManager(secret="right")
    try:
        with pytest.raises(AmiUnavailable, match="login refused: Authentication failed"):
            AmiLink(AmiSettings("127.0.0.1", manager.port, "ivr", "wrong")).open()
    finally:
        manager.close()

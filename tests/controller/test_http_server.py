"""`ivr serve`'s HTTP listener stays bounded: one client holding connections half-sent
costs a bounded number of threads and descriptors, for a bounded time."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from ivr.web.server import BoundedRequestHandler, BoundedWSGIServer


class QuickHandler(BoundedRequestHandler):
    timeout = 0.5  # CLIENT_TIMEOUT_S, shortened for the test


@pytest.fixture
def server() -> Iterator[BoundedWSGIServer]:
    app = Flask("bounded-test")
    app.add_url_rule("/healthz", "healthz", lambda: "ok")
    served = BoundedWSGIServer("127.0.0.1", 0, app, handler=QuickHandler, max_connections=4)
    threading.Thread(target=served.serve_forever, daemon=True).start()
    yield served
    served.shutdown()
    served.server_close()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_requests_hold_at_most_the_bound_and_not_for_long(
    server: BoundedWSGIServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.server_port
    idle = []
    with caplog.at_level(logging.WARNING, logger="ivr.web.server"):
        for _ in range(10):  # one client that never finishes its request line
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            idle.append(sock)
        time.sleep(0.2)
        held = [s for s in idle if not closed_within(s, 0.05)]
    try:
        assert len(held) == 4 and server.refused == 6  # the rest closed at once
        assert sum("closing new ones" in r.getMessage() for r in caplog.records) == 1
        assert all(closed_within(s, 2.0) for s in held)  # dropped at the client timeout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200  # and the listener serves others again
    finally:
        for sock in idle:
            sock.close()


def test_ivr_serve_listens_with_the_bounded_server(config_copy: Path) -> None:
    from ivr import serve
    from ivr.settings import load_settings

    controller = serve.Controller(
        config_copy, load_settings(config_copy), agi_address=("127.0.0.1", 0),
        http_address=("127.0.0.1", 0), redis_url="redis://127.0.0.1:1/0",
    )  # fmt: skip
    controller.start()
    try:
        assert isinstance(controller.http, BoundedWSGIServer)
        assert controller.http.RequestHandlerClass.timeout == 10.0
    finally:
        controller.stop()

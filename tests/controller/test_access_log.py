"""`ivr serve`'s request log: paths, status codes, and never a caller's number."""

from __future__ import annotations

import logging
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from ivr.web.access_log import MaskedRequestLog

CALLER = "13912340000"


@pytest.fixture
def served() -> Iterator[int]:
    app = Flask("access-log-test")
    app.add_url_rule("/twilio/voice", "voice", lambda: "ok", methods=["GET"])
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MaskedRequestLog)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()


def test_a_get_webhooks_query_is_not_logged(served: int, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{served}/twilio/voice?CallSid=CA1&From=%2B86{CALLER}&To=%2B8659112345"
    with (
        caplog.at_level(logging.INFO, logger="werkzeug"),
        urllib.request.urlopen(url, timeout=5) as answer,
    ):
        assert answer.status == 200
    (line,) = [r.getMessage() for r in caplog.records if "/twilio/voice" in r.getMessage()]
    assert '"GET /twilio/voice HTTP/1.1" 200' in line
    assert re.search(r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00\]", line), line
    assert CALLER not in line and "From" not in line


def test_a_malformed_request_line_is_logged_masked(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="werkzeug"),
        socket.create_connection(("127.0.0.1", served), timeout=5) as sock,
    ):
        sock.sendall(f"GET /twilio/voice?From={CALLER} HTTP/1.1 extra\r\n\r\n".encode())
        assert b"400" in sock.recv(4096)  # refused (in HTTP/0.9 form: no version parsed)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "400" in logged
    assert "139****0000" in logged and CALLER not in logged

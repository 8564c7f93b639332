"""`ivr serve`'s HTTP listener: werkzeug's threaded server, bounded.

Left as it is, werkzeug gives every connection a thread for as long as the client
keeps it open, with no limit on either: one client holding connections half-sent
would use up the process's threads and file descriptors, which the FastAGI
listener, Redis and the spool share. Here a connection waits at most
`CLIENT_TIMEOUT_S` for its client, and beyond `MAX_CONNECTIONS` at once a new one is
closed as soon as it is accepted.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from werkzeug.serving import ThreadedWSGIServer

from ivr.web.access_log import MaskedRequestLog

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256  # far above what Twilio's webhooks, seats and Prometheus need
CLIENT_TIMEOUT_S = 10.0  # a request line, headers or body trickling in slower is dropped
REFUSALS_LOGGED_EVERY_S = 10.0


class BoundedRequestHandler(MaskedRequestLog):
    timeout = CLIENT_TIMEOUT_S  # socketserver sets it on the connection


class BoundedWSGIServer(ThreadedWSGIServer):
    """A thread per connection, at most ``max_connections`` of them."""

    def __init__(self, *args: Any, max_connections: int = MAX_CONNECTIONS, **kwargs: Any) -> None:
        kwargs.setdefault("handler", BoundedRequestHandler)
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        self._refusal_logged = 0.0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            now = time.monotonic()
            if now - self._refusal_logged >= REFUSALS_LOGGED_EVERY_S:
                self._refusal_logged = now
                log.warning("HTTP: %d connections open, the most allowed; closing new ones "
                            "(%d so far)", self.max_connections, self.refused)  # fmt: skip
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

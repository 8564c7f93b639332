"""A minimal Asterisk Manager Interface client: enough to watch the lab's event stream.

A call counts as routed when the seat saw the INVITE, the CDR names the destination and
the event stream agrees; this reads the last of the three.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator

__all__ = ["AmiClient", "AmiError"]

Message = dict[str, str]


class AmiError(RuntimeError):
    """The manager refused an action or the connection broke."""


class AmiClient:
    """One AMI session. Use as a context manager: it logs in and out."""

    def __init__(
        self, host: str, port: int, username: str, secret: str, timeout: float = 5.0
    ) -> None:
        self.host, self.port = host, port
        self._username, self._secret = username, secret
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._events: deque[Message] = deque()
        self._ids = itertools.count(1)
        self.banner = ""

    def __enter__(self) -> AmiClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.banner = self._read_line()
        self.action("Login", Username=self._username, Secret=self._secret, Events="on")

    def close(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._send({"Action": "Logoff", "ActionID": "logoff"})
        self._sock.close()
        self._sock = None

    # ------------------------------------------------------------ wire
    def _send(self, fields: Message) -> None:
        if self._sock is None:
            raise AmiError("not connected")
        text = "".join(f"{key}: {value}\r\n" for key, value in fields.items()) + "\r\n"
        self._sock.sendall(text.encode())

    def _fill(self, deadline: float) -> None:
        if self._sock is None:
            raise AmiError("not connected")
        self._sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            return
        if not chunk:
            raise AmiError("manager closed the connection")
        self._buffer += chunk

    def _read_line(self) -> str:
        deadline = time.monotonic() + self.timeout
        while b"\r\n" not in self._buffer:
            if time.monotonic() > deadline:
                raise AmiError("no banner from the manager")
            self._fill(deadline)
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def _read_message(self, deadline: float) -> Message | None:
        while b"\r\n\r\n" not in self._buffer:
            if time.monotonic() >= deadline:
                return None
            self._fill(deadline)
        block, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        message: Message = {}
        for line in block.decode(errors="replace").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                message.setdefault(key.strip(), value.strip())
        return message

    # ------------------------------------------------------------ api
    def action(self, name: str, **fields: str) -> Message:
        """Send an action and return its response; events read meanwhile are kept."""
        action_id = f"lab-{next(self._ids)}"
        self._send({"Action": name, "ActionID": action_id, **fields})
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message is None:
                raise AmiError(f"no response to {name} within {self.timeout} s")
            if "Event" in message and message.get("ActionID") != action_id:
                self._events.append(message)
            elif message.get("ActionID") == action_id and "Response" in message:
                if message["Response"].lower() == "error":
                    raise AmiError(f"{name}: {message.get('Message', message)}")
                return message

    def events(self, timeout: float) -> Iterator[Message]:
        """Events as they come, for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self._events:
                yield self._events.popleft()
                continue
            message = self._read_message(deadline)
            if message is None:
                return
            if "Event" in message:
                yield message

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        """The first event matching ``predicate``; earlier events are dropped."""
        for event in self.events(timeout):
            if predicate(event):
                return event
        raise AmiError(f"no matching event within {timeout} s")

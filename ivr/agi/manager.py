"""The controller's Asterisk Manager (AMI) link, over pyst2's manager.

pyst2 parses the manager's messages and runs its reader and event threads; it has no
timeouts at all (connect and every action wait forever). This subclass adds them: a
transfer must fail in seconds with a clear reason, never hang a seat's request. One
link serves one transfer and is closed after it, so a late answer to a timed-out
action can never be taken for the answer to the next one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asterisk.manager import Event, Manager, ManagerException, ManagerMsg

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
ACTION_TIMEOUT_S = 3.0


class AmiUnavailable(RuntimeError):
    """The manager could not be reached, refused the login, or did not answer in time."""


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = ""
    secret: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.username and self.secret)


class AmiLink(Manager):  # type: ignore[misc]
    """pyst2's Manager with connect and action timeouts, and events waited for by id."""

    def __init__(self, settings: AmiSettings, action_timeout: float = ACTION_TIMEOUT_S) -> None:
        super().__init__()
        self.settings = settings
        self.action_timeout = action_timeout
        self._waiters: dict[str, queue.Queue[Event]] = {}
        self._waiters_lock = threading.Lock()
        self.register_event("*", self._route_event)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> AmiLink:
        s = self.settings
        try:
            sock = socket.create_connection((s.host, s.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise AmiUnavailable(f"manager {s.host}:{s.port} unreachable: {exc}") from exc
        sock.settimeout(None)  # pyst2's reader thread blocks on it; close() ends it
        self._raw = sock
        self._sock = sock.makefile(mode="rwb", buffering=0)
        self._connected.set()
        self._running.set()
        self.message_thread.daemon = True
        self.event_dispatch_thread.daemon = True
        self.message_thread.start()
        self.event_dispatch_thread.start()
        try:
            self._response(f"greeting from {s.host}:{s.port}")
            login = {"Action": "Login", "Username": s.username, "Secret": s.secret}
            reply = self.send_action(login)
            if reply.get_header("Response") != "Success":
                why = reply.get_header("Message", "")
                raise AmiUnavailable(f"manager login refused: {why}")
        except BaseException:
            # The caller never gets this link to close: a hung manager that still
            # accepts connections must not cost a socket and threads per request.
            self.close()
            raise
        return self

    def __enter__(self) -> AmiLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        except Exception:  # closing must never mask what happened inside
            log.debug("manager close failed", exc_info=True)

    def close(self) -> None:
        if self._running.is_set() and self._connected.is_set():
            with contextlib.suppress(AmiUnavailable):
                self._write({"Action": "Logoff", "ActionID": "logoff"})
        raw = getattr(self, "_raw", None)
        if raw is not None:
            # EOF ends pyst2's reader thread cleanly; closing under it would not
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            if self.message_thread.is_alive():
                self.message_thread.join(timeout=1.0)
            raw.close()
        self._running.clear()
        self._connected.clear()
        with self._waiters_lock:
            self._waiters.clear()

    # -- actions ---------------------------------------------------------------------
    def send_action(self, cdict: dict[str, Any] | None = None, **kwargs: Any) -> ManagerMsg:
        """One action and its response, within ``action_timeout``."""
        fields = {**(cdict or {}), **kwargs}
        fields.setdefault("ActionID", f"ivr-{self.next_seq():08x}")
        self._write(fields)
        return self._response(f"{fields.get('Action')} ({fields['ActionID']})")

    def action(self, name: str, **fields: str) -> ManagerMsg:
        """An action that must succeed: an error reply raises AmiUnavailable."""
        reply = self.send_action({"Action": name, **fields})
        if reply.get_header("Response") != "Success":
            raise AmiUnavailable(f"{name}: {reply.get_header('Message', 'refused')}")
        return reply

    def getvar(self, channel: str, variable: str) -> str:
        reply = self.send_action({"Action": "Getvar", "Channel": channel, "Variable": variable})
        if reply.get_header("Response") != "Success":
            return ""
        return str(reply.get_header("Value", "") or "")

    def expect(self, event: str, action_id: str) -> Callable[[float], Event | None]:
        """Register for ``event`` carrying ``action_id`` *before* sending the action;
        the returned function waits up to its timeout for it (None if it has not come
        yet). It may be called again and again: a target rings for many polls, and an
        event arriving between two of them is kept. The registration ends when the
        event is taken, or with the link."""
        box: queue.Queue[Event] = queue.Queue()
        key = f"{event}/{action_id}"
        with self._waiters_lock:
            self._waiters[key] = box

        def wait(timeout: float) -> Event | None:
            try:
                found = box.get(timeout=timeout)
            except queue.Empty:
                return None
            with self._waiters_lock:
                self._waiters.pop(key, None)
            return found

        return wait

    # -- plumbing --------------------------------------------------------------------
    def _write(self, fields: dict[str, Any]) -> None:
        if not self._connected.is_set():
            raise AmiUnavailable("manager link closed")
        text = "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        try:
            self._sock.write(text.encode("utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: pyst2's reader closed the file
            raise AmiUnavailable(f"manager link broke: {exc}") from exc

    def _response(self, what: str) -> ManagerMsg:
        try:
            reply = self._response_queue.get(timeout=self.action_timeout)
        except queue.Empty:
            raise AmiUnavailable(f"no answer to {what} within {self.action_timeout} s") from None
        if not reply:
            raise AmiUnavailable(f"manager closed the link awaiting {what}")
        return reply

    def _route_event(self, event: Event, manager: Manager) -> bool:
        key = f"{event.name}/{event.get_header('ActionID', '')}"
        with self._waiters_lock:
            box = self._waiters.get(key)
        if box is not None:
            box.put(event)
        return False


__all__ = ["AmiLink", "AmiSettings", "AmiUnavailable", "ManagerException"]

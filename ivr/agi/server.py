"""FastAGI server: accepts Asterisk's connections and runs one handler per call.

Why greenlets (gevent) rather than a thread per call or asyncio: handlers are
plain blocking code over pyst2's synchronous command set and the pure core,
which greenlets run as they are, with no `await`; and a call spends nearly all
its life waiting for Asterisk, which on a thread per call costs a context switch
for every command (about 34 per call, most of the server's CPU under load in
bench/agi_load.py). One thread runs a gevent hub; the accept loop and every
session are greenlets in it, and a session waiting for Asterisk yields to the
others (see `AgiSession`).

The rule that follows: a handler waits only through its session (AGI commands).
Anything else that blocks (a sleep, a lock held across I/O, a network call that
is not gevent's) stalls every call, so handlers hand slow work to other threads
(the event publisher does its Redis I/O on its own).

The accept loop only does cheap checks (allow-list, session bound), and every
read has a deadline, so a slow or hostile peer only ever costs its own session,
for a time bounded by `SessionLimits`.

Routing follows wazo-agid's convention: `AGI(agi://host:port/<route>)` runs the
handler registered under `<route>`, and a handler registered without a name is
registered under its function name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import gevent
from gevent.pool import Group
from gevent.socket import wait as wait_on_watcher

from ivr.agi.session import AgiSession, BadSession, CallerHungUp, SessionLimits, mask_text
from ivr.core.clock import now_local
from ivr.core.privacy import loggable
from ivr.listen import listen

__all__ = ["AgiServer", "ErrorHook", "Handler", "ServerStats", "UnknownRoute"]

log = logging.getLogger(__name__)

Handler = Callable[[AgiSession], object]
ErrorHook = Callable[[AgiSession, Exception], object]
H = TypeVar("H", bound=Handler)

# Asterisk gives up a FastAGI connect after ~2 s while an overflowed SYN is
# retried after 1 s then 3 s: a short listen queue turns a burst into failed
# calls. The kernel further caps this at net.core.somaxconn.
DEFAULT_BACKLOG = 1024


class UnknownRoute(LookupError):
    """No handler is registered for the session's agi_network_script."""

    def __init__(self, route: str) -> None:
        super().__init__(f"no AGI handler for route {route!r}")
        self.route = route


@dataclass(slots=True)
class ServerStats:
    """Counters since start; read a consistent copy with `AgiServer.stats()`."""

    accepted: int = 0
    rejected_host: int = 0
    rejected_busy: int = 0
    bad_sessions: int = 0
    unknown_routes: int = 0
    completed: int = 0
    hangups: int = 0
    handler_errors: int = 0
    on_error_failures: int = 0


class Throttle:
    """At most one log line per `interval` seconds for each kind of refusal: a flood
    of connections must not become a flood of lines (the disk, and whoever reads
    them). A line that follows quiet says how many it stood for."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, tuple[float, str]] = {}  # monotonic, local time of day
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, kind: str) -> str | None:
        """None: stay quiet; else log, with this said after the line ("" or how many
        lines of its kind were not written since the last one)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last[0] < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            self._last[kind] = (now, now_local().strftime("%H:%M:%S"))
            held = self._held.pop(kind, 0)
        return f" (and {held} more like it since {last[1]})" if held and last else ""


class AgiServer:
    """FastAGI server. Use `start()`/`stop()` (tests, CLI) or `serve_forever()`.

    handlers: {route_name: callable(session)}; more via `register()`.
    allowed_hosts: client IPs or networks ("127.0.0.1", "10.0.0.0/24"); any
        other client is closed before a byte is read.
    max_sessions: sessions in flight; a connection over the bound is closed
        unanswered, so Asterisk's AGI() fails at once (AGISTATUS=FAILURE) and
        the dialplan falls through instead of waiting.
    on_error: called as on_error(session, exc) for every exception a handler
        raises (including CallerHungUp: check `session.hung_up`) and with
        UnknownRoute for an unregistered route; the session is still open.

    The listening socket is bound on construction.
    """

    # Connections accepted in a row before the calls in progress get a turn: a flood
    # (even of connections refused at once) must not starve them.
    ACCEPT_BATCH = 64

    def __init__(
        self,
        address: tuple[str, int] = ("127.0.0.1", 4573),
        handlers: Mapping[str, Handler] | None = None,
        *,
        allowed_hosts: Iterable[str] = ("127.0.0.1",),
        max_sessions: int = 1000,
        limits: SessionLimits | None = None,
        on_error: ErrorHook | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.handlers: dict[str, Handler] = {}
        for name, fn in (handlers or {}).items():
            self.register(fn, name=name)
        self.allowed = tuple(ipaddress.ip_network(h, strict=False) for h in allowed_hosts)
        self.max_sessions = max_sessions
        self.limits = limits or SessionLimits()
        self.on_error = on_error
        self.backlog = backlog
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a session ended
        self._inflight = 0  # accepted connections not yet closed (the bound)
        self._active: set[AgiSession] = set()
        self._stats = ServerStats()
        self._throttle = Throttle()
        self._thread: threading.Thread | None = None
        self._hub: Any = None  # the hub serve_forever() runs in, once it runs
        self._acceptor: gevent.Greenlet | None = None
        self._ready = threading.Event()  # serve_forever() is up (or never will be)
        self._finished = threading.Event()  # serve_forever() has returned
        self._stopping = False
        self.socket = listen("FastAGI", address, backlog)
        self.socket.setblocking(False)
        self._listening = True

    # ------------------------------------------------------------ registry

    def register(self, fn: H, *, name: str | None = None) -> H:
        """Register `fn` for route `name` (default: fn.__name__); one handler
        per route. Returns fn, so it also works as a decorator."""
        route = name or fn.__name__
        if route in self.handlers:
            raise ValueError(f"an AGI handler is already registered for route {route!r}")
        self.handlers[route] = fn
        return fn

    # ----------------------------------------------------------- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    def start(self) -> tuple[str, int]:
        """Serve in a background thread; returns the bound (host, port)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        address = self.address
        self._thread = threading.Thread(
            target=self._serve_in_own_thread, name="agi-hub", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        log.info("agi server listening on %s:%d", *address)
        return address

    def _serve_in_own_thread(self) -> None:
        try:
            self.serve_forever()
        finally:
            # The thread ends here: free its event loop (an epoll and a pipe).
            gevent.get_hub().destroy(destroy_loop=True)

    def serve_forever(self) -> None:
        """Run the accept loop and every session in this thread's gevent hub until
        stop() has been called and the last session has ended."""
        if self._stopping:
            self._ready.set()
            self._finished.set()
            return
        sessions = Group()
        try:
            self._hub = gevent.get_hub()
            self._acceptor = gevent.spawn(self._accept_loop, sessions)
            self._ready.set()
            self._acceptor.join()
            sessions.join()
        finally:
            self._close_listener()
            self._ready.set()
            self._finished.set()

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let sessions in flight finish for up to `grace`
        seconds, then cut the rest (their handlers see CallerHungUp).

        Call it from another thread than the one running serve_forever()."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        if self._hub is not None and not self._finished.is_set():
            # The accept loop belongs to the hub's thread: ask it to end there.
            self._hub.loop.run_callback_threadsafe(self._end_accepting)
        else:
            self._close_listener()
        if not self._wait_drained(grace):
            with self._lock:
                leftover = list(self._active)
            for session in leftover:
                log.warning(
                    "agi session cut at shutdown peer=%s route=%s",
                    session.peer,
                    session.script or "?",
                )
                session.abort()
            self._wait_drained(2.0)
        if self._hub is not None:
            self._finished.wait(5.0)
        if self._thread is not None:
            self._thread.join(5.0)
            log.info("agi server stopped")  # (one never started only closes its socket)

    def _end_accepting(self) -> None:
        # In the hub, from stop(): the accept loop ends and closes the listener,
        # so new connects are refused and Asterisk falls through.
        if self._acceptor is not None:
            self._acceptor.kill(block=False)

    def _close_listener(self) -> None:
        with self._lock:
            if not self._listening:
                return
            self._listening = False
        with contextlib.suppress(OSError):
            self.socket.close()

    def _wait_drained(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._changed:
            while self._inflight and (left := end - time.monotonic()) > 0:
                self._changed.wait(left)
            return self._inflight == 0

    def __enter__(self) -> AgiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> ServerStats:
        with self._lock:
            return replace(self._stats)

    @property
    def active_sessions(self) -> int:
        """Connections accepted and not yet closed (what max_sessions bounds)."""
        with self._lock:
            return self._inflight

    # ----------------------------------------------------- accept loop (the hub)

    def _accept_loop(self, sessions: Group) -> None:
        listener = self.socket
        readable = self._hub.loop.io(listener.fileno(), 1)
        in_a_row = 0
        try:
            while True:
                if in_a_row >= self.ACCEPT_BATCH:
                    in_a_row = 0
                    gevent.sleep(0)  # the calls in progress, then more accepts
                try:
                    sock, client_address = listener.accept()
                except BlockingIOError:
                    in_a_row = 0
                    wait_on_watcher(readable)
                    continue
                except OSError as exc:  # out of descriptors, say: do not spin
                    log.error("agi accept failed: %s", exc)
                    gevent.sleep(0.1)
                    continue
                in_a_row += 1
                if self._admit(client_address):
                    sessions.spawn(self._run_session, sock, client_address)
                else:
                    _drop(sock)
        finally:
            readable.close()
            self._close_listener()

    def _admit(self, client_address: Any) -> bool:
        # Runs in the accept loop: nothing here may wait.
        host = client_address[0]
        if not self._host_allowed(host):
            self._count("rejected_host")
            if (more := self._throttle.allow("rejected_host")) is not None:
                log.warning("agi connection closed peer=%s:%s reason=host not allowed%s",
                            host, client_address[1], more)  # fmt: skip
            return False
        with self._lock:
            busy = self._inflight >= self.max_sessions
            if not busy:
                self._inflight += 1
        if busy:
            self._count("rejected_busy")
            if (more := self._throttle.allow("rejected_busy")) is not None:
                log.warning("agi connection closed peer=%s:%s reason=over capacity (%d sessions)%s",
                            host, client_address[1], self.max_sessions, more)  # fmt: skip
            return False
        return True

    # ---------------------------------------------------- one session (its greenlet)

    def _run_session(self, sock: socket.socket, client_address: Any) -> None:
        # _admit counted this call in flight: from here every path must count it out.
        session: AgiSession | None = None
        try:
            with contextlib.suppress(OSError):  # one small write per command: no Nagle delay
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = AgiSession(sock, self.limits, peer=f"{client_address[0]}:{client_address[1]}")
            with self._lock:
                self._active.add(session)
                self._stats.accepted += 1
            self._serve(session)
        except OSError as exc:  # the peer vanished between accept and setup
            log.warning("agi session closed peer=%s:%s reason=%s", *client_address[:2], exc)
        except Exception:  # last line of defence: never reaches other sessions
            log.exception("agi session failed peer=%s:%s", *client_address[:2])
        finally:
            if session is None:
                sock.close()
            else:
                session.close()
            self._count_out(session)

    def _count_out(self, session: AgiSession | None) -> None:
        with self._changed:
            self._inflight -= 1
            if session is not None:
                self._active.discard(session)
            self._changed.notify_all()

    def _serve(self, session: AgiSession) -> None:
        try:
            session.read_env()
        except BadSession as exc:
            self._bad(session, exc.reason)
            return
        route = session.script
        handler = self.handlers.get(route)
        if handler is None:
            self._bad(session, f"unknown route '{loggable(route)}'", counter="unknown_routes")
            self._call_on_error(session, UnknownRoute(route))
            return
        try:
            handler(session)
        except CallerHungUp as exc:
            self._count("hangups")
            self._done(session, "hangup", exc)
            self._call_on_error(session, exc)
        except BadSession as exc:  # Asterisk stopped making sense mid-call
            self._bad(session, f"{exc.reason} (route {route!r})")
            self._call_on_error(session, exc)
        except Exception as exc:
            self._count("handler_errors")
            # Formatted by hand so that numbers in the traceback get masked.
            log.error(
                "agi handler %r raised peer=%s uniqueid=%s\n%s",
                route,
                session.peer,
                session.uniqueid,
                mask_text("".join(traceback.format_exception(exc))),
            )
            self._done(session, f"error {type(exc).__name__}", exc)
            self._call_on_error(session, exc)
        else:
            self._count("completed")
            self._done(session, "ok", None)

    def _call_on_error(self, session: AgiSession, exc: Exception) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(session, exc)
        except CallerHungUp:
            pass  # the fallback found the caller gone: nothing left to do
        except Exception:
            self._count("on_error_failures")
            log.exception(
                "agi on_error hook raised peer=%s uniqueid=%s", session.peer, session.uniqueid
            )

    # ------------------------------------------------------------- helpers

    def _host_allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.allowed)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    def _bad(self, session: AgiSession, reason: str, counter: str = "bad_sessions") -> None:
        # The one log line for a session closed as bad (or none, in a flood of them).
        self._count(counter)
        if (more := self._throttle.allow(counter)) is not None:
            log.warning("agi session closed peer=%s reason=%s%s", session.peer, reason,
                        more)  # fmt: skip

    def _done(self, session: AgiSession, outcome: str, exc: BaseException | None) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "agi session done route=%s uniqueid=%s outcome=%s elapsed=%.3fs%s",
            loggable(session.script),
            loggable(session.uniqueid),
            outcome,
            session.elapsed,
            f" detail={mask_text(str(exc))}" if exc is not None else "",
        )


def _drop(sock: socket.socket) -> None:
    """Close a refused connection at once; Asterisk's AGI() fails and falls through."""
    with contextlib.suppress(OSError):
        sock.close()

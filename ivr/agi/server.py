"""FastAGI server: accepts Asterisk's connections and runs one handler per call.

Why threads (a `socketserver.TCPServer` whose sessions each run on a pooled
worker thread) rather than asyncio: handlers are plain blocking code over
pyst2's synchronous command set and the pure core, so an asyncio server would
still need a thread per in-flight session to run the handler, and threads keep
handler code free of `await`. bench/agi_load.py measures the cost: on the
protocol alone a minimal asyncio responder is somewhat cheaper per call, but
both sustain an order of magnitude more calls than Asterisk can drive over AGI.

The workers accept for themselves (leader/follower): every idle worker waits in
accept(2) on the listening socket, the kernel hands each connection to one of
them, and that worker serves it, with no hand-off to another thread (each
hand-off is a wake-up and a GIL switch: bench/agi_load.py measured about 0.07
ms of CPU per call for it). A worker that takes the last idle slot starts
another worker first, so a connection never waits for a busy one. After
accept, a worker only does cheap, non-blocking checks (allow-list, session
bound) before it serves, so a slow or hostile peer only ever costs its own
thread, for a time bounded by `SessionLimits`.

Routing follows wazo-agid's convention: `AGI(agi://host:port/<route>)` runs the
handler registered under `<route>`, and a handler registered without a name is
registered under its function name.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import socketserver
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ivr.agi.session import AgiSession, BadSession, CallerHungUp, SessionLimits, mask_text

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


class _Unused(socketserver.BaseRequestHandler):
    """socketserver wants a handler class; the workers never use it."""


class AgiServer(socketserver.TCPServer):
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
    """

    allow_reuse_address = True
    # A worker idle this long (seconds) exits; busy hours keep their threads.
    worker_idle_exit = 60.0

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
        self.request_queue_size = backlog
        self.handlers: dict[str, Handler] = {}
        for name, fn in (handlers or {}).items():
            self.register(fn, name=name)
        self.allowed = tuple(ipaddress.ip_network(h, strict=False) for h in allowed_hosts)
        self.max_sessions = max_sessions
        self.limits = limits or SessionLimits()
        self.on_error = on_error
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a session ended
        self._inflight = 0  # accepted connections not yet closed (the bound)
        self._active: set[AgiSession] = set()
        self._stats = ServerStats()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._serving = False
        self._cut = False  # past the shutdown grace: serve nothing more
        # Worker threads are reused across sessions: starting a thread per call
        # costs ~0.2 ms of CPU (measured here), a quarter of the total. Idle
        # workers wait in accept(); `_idle` counts them, and the thread running
        # serve_forever() is one of them.
        self._idle = 0
        super().__init__(address, _Unused)

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
        self._thread = threading.Thread(target=self.serve_forever, name="agi-accept", daemon=True)
        self._thread.start()
        log.info("agi server listening on %s:%d", *self.address)
        return self.address

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Accept and serve until stop(). The calling thread is one of the workers
        and never exits for idleness. (poll_interval: kept for socketserver's
        signature; stop() wakes every idle worker at once.)"""
        with self._lock:
            if self._stopping:
                return
            self._serving = True
            self._idle += 1
        # An idle worker's accept() gives up after this long (see _accept_loop).
        with contextlib.suppress(OSError):
            self.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self.worker_idle_exit)
            )
        try:
            self._accept_loop(keep=True)
        finally:
            self._serving = False

    def shutdown(self) -> None:
        """Stop accepting (socketserver's name; it does not wait for the workers).
        stop() also lets the calls in flight finish."""
        with self._lock:
            self._stopping = True
        self._wake_acceptors()

    def _wake_acceptors(self) -> None:
        # Shutting the listening socket down ends every accept() waiting on it
        # (EINVAL on Linux); from here connects are refused.
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let sessions in flight finish for up to `grace`
        seconds, then cut the rest (their handlers see CallerHungUp).

        Call it from another thread than the one running serve_forever() (a
        signal handler on the thread inside serve_forever() would deadlock:
        use start() and wait for the signal on the main thread instead)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._wake_acceptors()
        self.server_close()  # new connects are refused: Asterisk falls through
        if not self._wait_drained(grace):
            with self._lock:
                self._cut = True
                leftover = list(self._active)
            for session in leftover:
                log.warning(
                    "agi session cut at shutdown peer=%s route=%s",
                    session.peer,
                    session.script or "?",
                )
                session.abort()
            self._wait_drained(2.0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)  # an accept loop that was serving a call ends after it
        log.info("agi server stopped")

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

    # ------------------------------------------ socketserver's hooks (accepting worker)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Runs in the accept loop: nothing here may block.
        host = client_address[0]
        if not self._host_allowed(host):
            self._count("rejected_host")
            log.warning(
                "agi connection closed peer=%s:%s reason=host not allowed", host, client_address[1]
            )
            return False
        with self._lock:
            busy = self._inflight >= self.max_sessions
            if not busy:
                self._inflight += 1
        if busy:
            self._count("rejected_busy")
            log.warning(
                "agi connection closed peer=%s:%s reason=over capacity (%d sessions)",
                host,
                client_address[1],
                self.max_sessions,
            )
            return False
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        # Only socketserver's handle_request() comes here (the workers call
        # _run_session themselves): serve the call on the calling thread.
        self._run_session(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints to stderr.
        log.exception("agi accept loop error peer=%s", client_address)

    # --------------------------------------------------- the workers (each its thread)

    def _accept_loop(self, keep: bool) -> None:
        """Accept and serve, one connection at a time, until stop(). A worker that
        is not `keep` exits once idle for `worker_idle_exit` with another worker
        still idle; the caller has counted this thread in `_idle`."""
        while True:
            try:
                sock, client_address = self.socket.accept()
            except OSError as exc:
                if self._stopping or exc.errno in (errno.EBADF, errno.EINVAL):
                    with self._lock:  # stop(): the listening socket is shut
                        self._idle -= 1
                    return
                if isinstance(exc, BlockingIOError | TimeoutError):  # idle that long
                    with self._lock:
                        if not keep and self._idle > 1:
                            self._idle -= 1
                            return
                    continue
                # socketserver's loop carried on after any accept error too; one
                # that repeats (out of descriptors) must not spin, though.
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    log.warning("agi accept failed: %s", exc)
                    time.sleep(0.01)
                continue
            try:
                verified = self.verify_request(sock, client_address)
            except Exception:  # never lose a worker (and its idle count) to a bug
                self.handle_error(sock, client_address)
                verified = False
            if not verified:
                self.shutdown_request(sock)
                continue
            with self._lock:
                self._idle -= 1
                spawn = self._idle == 0 and not self._stopping
                if spawn:  # the next connection must find someone in accept()
                    self._idle += 1
            if spawn:
                self._spawn(client_address)
            self._run_session(sock, client_address)
            with self._lock:
                self._idle += 1

    def _spawn(self, client_address: Any) -> None:
        try:
            threading.Thread(
                target=self._accept_loop, args=(False,), name="agi-worker", daemon=True
            ).start()
        except RuntimeError as exc:  # cannot start a thread: the others still accept
            with self._lock:
                self._idle -= 1
            log.error("agi worker not started peer=%s:%s reason=%s", *client_address[:2], exc)

    def _run_session(self, sock: socket.socket, client_address: Any) -> None:
        # verify_request counted this call in flight: from here every path must
        # count it out.
        session: AgiSession | None = None
        try:
            if self._cut:  # accepted as shutdown's grace ran out
                return
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
            self._bad(session, f"unknown route {route!r}", counter="unknown_routes")
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
        # The one log line for a session closed as bad.
        self._count(counter)
        log.warning("agi session closed peer=%s reason=%s", session.peer, reason)

    def _done(self, session: AgiSession, outcome: str, exc: BaseException | None) -> None:
        if not log.isEnabledFor(logging.INFO):  # spare the formatting on every call
            return
        log.info(
            "agi session done route=%s uniqueid=%s outcome=%s elapsed=%.3fs%s",
            session.script,
            session.uniqueid,
            outcome,
            session.elapsed,
            f" detail={mask_text(str(exc))}" if exc is not None else "",
        )


def _timeval(seconds: float) -> bytes:
    """A struct timeval for SO_RCVTIMEO (0 means never to the kernel: at least 1 ms)."""
    usec = max(1000, int(min(seconds, 86400.0) * 1_000_000))
    return struct.pack("@ll", usec // 1_000_000, usec % 1_000_000)

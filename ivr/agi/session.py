"""One FastAGI session over one accepted socket.

pyst2's `asterisk.agi.AGI` keeps the AGI command set (answer, stream_file,
get_data, set_variable, appexec, ...) and its result shapes; this module
replaces everything that touches I/O, because pyst2's own I/O is unusable in a
FastAGI server on Python 3: its __init__ installs a SIGHUP handler (only
allowed in the main thread) and reads sys.stdin, it writes every command and
result unmasked to stderr, and it neither expects Asterisk's `HANGUP` line nor
bounds a read in time or size.

The socket is non-blocking and every wait for it goes through the gevent hub of
the thread the session runs in: in the server, one hub runs every session as a
greenlet, so a session waiting for Asterisk costs no thread and no context
switch, and handler code stays plain blocking code over pyst2's command set.
A session used alone (tests) simply waits in its own thread's hub.

Every read here has a deadline (per line and per session) and a size limit, so
a misbehaving peer costs its own session for a bounded time and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from asterisk.agi import (
    AGI,
    AGIAppError,
    AGIException,
    AGIInvalidCommand,
    AGIUnknownError,
    AGIUsageError,
    re_code,
    re_kv,
)
from gevent.hub import Waiter, get_hub

from ivr.core.privacy import loggable, mask_number, mask_text

__all__ = [
    "AgiSession",
    "BadSession",
    "CallerHungUp",
    "InvalidCommand",
    "SessionLimits",
    "SessionTimeout",
    "UsageError",
    "mask_text",
]

log = logging.getLogger(__name__)

ResultDict = dict[str, tuple[str, str]]

# Environment fields that carry a phone number, masked whole in the debug log.
_NUMBER_FIELDS = frozenset({"agi_callerid", "agi_dnid", "agi_rdnis", "agi_extension"})
_ENV_LINE = re.compile(r"(agi_[A-Za-z0-9_]+):[ \t]?(.*)")
# A whole block of such lines (no CR), checked in one match rather than line by line.
_ENV_BLOCK = re.compile(r"(?:agi_[A-Za-z0-9_]+:[^\n\r]*\n)*agi_[A-Za-z0-9_]+:[^\n\r]*")


class CallerHungUp(AGIException):
    """The caller is gone: Asterisk sent `HANGUP`, answered 511 (dead channel),
    or closed/reset the socket.

    Deliberately not an `AGIError`: a handler that catches `AGIError` (say, to
    carry on after a missing prompt) must not swallow the end of the call.
    """


class BadSession(AGIException):
    """The peer does not speak FastAGI within our limits (garbage or empty
    environment, an over-long line, too many lines, an unparsable response)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionTimeout(BadSession):
    """A read outlived its idle timeout or the session's total deadline."""


class InvalidCommand(AGIInvalidCommand):
    """Asterisk answered 510: it does not know the command we sent."""

    def __init__(self, command: str, response: str) -> None:
        super().__init__(f"Asterisk rejected {_show(command)} as invalid: 510 {response}")
        self.command = command
        self.response = response


class UsageError(AGIUsageError):
    """Asterisk answered 520: the command exists but its arguments are wrong."""

    def __init__(self, command: str, usage: str) -> None:
        super().__init__(f"Asterisk rejected the syntax of {_show(command)}:\n{usage}")
        self.command = command
        self.usage = usage


# How long a result=-1 waits for Asterisk's HANGUP line before it counts as a failed
# application: measured in the lab, the line follows the -1 of an interrupted Queue
# within a few milliseconds.
HANGUP_GRACE_S = 0.25
# The same for Queue and Dial (see `hangup_expected`): their -1 is a caller who left
# all but always, and with Asterisk's CPU saturated the HANGUP line was seen to come
# later than HANGUP_GRACE_S, which turned departed callers into controller failures.
CONNECT_HANGUP_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Bounds on what one peer may cost us. Times are seconds."""

    max_line: int = 4096
    # Asterisk sends ~20 environment lines plus one per AGI() argument.
    max_env_lines: int = 256
    # Asterisk writes the whole environment right after connecting, so a peer
    # that is silent for this long is not Asterisk.
    env_timeout: float = 2.0
    # Waiting for a command's result also waits for the prompt or digits the
    # command plays or collects; long blockers (Dial) use `command_timeout`.
    result_timeout: float = 60.0
    send_timeout: float = 5.0
    # Hard cap on the whole session, whatever the per-read timeouts say.
    session_deadline: float = 900.0
    # `100 Trying` lines tolerated before the final answer to one command.
    max_intermediate: int = 32


class _NullStream:
    """Stands in for pyst2's stdin/stdout/stderr so that no inherited code path
    can reach the process's real standard streams."""

    def write(self, _data: Any) -> int:
        return 0

    def flush(self) -> None:
        return None

    def readline(self) -> str:
        raise BadSession("pyst2 tried to read its own stdin")


_NULL = _NullStream()


class AgiSession(AGI):
    """pyst2's AGI command set bound to one FastAGI socket.

    Construction does no I/O; call `read_env()` once, then the inherited command
    methods (`answer()`, `stream_file()`, `get_data()`, `set_variable()`,
    `appexec()`, ...) or `execute()` directly.

    Raises, beyond pyst2's own `AGIAppError` (result=-1, e.g. a missing sound)
    and `AGIUnknownError`: `CallerHungUp`, `BadSession`, `SessionTimeout`,
    `InvalidCommand` (510) and `UsageError` (520).
    """

    # pyst2.AGI.__init__ is deliberately not called (SIGHUP handler, stdin).
    def __init__(
        self,
        sock: socket.socket,
        limits: SessionLimits | None = None,
        *,
        peer: str | None = None,
    ) -> None:
        self.limits = limits or SessionLimits()
        self.sock = sock
        self.peer = peer or _peer_of(sock)
        self.env: dict[str, str] = {}
        self.stdin = self.stdout = self.stderr = _NULL
        self._got_sighup = False
        self._buf = bytearray()
        self._started = time.monotonic()
        self._deadline = self._started + self.limits.session_deadline
        self._result_timeout = self.limits.result_timeout
        self._hangup_grace = HANGUP_GRACE_S
        self._hung_up = False
        self._closed = False
        self._close_lock = threading.Lock()
        # Cut by us (the server stopping), not by Asterisk: the caller is still on the
        # line, and the glue puts them through to the seats.
        self.cut = False
        self._debug = log.isEnabledFor(logging.DEBUG)
        sock.setblocking(False)
        # The hub's watchers on this socket, made on the first wait (in the thread
        # that runs the session) and closed before the socket is.
        self._readable: Any = None
        self._writable: Any = None

    # ----------------------------------------------------------------- facts

    @property
    def script(self) -> str:
        """The route name: the path of `agi://host:port/<route>`."""
        return self.env.get("agi_network_script", "").strip("/")

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    @property
    def args(self) -> list[str]:
        """The AGI() application's extra arguments (agi_arg_1, agi_arg_2, ...)."""
        out: list[str] = []
        while f"agi_arg_{len(out) + 1}" in self.env:
            out.append(self.env[f"agi_arg_{len(out) + 1}"])
        return out

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    # ------------------------------------------------------------ lifecycle

    def read_env(self) -> dict[str, str]:
        """Read the `agi_*: value` block up to its blank line.

        Raises BadSession (garbage, empty, too long, closed early) or
        SessionTimeout (a peer silent, or not done within env_timeout).
        """
        # Asterisk writes the block at once: env_timeout covers all of it, not each
        # line, so a peer trickling lines cannot hold a session slot for long.
        limit = self.limits.env_timeout
        until = time.monotonic() + limit
        lines = self._env_from_buffer()
        while lines >= 0:
            try:
                line = self._read_line(until - time.monotonic())
            except CallerHungUp:
                raise BadSession(f"connection closed after {lines} environment lines") from None
            except SessionTimeout:
                if time.monotonic() < until:  # the session's own deadline
                    raise
                raise SessionTimeout(f"environment not complete within {limit:g} s") from None
            if line == "":
                break
            lines += 1
            if lines > self.limits.max_env_lines:
                raise BadSession(f"more than {self.limits.max_env_lines} environment lines")
            m = _ENV_LINE.fullmatch(line)
            if m is None:
                raise BadSession(f"not an AGI environment line: {_preview(line)}")
            self.env[m.group(1)] = m.group(2).strip()
        if not self.env:
            raise BadSession("empty environment")
        self._log_env()
        return self.env

    def _env_from_buffer(self) -> int:
        """Parse the environment block in one go when its first receive brought
        it whole, as Asterisk sends it: -1 when done, 0 when it is not all there
        (or has CRLF line ends) and is to be read line by line."""
        limits = self.limits
        if self._buf.find(b"\n") < 0:
            try:
                self._receive_line(limits.env_timeout)
            except CallerHungUp:
                raise BadSession("connection closed after 0 environment lines") from None
        end = self._buf.find(b"\n\n")
        if end <= 0:
            return 0
        env = self.env
        block = self._buf[:end]
        chunks = block.split(b"\n")
        text = block.decode("utf-8", errors="replace")
        if (
            len(chunks) <= limits.max_env_lines
            and max(map(len, chunks)) <= limits.max_line
            and _ENV_BLOCK.fullmatch(text)
        ):
            # The usual block, well-formed: split it without a match per line.
            for line in text.split("\n"):
                name, _, value = line.partition(":")
                env[name] = value.strip()
            del self._buf[: end + 2]
            return -1
        # Otherwise line by line, which says which line is wrong.
        for lines, chunk in enumerate(chunks, 1):
            if lines > limits.max_env_lines:
                raise BadSession(f"more than {limits.max_env_lines} environment lines")
            if len(chunk) > limits.max_line:
                raise BadSession(f"line longer than {limits.max_line} bytes")
            line = chunk.decode("utf-8", errors="replace").rstrip("\r")
            if not line:  # a CRLF blank line: the block ended before `end`
                env.clear()
                return 0
            m = _ENV_LINE.fullmatch(line)
            if m is None:
                raise BadSession(f"not an AGI environment line: {_preview(line)}")
            env[m.group(1)] = m.group(2).strip()
        del self._buf[: end + 2]
        return -1

    def _log_env(self) -> None:
        if self._debug:
            log.debug(
                "agi env peer=%s %s",
                self.peer,
                " ".join(
                    f"{k}={mask_number(v) if k in _NUMBER_FIELDS and v else loggable(v, 80)}"
                    for k, v in self.env.items()
                ),
            )

    def close(self) -> None:
        """Close the socket; Asterisk then continues the dialplan. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            # The event loop must forget the descriptor before the kernel can reuse it.
            for watcher in (self._readable, self._writable):
                if watcher is not None:
                    watcher.close()
            _close(self.sock)

    def abort(self) -> None:
        """Cut the connection from another thread (shutdown): the owner's
        pending read or write fails at once instead of waiting its timeout."""
        # Under the lock so that a concurrent close() cannot hand the file
        # descriptor number to another connection in between.
        with self._close_lock:
            if not self._closed:
                self.cut = True
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)

    def command_timeout(self, seconds: float, *, renew: bool = True) -> _CommandTimeout:
        """Allow commands in this block to take up to `seconds` for a result,
        e.g. `EXEC Queue`/`EXEC Dial`, which return only when the conversation
        ends, or GET DATA, which waits for each key.

        The session deadline guards against peers, not against the handler's
        own deliberate waits: inside the block it is pushed out to cover
        `seconds`. After it, with `renew`, the session has at least a fresh
        `session_deadline` for what follows (reading the dial status after a
        conversation, ...); without, the deadline it had (a menu must not renew
        the session's cap: a caller still in menus at the cap goes to the seats).
        """
        return _CommandTimeout(self, seconds, renew)

    @contextlib.contextmanager
    def hangup_expected(self, grace: float = CONNECT_HANGUP_GRACE_S) -> Iterator[None]:
        """In this block a result=-1 waits up to `grace` seconds for Asterisk's HANGUP
        line before it counts as a failed application: for commands whose -1 means
        the caller left (Queue, Dial), however late Asterisk says so."""
        before = self._hangup_grace
        self._hangup_grace = grace
        try:
            yield
        finally:
            self._hangup_grace = before

    # --------------------------------------------- pyst2's I/O, replaced

    def _quote(self, string: Any) -> str:
        # pyst2 neither escapes quotes nor refuses newlines; both would let a
        # value (caller input, a directory entry) end the command and inject
        # another. Asterisk's argument parser honours backslash escapes.
        text = "" if string is None else str(string)
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        text = text.replace("\r", " ").replace("\n", " ")
        return f'"{text}"'

    def test_hangup(self) -> None:
        if self._hung_up:
            raise CallerHungUp("caller already hung up")

    def execute(self, command: str, *args: Any) -> ResultDict:
        """Send one command and return pyst2's result dict
        (`{'result': (value, data), 'endpos': (...), ...}`)."""
        self.test_hangup()
        line = self.send_command(command, *args)
        return self._read_result(line)

    def send_command(self, command: str, *args: Any) -> str:
        line = " ".join([command.strip(), *map(str, args)]).strip()
        if "\n" in line or "\r" in line:
            raise ValueError("an AGI command must be a single line")
        if self._debug:
            log.debug("agi >> %s %s", self.uniqueid, mask_text(line))
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise SessionTimeout(f"session deadline passed before sending {_show(line)}")
        try:
            self._send(line.encode("utf-8") + b"\n", remaining)
        except BlockingIOError:  # the send timeout expired
            raise SessionTimeout(f"peer not reading; could not send {_show(line)}") from None
        except OSError as exc:  # EPIPE, ECONNRESET, socket shut down
            self._hung_up = True
            raise CallerHungUp(f"connection lost while sending: {exc}") from None
        return line

    def variable_after_hangup(self, expression: str, timeout: float = 1.0) -> str | None:
        """Read ``${...}`` expressions after the caller hung up, or None.

        Asterisk keeps a FastAGI session open in "dead AGI" mode after a hangup and
        still answers GET FULL VARIABLE: that is how we learn whether the caller was
        talking to a seat (left after the call) or still waiting (an abandoned call).
        The interrupted command's own late ``200 result=-1`` is skipped on the way.
        """
        if self._closed:
            return None
        line = f"GET FULL VARIABLE {self._quote(expression)}"
        try:
            self._send(line.encode("utf-8") + b"\n", timeout)
            deadline = time.monotonic() + timeout
            for _ in range(self.limits.max_intermediate):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                response = self._read_line(remaining)
                m = re_code.match(response)
                if response == "HANGUP" or m is None or not m.group(1):
                    continue
                value, data = _result_of(m.group(2))
                if int(m.group(1)) == 200 and value == "1":
                    return data
                if int(m.group(1)) == 200 and value == "0":
                    return ""  # Asterisk answers 0 for a variable that is not set
                # a stale answer to the interrupted command: keep reading
        except (OSError, AGIException):
            return None
        return None

    def _send(self, data: bytes, remaining: float) -> None:
        """All of `data`, within `remaining` seconds (raises BlockingIOError when the
        peer has read nothing for the send timeout). A command line fits the socket's
        buffer whenever Asterisk keeps up, so it goes out in one send with no wait."""
        view = memoryview(data)
        sent = 0
        end = time.monotonic() + remaining
        while True:
            with contextlib.suppress(BlockingIOError):  # the buffer is full: wait below
                sent += self.sock.send(view[sent:])
            if sent == len(data):
                return
            # The send timeout is how long the peer may take nothing at all; a long
            # value going out slowly is fine, within the session's own deadline.
            left = min(self.limits.send_timeout, end - time.monotonic())
            if left <= 0 or not self._wait_writable(left):
                raise BlockingIOError(errno.EAGAIN, "peer not reading")

    def get_result(self, stdin: Any = None) -> ResultDict:
        """pyst2 API compatibility: read one result without a known command."""
        return self._read_result("")

    def _read_result(self, command: str) -> ResultDict:
        for _ in range(self.limits.max_intermediate + 1):
            line = self._read_line(self._result_timeout, answer=True)
            if self._debug:
                log.debug("agi << %s %s", self.uniqueid, mask_text(line))
            if line == "HANGUP":
                self._hung_up = True
                raise CallerHungUp(f"Asterisk sent HANGUP (awaiting {_show(command)})")
            m = re_code.match(line)
            if m is None or not m.group(1):
                raise BadSession(f"unparsable AGI response: {_preview(line)}")
            code, response = int(m.group(1)), m.group(2)
            if code == 100:  # `100 result=0 Trying...`: the final answer follows
                continue
            if code == 200:
                return self._parse_200(command, response)
            if code == 510:
                raise InvalidCommand(command, response)
            if code == 511:  # "Command Not Permitted on a dead channel"
                self._hung_up = True
                raise CallerHungUp(f"channel is dead (511 for {_show(command)})")
            if code == 520:
                raise UsageError(command, self._read_usage(line))
            raise AGIUnknownError(
                code, f"unhandled AGI response to {_show(command)}: {_show(line)}"
            )
        raise BadSession(f"more than {self.limits.max_intermediate} intermediate responses")

    def _parse_200(self, command: str, response: str) -> ResultDict:
        result: ResultDict = {"result": ("", "")}
        for key, value, data in re_kv.findall(response):
            result[key] = (value, data)
        value, data = result["result"]
        if value == "-1":
            # Both a failed application (missing sound file) and a hangup give
            # -1; Asterisk follows a hangup with a HANGUP line, sometimes only
            # just after the -1 (seen after Queue), so give it a moment to arrive
            # before calling it an application error.
            if data == "hangup" or self._hangup_pending(self._hangup_grace):
                self._hung_up = True
                raise CallerHungUp(f"caller hung up during {_show(command)}")
            raise AGIAppError(f"{_show(command)} failed (result=-1)")
        return result

    def _read_usage(self, first: str) -> str:
        usage = [first]
        if first.startswith("520-"):  # multi-line usage ends with "520 ..."
            while True:
                line = self._read_line(self.limits.env_timeout)
                usage.append(line)
                if line.startswith("520"):
                    break
                if len(usage) > self.limits.max_env_lines:
                    raise BadSession("520 usage text too long")
        return "\n".join(usage)

    def _hangup_pending(self, wait: float = 0.0) -> bool:
        if not self._buf:
            try:
                if wait > 0 and not self._wait_readable(wait):
                    return False  # nothing came: a plain application error
                data = self.sock.recv(65536)
            except BlockingIOError:
                return False  # nothing on the wire yet: a plain application error
            except OSError:
                return True
            if not data:
                return True
            self._buf += data
        if self._buf.startswith(b"HANGUP"):
            del self._buf[: self._buf.find(b"\n") + 1 or len(self._buf)]
            return True
        return False

    def _wait_readable(self, timeout: float) -> bool:
        """Let other sessions run until the socket is readable (True) or `timeout`
        seconds pass (False)."""
        if self._readable is None:
            self._readable = get_hub().loop.io(self.sock.fileno(), 1)
        return _wait(self._readable, timeout)

    def _wait_writable(self, timeout: float) -> bool:
        if self._writable is None:
            self._writable = get_hub().loop.io(self.sock.fileno(), 2)
        return _wait(self._writable, timeout)

    def _read_line(self, timeout: float, answer: bool = False) -> str:
        """One line without its end-of-line, within `timeout` seconds (and the
        session deadline) and `max_line` bytes."""
        idx = self._buf.find(b"\n")
        if idx < 0:
            idx = self._receive_line(timeout, answer)
        if idx > self.limits.max_line:
            raise BadSession(f"line longer than {self.limits.max_line} bytes")
        raw = bytes(self._buf[:idx])
        del self._buf[: idx + 1]
        return raw.decode("utf-8", errors="replace").rstrip("\r")

    def _receive_line(self, timeout: float, answer: bool = False) -> int:
        """Receive until the buffer holds a newline; return its index."""
        now = time.monotonic()
        deadline = min(now + timeout, self._deadline)
        while True:
            if len(self._buf) > self.limits.max_line:
                raise BadSession(f"line longer than {self.limits.max_line} bytes")
            remaining = deadline - now
            if remaining <= 0:
                raise SessionTimeout(
                    "session deadline passed"
                    if deadline >= self._deadline
                    else f"peer silent for {timeout:g} s"
                )
            if answer:  # a command's answer is never in yet: wait before reading
                answer = False
                self._wait_readable(remaining)
                now = time.monotonic()
                continue
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:  # nothing yet: let other sessions run meanwhile
                self._wait_readable(remaining)
                now = time.monotonic()
                continue
            except OSError as exc:
                self._hung_up = True
                raise CallerHungUp(f"connection lost: {exc}") from None
            if not data:
                self._hung_up = True
                raise CallerHungUp("connection closed by Asterisk")
            scanned = len(self._buf)
            self._buf += data
            idx = self._buf.find(b"\n", scanned)
            if idx >= 0:
                return idx
            now = time.monotonic()


class _CommandTimeout:
    """`AgiSession.command_timeout`'s block (a class: a generator-based context
    manager costs a call several times as much, and calls use it twice)."""

    __slots__ = ("_before", "_deadline", "_renew", "_seconds", "_session")

    def __init__(self, session: AgiSession, seconds: float, renew: bool) -> None:
        self._session, self._seconds, self._renew = session, seconds, renew

    def __enter__(self) -> None:
        session = self._session
        self._before, self._deadline = session._result_timeout, session._deadline
        now = time.monotonic()
        if now >= self._deadline:
            raise SessionTimeout("session deadline passed before a command allowed longer")
        session._result_timeout = self._seconds
        session._deadline = max(self._deadline, now + self._seconds)

    def __exit__(self, *exc: object) -> None:
        session = self._session
        session._result_timeout = self._before
        if self._renew:
            # (not the block's own: a Queue that returned at once leaves no 4-hour session)
            fresh = time.monotonic() + session.limits.session_deadline
            session._deadline = max(self._deadline, fresh)
        else:
            session._deadline = self._deadline


def _wait(watcher: Any, timeout: float) -> bool:
    """Switch to the hub until `watcher` fires (True) or `timeout` seconds pass (False).

    Built from gevent's compiled parts (a Waiter, a timer watcher) rather than
    gevent.Timeout, whose Python-level set-up and tear-down on every wait cost a
    call about a tenth of the controller's Python."""
    hub = get_hub()
    waiter = Waiter(hub)
    timer = hub.loop.timer(timeout)
    watcher.start(waiter.switch, True)
    timer.start(waiter.switch, False)
    try:
        return waiter.get()
    finally:
        watcher.stop()
        timer.stop()


def _close(sock: socket.socket) -> None:
    """Shut a connection down (Asterisk sees the end at once) and close it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _peer_of(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name) or "local"


def _show(command: str) -> str:
    """A command or response as exception messages quote it: masked, since
    those messages end up in logs."""
    return repr(mask_text(command))


def _preview(line: str, limit: int = 60) -> str:
    """A short, masked excerpt of a bad line for the log (masked before it is cut: a
    number cut in two would keep its first digits whole)."""
    masked = mask_text(line[: limit + 32])
    return repr(masked if len(masked) <= limit else masked[:limit] + "...")


def _result_of(response: str) -> tuple[str, str]:
    """(value, data) of a response's result=..., e.g. ("1", "TIMEOUT|...")."""
    for key, value, data in re_kv.findall(response):
        if key == "result":
            return value, data
    return "", ""

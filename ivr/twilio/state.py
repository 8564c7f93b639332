"""A Twilio call's state between webhooks, and the tokens that guard its continuations.

Each webhook that leaves the call waiting (keys, a queue, a dial) hands Twilio a
continuation URL carrying the call's step counter and an HMAC of (CallSid, step,
purpose). The record in the store holds the current step counter; a continuation
is accepted only when its counter is the current one, and the record is replaced
only if nobody advanced it meanwhile (compare-and-set). So a replayed continuation
(an old step) is refused, a forged one (a bad HMAC, or one lifted from another
call) is refused, and two copies of one request cannot both move the call.

Stores: Redis (a hash per call, with a TTL; every worker sees the same calls) for
production, and an in-process LRU for one process (`ivr serve`, tests).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import redis
from redis.exceptions import NoScriptError

KEY_PREFIX = "ivr:twilio:call:"


@dataclass
class CallRecord:
    """What a call carries between webhooks: the engine's state and the adapter's facts."""

    step: int  # the continuation counter the next request must carry
    state: dict[str, Any]  # SessionState.to_dict()
    caller: str | None = None
    started: float = 0.0  # epoch seconds by the blueprint's clock
    connect_at: float | None = None  # when the pending connect was handed to Twilio
    via: str | None = None  # "queue" (Enqueue) or "dial" while a connect is pending
    published: int = 0  # events handed to the sink so far: the next one is published + 1
    extra: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        # Not asdict(): it deep-copies the engine state only to have json walk it again.
        data = {f.name: getattr(self, f.name) for f in _RECORD_FIELDS}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> CallRecord:
        return cls(**json.loads(text))


_RECORD_FIELDS = fields(CallRecord)


class StateUnavailable(RuntimeError):
    """The store could not be reached, or did not answer in time: Redis is down or
    stalled. Not "no such call": the call's state is unknown either way."""


class StateStore(Protocol):
    def get(self, call_sid: str) -> CallRecord | None: ...

    def create(self, call_sid: str, record: CallRecord) -> bool:
        """Store a new call; False when the CallSid is already known."""
        ...

    def replace(self, call_sid: str, expected_step: int, record: CallRecord) -> bool:
        """Store ``record`` only if the stored step is still ``expected_step``."""
        ...


class MemoryStateStore:
    """One process's calls, newest kept: fine for `ivr serve` and tests, not for
    several gunicorn workers (a continuation may reach a worker that never saw the call)."""

    def __init__(self, ttl_s: float = 4 * 3600, max_calls: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.max_calls = max_calls
        self._calls: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def _live(self, call_sid: str, now: float) -> str | None:
        entry = self._calls.get(call_sid)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._calls[call_sid]
            return None
        return entry[1]

    def _put(self, call_sid: str, record: CallRecord, now: float) -> None:
        self._calls[call_sid] = (now + self.ttl_s, record.dumps())
        self._calls.move_to_end(call_sid)
        while len(self._calls) > self.max_calls:
            self._calls.popitem(last=False)

    def get(self, call_sid: str) -> CallRecord | None:
        with self._lock:
            text = self._live(call_sid, time.monotonic())
        return CallRecord.loads(text) if text is not None else None

    def create(self, call_sid: str, record: CallRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._live(call_sid, now) is not None:
                return False
            self._put(call_sid, record, now)
            return True

    def replace(self, call_sid: str, expected_step: int, record: CallRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            text = self._live(call_sid, now)
            if text is None or json.loads(text)["step"] != expected_step:
                return False
            self._put(call_sid, record, now)
            return True


# KEYS[1] the call; ARGV: expected step, new step, record, ttl, write id. The step sits
# in its own field so the comparison never decodes the record. The write id tells our
# own write, sent again after its reply was lost, from somebody else's: the first one
# did run, so the second succeeds instead of being refused like a replay.
_REPLACE = """
local current = redis.call('HGET', KEYS[1], 'step')
if current ~= ARGV[1] then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[5] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'record', ARGV[3], 'w', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
# ARGV: step, record, ttl, write id.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[4] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'step', ARGV[1], 'record', ARGV[2], 'w', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


_MAX_IDLE = 64  # connections kept for reuse: as many as threads send at once, usually


class RedisStateStore:
    """Calls in Redis, one hash each, expiring ``ttl_s`` after their last webhook.

    Every webhook waits on these commands, so they go out on connections kept here
    (made with the client's settings; one per thread at a time), without redis-py's
    pool and retry layers around every command: those cost a webhook more than the
    round trip. A command whose connection failed (closed by a restart, or no reply
    within the timeout) is sent once more on a fresh connection: each is safe to
    repeat, being a read or a script that knows its own write by its id, so a caller
    is not sent to the seats for one slow reply. Any failure to reach Redis raises
    `StateUnavailable`.
    """

    def __init__(self, client: redis.Redis, ttl_s: int = 4 * 3600, prefix: str = KEY_PREFIX):
        self.client = client
        self.ttl_s = int(ttl_s)
        self.prefix = prefix
        self._scripts = {
            name: (hashlib.sha1(source.encode()).hexdigest(), source)
            for name, source in (("replace", _REPLACE), ("create", _CREATE))
        }
        self._idle: list[redis.Connection] = []  # append and pop are atomic
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str, ttl_s: int = 4 * 3600) -> RedisStateStore:
        # Short timeouts: Twilio waits 15 s for a webhook, and a failure of ours must
        # still leave time to answer with the 12345 seats.
        client = redis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, client_name="ivr-twilio"
        )
        return cls(client, ttl_s)

    def get(self, call_sid: str) -> CallRecord | None:
        text = self._command("HGET", self.prefix + call_sid, "record")
        return CallRecord.loads(text) if text is not None else None

    def create(self, call_sid: str, record: CallRecord) -> bool:
        key, write = self.prefix + call_sid, _write_id()
        return bool(self._script("create", key, record.step, record.dumps(), self.ttl_s, write))

    def replace(self, call_sid: str, expected_step: int, record: CallRecord) -> bool:
        key, write = self.prefix + call_sid, _write_id()
        return bool(
            self._script(
                "replace", key, expected_step, record.step, record.dumps(), self.ttl_s, write
            )
        )

    def _script(self, name: str, key: str, *args: Any) -> Any:
        sha, source = self._scripts[name]
        try:
            return self._command("EVALSHA", sha, 1, key, *args)
        except NoScriptError:  # a restarted or flushed Redis: send the source instead
            return self._command("EVAL", source, 1, key, *args)

    def _command(self, *args: Any) -> Any:
        try:
            return self._send(*args)
        except NoScriptError:
            raise
        except redis.RedisError as exc:
            raise StateUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    def _send(self, *args: Any) -> Any:
        if self._pid != os.getpid():  # a forked worker: its parent's sockets are not its own
            self._idle, self._pid = [], os.getpid()
        idle = self._idle
        try:
            connection = idle.pop()
        except IndexError:
            pool = self.client.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
        try:
            connection.send_command(*args)
            reply = connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            # Closed under us (a restart, an idle timeout), or no reply in time (a
            # stall): the command may have run, and a script that did knows its own
            # write id the second time.
            connection.disconnect()
            try:
                connection.send_command(*args)
                reply = connection.read_response()
            except BaseException:
                connection.disconnect()
                raise
        except BaseException:
            connection.disconnect()  # a half-read reply must not answer the next command
            raise
        finally:
            if len(idle) < _MAX_IDLE:
                idle.append(connection)  # a disconnected one connects again when next used
        return reply


def _write_id() -> str:
    return os.urandom(9).hex()


class Tokens:
    """HMAC-SHA256 tokens binding a URL to one call, one step and one purpose."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("a state secret is required")
        self._secret = secret
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)  # keyed once, copied per token

    def make(self, call_sid: str, step: int, purpose: str) -> str:
        mac = self._mac.copy()
        mac.update(f"{call_sid}|{step}|{purpose}".encode())
        return base64.urlsafe_b64encode(mac.digest()[:18]).decode()

    def check(self, token: str, call_sid: str, step: int, purpose: str) -> bool:
        # As bytes: compare_digest raises on a str that is not ASCII (a forged token).
        expected = self.make(call_sid, step, purpose).encode()
        return hmac.compare_digest(token.encode("utf-8", "replace"), expected)

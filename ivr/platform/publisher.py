"""Zero-loss publishing of call events to Redis Streams.

A call must never wait on Redis, so `Publisher.publish()` only validates the
event and appends it to a bounded in-memory buffer; one background thread encodes
it and does all Redis and disk work:

- A front-end may hand a call's events over unbuilt (`publish_later()`): the worker
  builds them, checks them and buffers them just before it takes the buffer, in the
  order they were handed. Built a few dozen at a time, they cost the controller
  markedly less than one hand-over at a time between a call's AGI commands.
- Redis answers: the buffer goes to Redis in batches, one Lua script per batch.
  The worker looks at the buffer every `linger_s` (50 ms), or at once when a
  whole batch is waiting or `flush()` asks, so a busy controller pays one
  thread wake-up and one round trip per batch, not per event.
- Redis is unreachable or answers with errors (bad password, READONLY replica,
  OOM, missing rights...): events go to an append-only spool on disk (JSON lines,
  one fsync per batch), an ERROR is logged once per outage, and the spool is
  replayed in order when Redis answers again; replayed segments are deleted.
- The buffer is full (the worker is stuck): the caller appends the event to a
  spill file instead; the worker adopts it behind everything older.
- The spool cannot be written (missing directory, full disk): ERROR, counter,
  `spool_ok` false, and events wait in memory up to `buffer_size`; only beyond
  that are they lost and counted as `dropped`.

Idempotence: the script writes an event only if its sequence number is not yet
in the call's set `ivr:seen:<call_id>`, and marks it in the same atomic step. A
batch whose reply was lost (timeout, connection cut) is simply sent again.

Order: one call's events reach its region's stream in the order they were
published, because every path (buffer, spool, spill, memory) is a FIFO and a
newer event never overtakes an older one still waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, islice
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.core.privacy import mask_number
from ivr.events import CallEvent, EventError
from ivr.platform.callbacks import task_fields, wants_callback
from ivr.platform.layout import (
    CALLBACK_GROUP,
    CALLBACK_MARK,
    DEFAULT_CALLBACK_RETENTION,
    DEFAULT_EVENT_RETENTION,
    DEFAULT_PREFIX,
    EVENT_GROUP,
    Retention,
    callbacks_stream,
    events_stream,
    seen_key,
)
from ivr.platform.spool import SpillFile, Spool, append_lines

log = logging.getLogger(__name__)

COUNTERS = (
    "buffered",  # accepted into the in-memory buffer
    "spilled",  # accepted into a spill file because the buffer was full
    "published",  # confirmed in Redis, once per event
    "duplicates",  # Redis already had it (a re-publish or a replay after a lost reply)
    "spooled",  # written to the disk spool during an outage
    "held_in_memory",  # kept in memory because the spool could not be written
    "replayed",  # of `published`, those that waited in the spool or memory first
    "dropped",  # lost for good; must stay 0
    "refused",  # malformed, never written
    "set_aside",  # their key in Redis holds another type: kept in SET_ASIDE for an operator
    "callback_tasks",  # callback tasks created on the callbacks stream
    "outages",  # times Redis stopped answering
    "redis_errors",  # failed Redis calls (each retry counts)
    "spool_errors",  # failed spool writes or opens
)

# Events whose stream or seen-set key holds another type of value in Redis (a key
# written by hand or by another program) can never be written: they are kept here, in
# the spool directory, as spool lines, and the rest of their batch goes on.
SET_ASIDE = "set-aside.jsonl"
_WRONG_TYPE = re.compile(r"WRONGTYPE (\S+) is a ")

# Runs once per batch. The batch is one argument, a JSON array of the events'
# spool lines (so redis-py packs a dozen arguments per batch, not three per
# event); each names its stream and seen-set, which must be among KEYS. Every key
# is checked before the first write so that a wrong-typed key fails the whole
# batch instead of leaving half of it; the shebang makes Redis refuse the script
# up front when it is out of memory. The reply is one digit per event: 0 already
# there, 1 written, 2 written with its callback task.
_BATCH_SCRIPT = """#!lua
local a = 1
local function arg() local v = ARGV[a]; a = a + 1; return v end
local ttl = arg()
local ev_strategy, ev_threshold = arg(), arg()
local cb_strategy, cb_threshold = arg(), arg()
local cb_key = tonumber(arg())
local cb_group = arg()
local groups = {}
for i = 1, tonumber(arg()) do groups[i] = arg() end
local kinds = arg()
local recs = cjson.decode(arg())
local index, fresh = {}, {}
for i = 1, #KEYS do
  local want = (string.sub(kinds, i, i) == 's') and 'stream' or 'set'
  local have = redis.call('TYPE', KEYS[i])['ok']
  if have ~= 'none' and have ~= want then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. have .. ', not a ' .. want)
  end
  fresh[i] = (have == 'none')
  index[KEYS[i]] = i
end
for _, rec in ipairs(recs) do
  if not index[rec.s] or not index[rec.d] then
    return redis.error_reply('ERR the batch names a key it did not declare')
  end
end
local function add(i, strategy, threshold, new_groups, fields)
  if fresh[i] then
    -- Groups start at 0 so that they see the stream's very first entry.
    for _, g in ipairs(new_groups) do
      redis.call('XGROUP', 'CREATE', KEYS[i], g, '0', 'MKSTREAM')
    end
    fresh[i] = false
  end
  -- unpack() straight into the call: building the command table field by field
  -- cost about a fifth of the script's time per event.
  return redis.call('XADD', KEYS[i], strategy, '~', threshold, '*', unpack(fields))
end
local out, touched = {}, {}
for e, rec in ipairs(recs) do
  local stream, seen = index[rec.s], index[rec.d]
  local status = 0
  if redis.call('SISMEMBER', KEYS[seen], rec.m) == 0 then
    add(stream, ev_strategy, ev_threshold, groups, rec.f)
    status = 1
    if #rec.t > 0 and redis.call('SISMEMBER', KEYS[seen], 'callback') == 0 then
      add(cb_key, cb_strategy, cb_threshold, {cb_group}, rec.t)
      redis.call('SADD', KEYS[seen], 'callback')
      status = 2
    end
    redis.call('SADD', KEYS[seen], rec.m)
    touched[seen] = true
  end
  out[e] = status
end
-- Once per call and batch, after its last event: the same end state as per event.
for seen in pairs(touched) do redis.call('EXPIRE', KEYS[seen], ttl) end
return table.concat(out)
"""
assert CALLBACK_MARK == "callback"  # spelled out in the script above


class _Record:
    """An event ready to write: its two keys and one JSON line. The same line is a
    spool line and part of the script's one batch argument, so an event is encoded
    once (redis-py packs every argument in Python, which would cost more than the
    write itself).
    """

    __slots__ = ("line", "seen", "stream")

    def __init__(self, stream: str, seen: str, line: str) -> None:
        self.stream = stream
        self.seen = seen
        self.line = line  # {"s": stream, "d": seen, "m": seq, "f": [k, v, ...], "t": [k, v, ...]}

    # The line is byte for byte what json.dumps(line_dict, ensure_ascii=False,
    # separators=(",", ":")) writes, built from parts for less.
    @staticmethod
    def keys_of(stream: str, seen: str) -> tuple[str, str, str]:
        """A call's keys, and the start of its lines (the same for all its events)."""
        q = encode_basestring
        return stream, seen, f'{{"s":{q(stream)},"d":{q(seen)},"m":"'

    @classmethod
    def of(cls, keys: tuple[str, str, str], seq: int, fields: str, task: list[str]) -> _Record:
        """`fields` is already a JSON array (CallEvent.to_json_list)."""
        stream, seen, head = keys
        tasks = ",".join(map(encode_basestring, task))
        return cls(stream, seen, f'{head}{seq}","f":{fields},"t":[{tasks}]}}')

    @classmethod
    def from_line(cls, line: str) -> _Record:
        data = json.loads(line)
        if not (isinstance(data["f"], list) and isinstance(data["t"], list)):
            raise ValueError("not a spooled event")
        return cls(str(data["s"]), str(data["d"]), line)

    @property
    def label(self) -> str:
        """For logs: the event id, nothing personal."""
        try:
            fields = json.loads(self.line)["f"]
            return str(fields[fields.index("event_id") + 1])
        except (ValueError, KeyError, IndexError):
            return "?"


def _flat(fields: dict[str, str]) -> list[str]:
    return list(chain.from_iterable(fields.items()))


def _describe(exc: BaseException) -> str:
    """Exception class and first line; Redis error texts carry no caller data."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Publisher:
    """Publishes `CallEvent`s to Redis Streams without ever blocking the caller.

    `redis_url` may carry the ACL user, e.g. `redis://ivr-controller:pw@127.0.0.1:6379/0`.
    `full_numbers` puts callers' full numbers on the event streams (masked
    otherwise); callback tasks always carry them. Pass a prometheus
    `registry` to export the counters. `linger_s` is how long the worker gathers
    events before it sends a batch (less when `batch_size` are waiting, or when
    `flush()` asks): longer means fewer wake-ups and round trips per event, and
    events that reach Redis that much later.
    """

    def __init__(
        self,
        redis_url: str,
        spool_dir: str | os.PathLike[str],
        *,
        buffer_size: int = 10_000,
        stream_prefix: str = DEFAULT_PREFIX,
        retention: Retention = DEFAULT_EVENT_RETENTION,
        callback_retention: Retention = DEFAULT_CALLBACK_RETENTION,
        full_numbers: bool = False,
        event_groups: Sequence[str] = (EVENT_GROUP,),
        callback_group: str = CALLBACK_GROUP,
        dedupe_ttl_s: int = 2 * 86_400,
        socket_timeout: float = 0.3,
        batch_size: int = 200,
        retry_interval: float = 0.2,
        max_retry_interval: float = 5.0,
        remind_interval: float = 60.0,
        replay_slice_s: float = 0.25,
        linger_s: float = 0.05,
        registry: CollectorRegistry | None = None,
        client_name: str = "ivr-publisher",
    ) -> None:
        if buffer_size < 1 or batch_size < 1:
            raise ValueError("buffer_size and batch_size must be positive")
        if linger_s < 0:
            raise ValueError("linger_s must not be negative")
        self._prefix = stream_prefix
        self._retention = retention
        self._callback_retention = callback_retention
        self._full_numbers = full_numbers
        self._event_groups = tuple(event_groups)
        self._callback_group = callback_group
        self._ttl = str(int(dedupe_ttl_s))
        self._buffer_size = buffer_size
        self._batch_size = batch_size
        self._retry_interval = retry_interval
        self._max_retry_interval = max_retry_interval
        self._remind_interval = remind_interval
        self._replay_slice_s = replay_slice_s
        self._linger_s = linger_s
        self.spool_dir = Path(spool_dir)
        # (region, call id) -> (stream key, seen-set key, their part of a spool line)
        self._keys: dict[tuple[str, str], tuple[str, str, str]] = {}

        # Tight timeouts and no client-side retries: the worker has its own
        # back-off and a slow Redis must not hold the buffer for long.
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=client_name,
        )
        self._script = self._redis.register_script(_BATCH_SCRIPT)
        self._callbacks_key = callbacks_stream(self._prefix)

        # guards intake, spill, holding, flushing, closed, stop, and the "buffered" count
        self._lock = threading.RLock()  # `with self._lock` costs publish() less
        self._cond = threading.Condition(self._lock)
        self._intake: deque[CallEvent] = deque()
        # hand-overs the worker builds into events, oldest first (publish_later)
        self._later: deque[Callable[[], Sequence[CallEvent]]] = deque()
        self._build_lock = threading.Lock()  # one builder at a time keeps their order
        self._spill: SpillFile | None = None
        self._spill_serial = 0
        # This publisher's spill files, told from a crashed run's by this mark.
        self._spill_mark = f"-{os.urandom(4).hex()}-"
        self._holding = 0  # records the worker has taken out of every queue
        self._worker_waiting = False  # the worker sleeps and nobody has woken it yet
        self._flushing = 0  # flush() calls waiting: no lingering meanwhile
        self._worker_left = False  # the worker has taken its last look at the queues
        self._closed = False
        self._stop = False

        self._stats_lock = threading.Lock()  # guards the counters but "buffered"
        self._n = dict.fromkeys(COUNTERS, 0)

        # Worker-owned state below; other threads only read the plain values.
        self._tail: deque[_Record] = deque()  # outage backlog kept in memory
        self._disk_pending = 0
        self._redis_up = True
        self._down_since = 0.0
        self._last_remind = 0.0
        self._next_try = 0.0
        self._delay = retry_interval
        self._spool: Spool | None = None
        self._spool_ok = True
        self._next_spool_try = 0.0
        self._lost_logged_at = -1e9
        self._open_spool()
        if self._spool is not None and self._spool.recovered:
            log.warning(
                "event spool %s holds %d events from an earlier run; replaying them first",
                self.spool_dir,
                self._spool.recovered,
            )

        self._collector = PublisherCollector(self)
        if registry is not None:
            registry.register(self._collector)
        self._thread = threading.Thread(target=self._run, name="ivr-event-publisher", daemon=True)
        self._thread.start()

    # ---- the caller's side: never blocks on Redis, never raises ------------------------

    def publish(self, event: CallEvent) -> bool:
        """Queue one event; False if it was refused (malformed) or lost."""
        try:
            if not self._admit(event):
                return False
            with self._lock:
                return self._enqueue(event)
        except Exception as exc:  # a bug here must not break the call
            log.error("event lost while publishing: %s", _describe(exc))
            self._count("dropped")
            return False

    def publish_many(self, events: Sequence[CallEvent]) -> int:
        """`publish()` each event, in order, taking the lock once; how many were
        accepted. Never raises, never waits on Redis or the disk."""
        return self._buffer(events)

    def _buffer(self, events: Sequence[CallEvent], handed_before_close: bool = False) -> int:
        admitted = []
        for event in events:
            try:
                if self._admit(event):
                    admitted.append(event)
            except Exception as exc:  # a bug here must not break the call, nor the rest
                log.error("event lost while publishing: %s", _describe(exc))
                self._count("dropped")
        accepted = 0
        with self._lock:
            for event in admitted:
                try:
                    accepted += self._enqueue(event, handed_before_close)
                except Exception as exc:
                    log.error("event lost while publishing: %s", _describe(exc))
                    self._count("dropped")
        return accepted

    def publish_later(self, build: Callable[[], Sequence[CallEvent]]) -> None:
        """Hand the worker a front-end's batch to build: `build()` makes, numbers and
        checks the events, on the worker's thread, in the order batches were handed,
        just before the worker takes the buffer. The call pays for an append. Never
        raises, never waits on Redis or the disk."""
        try:
            later = self._later
            if self._closed:
                if self._worker_left:  # nobody left to build them: refused, oldest first
                    self._build_later(build)
                else:
                    # Refused and counted; the batches handed before close() stay the
                    # worker's, which buffers them while close() waits for it. Built
                    # after those: building numbers a call's events (and forgets a
                    # call that ended), which must not overtake an earlier batch.
                    with self._build_lock:
                        self._publish_built(build, False)
                return
            if len(later) >= self._buffer_size:
                # The worker is far behind: take the oldest batch's worth off its hands
                # (built here, oldest first, so order holds), which bounds both the
                # queue and what one call pays.
                self._build_later(count=self._batch_size)
            later.append(build)
            if self._closed:  # closed meanwhile: did the worker see this batch?
                with self._cond:  # (it looks and leaves under _cond)
                    gone = self._worker_left
                if gone:
                    self._build_later(from_worker=False)
            elif self._worker_waiting and (not self._linger_s or len(later) >= self._batch_size):
                with self._cond:
                    self._worker_waiting = False
                    self._cond.notify()
        except Exception as exc:  # a bug here must not break the call
            log.error("events lost while publishing: %s", _describe(exc))
            self._count("dropped")

    def _build_later(
        self,
        last: Callable[[], Sequence[CallEvent]] | None = None,
        from_worker: bool = False,
        count: int | None = None,
    ) -> None:
        """Build and buffer the handed batches, oldest first (every one, or the oldest
        `count`), then `last`. A batch leaves the queue only once its events are
        buffered, so that `pending()` never reads 0 in between. The worker buffers
        them even while `close()` waits for it (they were handed before); anyone
        else, once closed, has them refused and counted, as `publish()` would."""
        with self._build_lock:
            later = self._later
            built = 0
            while later and (count is None or built < count):
                self._publish_built(later[0], from_worker)
                later.popleft()
                built += 1
            if last is not None:
                self._publish_built(last, False)

    def _publish_built(self, build: Callable[[], Sequence[CallEvent]], from_worker: bool) -> None:
        try:
            events = build()
        except Exception as exc:  # a bug in a front-end's sink: say so, go on
            # the class only: a builder's message may quote the call's data
            log.error("a front-end's events could not be built: %s", type(exc).__name__)
            self._count("dropped")
            return
        if events:
            self._buffer(events, handed_before_close=from_worker)

    def _admit(self, event: CallEvent) -> bool:
        """A well-formed event? Refused (logged, counted) if not."""
        if not isinstance(event, CallEvent):
            self._refuse(None, f"not a CallEvent but {type(event).__name__}")
            return False
        if not getattr(event, "_checked", False):  # make() checked its events
            try:
                event.validate()
            except EventError as exc:
                self._refuse(event, exc.reason)
                return False
            event.mark_checked()
        return True

    def _enqueue(self, event: CallEvent, handed_before_close: bool = False) -> bool:
        """Into the buffer, or the spill file when it is full (`_lock` held)."""
        if self._closed and not handed_before_close:
            self._refuse(event, "publisher is closed")
            return False
        intake = self._intake
        if self._spill is None and len(intake) < self._buffer_size:
            # Encoding is left to the worker: the call pays for validation only.
            intake.append(event)
            self._n["buffered"] += 1  # under _lock, not _stats_lock: see stats()
            # The worker comes by every linger_s; it is woken only for a full batch
            # (or for every event when it must not linger).
            if self._worker_waiting and (len(intake) >= self._batch_size or not self._linger_s):
                self._worker_waiting = False
                self._cond.notify()
            return True
        return self._spill_record(self._prepare(event))

    def _prepare(self, event: CallEvent) -> _Record:
        call = (event.region, event.call_id)
        keys = self._keys.get(call)
        if keys is None:  # once per call: its two keys, and the line's start
            keys = _Record.keys_of(
                events_stream(event.region, self._prefix), seen_key(event.call_id, self._prefix)
            )
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[call] = keys
        task = _flat(task_fields(event)) if wants_callback(event) else []
        fields = event.to_json_list(full_numbers=self._full_numbers)
        return _Record.of(keys, event.seq, fields, task)

    def refuse(self, reason: str, *, call_id: str = "?", event_type: object = "?") -> None:
        """Count and log an event refused before it reached `publish()` (e.g. one a
        front-end's sink could not build), so every refusal shows in one counter."""
        self._count("refused")
        log.warning("refused event %s of call %s: %s", event_type, call_id, reason)

    def _refuse(self, event: CallEvent | None, reason: str) -> None:
        if event is None:
            self._count("refused")
            log.warning("refused event: %s", reason)
            return
        self._count("refused")
        log.warning(
            "refused event %s seq %s of call %s (caller %s): %s",
            event.type,
            event.seq,
            event.call_id,
            mask_number(event.caller if isinstance(event.caller, str) else None),
            reason,
        )

    def _spill_record(self, record: _Record) -> bool:
        """Buffer full: append to the spill file (called with `_cond` held)."""
        try:
            if self._spill is None:
                self._spill_serial += 1
                serial = self._spill_serial
                name = f"spill-{time.time_ns()}{self._spill_mark}{serial}.jsonl"
                self._spill = SpillFile(self.spool_dir, name)
                log.error(
                    "event buffer full (%d events): spilling to %s until the publisher catches up",
                    self._buffer_size,
                    self.spool_dir,
                )
            self._spill.write_line(record.line)
        except OSError as exc:
            self._count("spool_errors")
            self._count("dropped")
            now = time.monotonic()
            if now - self._lost_logged_at > 10:
                self._lost_logged_at = now
                log.error(
                    "event %s lost: buffer full and spill failed (%s)", record.label, _describe(exc)
                )
            return False
        self._count("spilled")
        return True

    # ---- inspection -------------------------------------------------------------------

    def stats(self) -> dict[str, int | bool]:
        with self._cond:  # "buffered" moves under _cond, the other counters under _stats_lock
            with self._stats_lock:
                out: dict[str, int | bool] = dict(self._n)
            out["queue_depth"] = len(self._intake) + self._holding
            out["handed_over"] = len(self._later)  # batches, not events: built at the worker
            out["spill_pending"] = self._spill.count if self._spill else 0
        out["backlog_disk"] = self._disk_pending
        out["backlog_memory"] = len(self._tail)
        out["redis_up"] = self._redis_up
        out["spool_ok"] = self._spool_ok
        out["healthy"] = self._spool_ok and out["dropped"] == 0
        return out

    def pending(self) -> int:
        """Events accepted and not yet confirmed by Redis (nor lost); a batch handed
        to `publish_later()` and not yet built counts as one."""
        with self._cond:
            waiting = len(self._intake) + self._holding + (self._spill.count if self._spill else 0)
            waiting += len(self._later)
        return waiting + self._disk_pending + len(self._tail)

    @property
    def collector(self) -> PublisherCollector:
        return self._collector

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every accepted event is in Redis; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._next_try = 0.0  # retry now rather than after the back-off
            self._flushing += 1  # and send what is buffered without lingering
            self._worker_waiting = False
            self._cond.notify()
        try:
            while self.pending():
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.005)
            return True
        finally:
            with self._cond:
                self._flushing -= 1

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what can be delivered within `timeout`, keep the rest in the spool
        for the next run, stop the worker. True if nothing was left behind.
        """
        with self._cond:
            if self._closed:
                return self.pending() == 0
            self._closed = True
        delivered = self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=max(2.0, 4 * self._max_retry_interval))
        with contextlib.suppress(Exception):
            self._redis.close()
        return delivered

    # ---- the worker -------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self._n[name] += n

    def _may_try(self) -> bool:
        return self._redis_up or time.monotonic() >= self._next_try

    def _backlog(self) -> int:
        return self._disk_pending + len(self._tail)

    def _run(self) -> None:
        while True:
            with self._cond:
                wait = self._wait_time()
                if wait > 0:
                    self._worker_waiting = True
                    self._cond.wait(wait)
                    self._worker_waiting = False
            self._build_later(from_worker=True)  # outside _cond: buffering takes it
            with self._cond:
                intake = self._intake
                if len(intake) <= self._batch_size:
                    taken = list(intake)
                    intake.clear()
                else:
                    taken = [intake.popleft() for _ in range(self._batch_size)]
                self._holding = len(taken)
                stop = self._stop
            batch: list[_Record] = []
            try:
                batch = self._encode(taken)
                self._handle(batch)
            except Exception as exc:  # keep the worker alive whatever happens
                log.error("event publisher worker error: %s", _describe(exc))
                self._keep(batch)
            finally:
                with self._cond:
                    self._holding = 0
            self._adopt_spill()
            with self._cond:
                if stop and not self._intake and not self._later and self._spill is None:
                    self._worker_left = True  # a batch handed from now on is built by its caller
                    break
        self._shutdown()

    def _encode(self, events: list[CallEvent]) -> list[_Record]:
        records = []
        for event in events:
            try:
                records.append(self._prepare(event))
            except Exception as exc:  # validated already: this would be a bug of ours
                self._count("dropped")
                log.error("event %s lost: cannot encode it (%s)", event.event_id, _describe(exc))
        return records

    def _wait_time(self) -> float:
        """How long the worker may sleep before looking again (called with `_cond`
        held). Not at all when a batch is full, a spill file waits, a backlog is due
        for a retry, or a flush or close wants the buffer out; otherwise `linger_s`,
        so that the events arriving meanwhile go out together."""
        waiting = len(self._intake) + len(self._later)
        if (
            self._stop
            or self._spill is not None
            or waiting >= self._batch_size
            or (waiting and (self._flushing or not self._linger_s))
        ):
            return 0.0
        wait = self._linger_s or 0.5  # not lingering: publish() wakes the worker
        if self._backlog():
            if self._may_try():
                return 0.0
            wait = min(wait, max(0.0, self._next_try - time.monotonic()))
        return wait

    def _handle(self, batch: list[_Record]) -> None:
        if batch and (self._backlog() or not self._may_try()):
            self._stash(batch)  # behind what is already waiting
            batch = []
        if self._backlog() and self._may_try():
            self._replay()
        if batch and not self._send(batch):
            self._stash(batch)

    def _keep(self, batch: list[_Record]) -> None:
        """Last resort after an unexpected error: never lose the batch silently."""
        try:
            self._stash(batch)
        except Exception as exc:
            self._count("dropped", len(batch))
            log.error("%d events lost after a worker error: %s", len(batch), _describe(exc))

    def _script_call(self, records: list[_Record]) -> bytes:
        """The batch script for `records`: one status digit per record (0 already
        there, 1 written, 2 written with a callback task)."""
        # Every key once, in order of appearance, with its kind (s stream, t set).
        # The callbacks stream is always KEYS[1]; the script only touches it for a task.
        kinds = {self._callbacks_key: "s"}
        for rec in records:
            kinds[rec.stream] = "s"
            kinds[rec.seen] = "t"
        args: list[Any] = [
            self._ttl, *self._retention.xadd_args(), *self._callback_retention.xadd_args(),
            1, self._callback_group, len(self._event_groups), *self._event_groups,
            "".join(kinds.values()), f"[{','.join([r.line for r in records])}]",
        ]  # fmt: skip
        reply = self._script(keys=list(kinds), args=args, client=self._redis)
        if isinstance(reply, str):
            reply = reply.encode()
        if not isinstance(reply, bytes) or len(reply) != len(records):
            raise redis.ResponseError(f"unexpected reply from the batch script: {reply!r:.40}")
        return reply

    def _send(self, records: list[_Record]) -> bool:
        """One script call for `records`; on any failure nothing is counted as sent."""
        try:
            statuses = self._script_call(records)
        except redis.ResponseError as exc:
            wrong = _WRONG_TYPE.match(str(exc))
            key = wrong[1] if wrong else ""
            stuck = [r for r in records if key in (r.stream, r.seen)]
            if not stuck:  # READONLY, OOM, NOPERM, the callbacks stream...: not one call's
                self._outage(exc)
                return False
            # One call's key is unusable: that call's events must not hold up every
            # other call's behind them for good.
            self._set_aside(stuck, key)
            rest = [r for r in records if key not in (r.stream, r.seen)]
            return not rest or self._send(rest)
        except Exception as exc:  # connection, timeout, NOAUTH, ...
            self._outage(exc)
            return False
        written = len(statuses) - statuses.count(b"0")
        with self._stats_lock:
            self._n["published"] += written
            self._n["duplicates"] += len(statuses) - written
            self._n["callback_tasks"] += statuses.count(b"2")
        self._recovered()
        return True

    def _set_aside(self, records: list[_Record], key: str) -> None:
        try:
            self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            append_lines(self.spool_dir / SET_ASIDE, [r.line for r in records])
        except OSError as exc:
            self._count("dropped", len(records))
            log.error(
                "%d call events lost: Redis key %s holds another type of value, and they "
                "could not be set aside (%s)", len(records), key, _describe(exc),
            )  # fmt: skip
            return
        self._count("set_aside", len(records))
        log.error("%d call events set aside in %s: Redis key %s holds another type of value; "
                  "the other calls' events go on", len(records), self.spool_dir / SET_ASIDE,
                  key)  # fmt: skip

    def _outage(self, exc: BaseException) -> None:
        self._count("redis_errors")
        now = time.monotonic()
        if self._redis_up:
            self._redis_up = False
            self._down_since = self._last_remind = now
            self._count("outages")
            log.error(
                "Redis unavailable (%s): spooling call events to %s until it answers",
                _describe(exc),
                self.spool_dir,
            )
        else:
            self._delay = min(self._delay * 2, self._max_retry_interval)
            if now - self._last_remind >= self._remind_interval:
                self._last_remind = now
                log.warning(
                    "Redis still unavailable after %.0f s (%s); %d events waiting",
                    now - self._down_since,
                    _describe(exc),
                    self._backlog(),
                )
        self._next_try = now + self._delay

    def _recovered(self) -> None:
        if not self._redis_up:
            self._redis_up = True
            log.warning(
                "Redis answers again after %.1f s; replaying %d waiting events",
                time.monotonic() - self._down_since,
                self._backlog(),
            )
        self._delay = self._retry_interval

    # ---- the backlog: disk spool first, then memory -----------------------------------

    def _open_spool(self) -> None:
        try:
            self._spool = Spool(self.spool_dir, own_spills=self._spill_mark)
            self._disk_pending = self._spool.pending
            if not self._spool_ok:
                log.warning("event spool %s is writable again", self.spool_dir)
            self._spool_ok = True
        except OSError as exc:
            self._spool_failed(exc)

    def _spool_failed(self, exc: BaseException) -> None:
        self._count("spool_errors")
        self._next_spool_try = time.monotonic() + max(1.0, self._max_retry_interval)
        if self._spool_ok:
            self._spool_ok = False
            log.error(
                "event spool %s unusable (%s): events wait in memory (up to %d) and are "
                "lost beyond that if Redis stays away",
                self.spool_dir,
                _describe(exc),
                self._buffer_size,
            )

    def _spool_usable(self) -> bool:
        if self._spool_ok:
            return self._spool is not None
        if time.monotonic() < self._next_spool_try:
            return False
        if self._spool is None:
            self._open_spool()
            return self._spool is not None
        return True  # try the write again; success clears the flag

    def _spool_write(self, records: Sequence[_Record]) -> bool:
        assert self._spool is not None
        try:
            self._spool.append([r.line for r in records])
        except OSError as exc:
            self._spool_failed(exc)
            return False
        finally:
            self._disk_pending = self._spool.pending
        if not self._spool_ok:
            self._spool_ok = True
            log.warning("event spool %s is writable again", self.spool_dir)
        return True

    def _stash(self, records: list[_Record]) -> None:
        """Put records at the back of the backlog: disk if possible, else memory."""
        if self._tail and self._spool_usable() and self._spool_write(self._tail):
            self._count("spooled", len(self._tail))
            self._tail.clear()
        if not self._tail and self._spool_usable() and self._spool_write(records):
            self._count("spooled", len(records))
            return
        self._hold(records)

    def _hold(self, records: Sequence[_Record]) -> None:
        room = max(0, self._buffer_size - len(self._tail))
        self._tail.extend(records[:room])
        self._count("held_in_memory", min(room, len(records)))
        lost = len(records) - room
        if lost > 0:
            self._count("dropped", lost)
            log.error(
                "%d call events lost: Redis and the spool are unavailable and the "
                "memory backlog is full (%d)",
                lost,
                self._buffer_size,
            )

    def _replay(self) -> None:
        """Send the oldest waiting events, in order, until done, failed or the slice is
        over; then the worker takes in new events (behind the backlog) and goes on."""
        deadline = time.monotonic() + self._replay_slice_s
        while True:  # at least one batch per slice, however short
            if self._disk_pending and self._spool is not None:
                try:
                    lines = self._spool.peek(self._batch_size)
                except OSError as exc:
                    self._spool_failed(exc)
                    return
                records, unreadable = [], 0
                for line in lines:
                    try:
                        records.append(_Record.from_line(line))
                    except (ValueError, KeyError, TypeError):
                        unreadable += 1
                if records and not self._send(records):
                    return  # read again next time: counted once, when skipped for good
                self._spool.commit(len(lines))
                if unreadable:
                    self._count("dropped", unreadable)
                    log.error("%d unreadable lines in event spool %s skipped", unreadable,
                              self.spool_dir)  # fmt: skip
                self._disk_pending = self._spool.pending
                self._count("replayed", len(records))
            elif self._tail:
                chunk = list(islice(self._tail, self._batch_size))
                if not self._send(chunk):
                    return
                for _ in chunk:
                    self._tail.popleft()
                self._count("replayed", len(chunk))
            else:
                return
            if time.monotonic() >= deadline:
                return

    def _adopt_spill(self) -> None:
        """Once the buffer is empty, the spill file's events are the oldest waiting
        ones after the backlog: move them to its back."""
        with self._cond:
            if self._spill is None or self._intake:
                return
            spill, self._spill = self._spill, None
            self._holding += spill.count
        try:
            try:
                spill.finish()
                if not self._tail and self._spool is not None and self._spool_usable():
                    self._spool.adopt(spill.path, spill.count)
                    self._disk_pending = self._spool.pending
                    return
            except OSError as exc:
                self._spool_failed(exc)
            self._adopt_into_memory(spill)
        finally:
            with self._cond:
                self._holding -= spill.count

    def _adopt_into_memory(self, spill: SpillFile) -> None:
        try:
            lines = spill.read_lines()
        except OSError as exc:
            self._count("dropped", spill.count)
            log.error("%d spilled events lost: %s", spill.count, _describe(exc))
            return
        records = []
        for line in lines:
            try:
                records.append(_Record.from_line(line))
            except (ValueError, KeyError, TypeError):
                self._count("dropped")
        self._hold(records)
        with contextlib.suppress(OSError):
            spill.path.unlink()

    def _shutdown(self) -> None:
        """Keep whatever Redis did not take on disk for the next run."""
        self._next_spool_try = 0.0  # the last chance: no back-off from an earlier failure
        if self._tail and self._spool_usable() and self._spool_write(self._tail):
            self._count("spooled", len(self._tail))
            self._tail.clear()
        if self._tail:
            self._count("dropped", len(self._tail))
            log.error("%d call events lost at shutdown: no spool to keep them", len(self._tail))
            self._tail.clear()
        if self._spool is not None:
            self._spool.close()
        left = self._disk_pending
        if left:
            log.warning("%d call events stay in %s for the next run", left, self.spool_dir)


class PublisherCollector(Collector):
    """Prometheus view of `Publisher.stats()`; no label ever carries a number."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Any]:
        s = self._publisher.stats()
        events = CounterMetricFamily(
            "ivr_events",
            "Call events by what happened to them at the publisher",
            labels=["outcome"],
        )
        for name in (
            "buffered",
            "spilled",
            "published",
            "duplicates",
            "spooled",
            "held_in_memory",
            "replayed",
            "dropped",
            "refused",
            "set_aside",
        ):
            events.add_metric([name], int(s[name]))
        yield events
        yield CounterMetricFamily(
            "ivr_callback_tasks",
            "Missed-call callback tasks created",
            value=int(s["callback_tasks"]),
        )
        yield CounterMetricFamily(
            "ivr_publisher_outages", "Times Redis stopped answering", value=int(s["outages"])
        )
        yield CounterMetricFamily(
            "ivr_publisher_redis_errors", "Failed Redis calls", value=int(s["redis_errors"])
        )
        yield CounterMetricFamily(
            "ivr_publisher_spool_errors",
            "Failed spool opens or writes",
            value=int(s["spool_errors"]),
        )
        backlog = GaugeMetricFamily(
            "ivr_publisher_backlog", "Events waiting, by where they wait", labels=["where"]
        )
        backlog.add_metric(["buffer"], int(s["queue_depth"]))
        backlog.add_metric(["spill"], int(s["spill_pending"]))
        backlog.add_metric(["disk"], int(s["backlog_disk"]))
        backlog.add_metric(["memory"], int(s["backlog_memory"]))
        yield backlog
        yield GaugeMetricFamily(
            "ivr_publisher_handed_over",
            "Front-end batches handed over, not yet built into events (see publish_later)",
            value=int(s["handed_over"]),
        )
        yield GaugeMetricFamily(
            "ivr_publisher_redis_up", "1 if Redis answered last time", value=int(s["redis_up"])
        )
        yield GaugeMetricFamily(
            "ivr_publisher_spool_ok", "1 if the disk spool is writable", value=int(s["spool_ok"])
        )

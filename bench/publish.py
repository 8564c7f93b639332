"""How fast call events reach Redis through the Publisher, and what that costs a call.

    python bench/publish.py [--calls 2000] [--xadd-requests 20000] [--batch 200]
                            [--rate 200] [--paced-calls 600] [--rounds 3]

Everything runs against a private redis-server started on a free loopback port in
a temporary directory (no persistence, like a plain redis-benchmark run) and
stopped at the end. Figures printed:

- redis-benchmark XADD rates on the same server, as the ceiling Redis itself gives:
  one field vs. an entry shaped like a real event, one connection vs. fifty,
  no pipelining vs. a pipeline as deep as the publisher's batches;
- the Publisher end to end (a burst: every event published at once): events/s from
  the first publish() until flush() says Redis has acknowledged every one, and
  that rate against redis-benchmark's;
- publish() latency as the call sees it, with Redis up and with Redis down;
- the events' CPU per call, measured as the controller works: calls arrive
  at --rate per second, each walked by the call engine, and after every
  instruction its new events go to a PublishingSink (as the FastAGI front-end hands
  them over). The same calls run without events and with them, alternating for
  --rounds rounds; process CPU time (every thread: the calls' and the publisher's
  worker; not redis-server's) per call is compared. The ranges over the rounds are
  printed: the machine is shared, so one round proves little.

The engine walk here is the call's routing work only, so the events' cost over it
is no share of call handling. The whole controller also speaks FastAGI
(bench/agi_load.py gives its CPU per call, with and without --events), and Asterisk
does the call itself: bench/lab_capacity.py --share RATE measures the events' share
of the whole call's CPU on real calls in the lab.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from ivr.events import CallEvent, CallInfo, EventRecorder, NoEvents  # noqa: E402
from ivr.platform.publisher import Publisher  # noqa: E402
from ivr.platform.sink import PublishingSink  # noqa: E402

START = datetime(2024, 6, 3, 1, 30, tzinfo=UTC)
PEAK_DAY_CALLS = 87_000  # Hangzhou's record day, the busiest figure in the domain notes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH")
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # A second one on the same port would fail, and the first be left running.
        assert self.proc is None, "redis-server already started"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@contextmanager
def redis_server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp:
        server = Server(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def redis_benchmark(port: int, n: int, clients: int, pipeline: int, command: list[str]) -> float:
    """Requests per second redis-benchmark reports for one custom command."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan")
    out = subprocess.run(
        [
            binary,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-n",
            str(n),
            "-c",
            str(clients),
            "-P",
            str(pipeline),
            "--csv",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith('"') and "rps" not in line]
    return float(rows[-1].split('","')[1])


# ---- calls: through the real engine when it is there, synthetic otherwise ---------------

# Walks call number n, handing its new events over as the front-end does (after every
# instruction, a few at a time) to `hand_over(call, events)`; returns the call's info.
Walk = Callable[[int, Callable[[Any, list[dict[str, Any]]], object]], CallInfo]
Scenario = Callable[[int], tuple[CallInfo, list[dict[str, Any]]]]


@dataclass(frozen=True)
class FrontEndCall:
    """What a front-end hands its sink: the call's id and caller, and its route."""

    call_id: str
    caller: str | None
    route: Any


def engine_walk() -> Walk:
    """Calls walked by ivr.core.engine over the bundled configuration."""
    from ivr.check import load_hotline
    from ivr.core.engine import CallSession, CollectDigits, Connect, ConnectResult, HangUp
    from ivr.core.routing import Call
    from ivr.paths import bundled_root

    hotline = load_hotline(bundled_root())
    # (dialed, hang up at instruction n, first connect outcome)
    mix = [
        ("12345", None, "answered"),
        ("12358", None, "answered"),
        ("12315", None, "busy"),
        ("12366", None, "noanswer"),
        ("12345", 4, "answered"),
        ("12319", 3, "answered"),
    ]

    def walk(n: int, hand_over: Callable[[Any, list[dict[str, Any]]], object]) -> CallInfo:
        dialed, hang_up_at, first = mix[n % len(mix)]
        call = Call(
            dialed=dialed, now=START, caller=f"1391234{n % 10_000:04d}", call_id=f"bench.{n}"
        )
        route = hotline.route(call)
        front = FrontEndCall(call.call_id, call.caller, route)
        session, instruction = CallSession.start(hotline, route)

        def publish() -> None:
            events = session.take_events()
            if events:
                hand_over(front, events)

        steps = 0
        while not isinstance(instruction, HangUp):
            publish()
            steps += 1
            if hang_up_at is not None and steps >= hang_up_at:
                session.caller_hung_up(answered=False, wait_s=30.0)
                break
            result: Any = None
            if isinstance(instruction, CollectDigits):
                result = "1"
            elif isinstance(instruction, Connect):
                outcome = first if session.state.connects == 1 else "answered"
                result = ConnectResult(outcome, wait_s=5.0)
            instruction = session.resume(result)
        publish()
        return CallInfo.from_route(call, route)

    walk(0, lambda call, events: None)  # fail here, not half-way through the measurement
    return walk


@dataclass(frozen=True)
class _Route:
    region: str = "fuzhou"
    line: str = "12345"
    mode: str = "main"


def synthetic_walk() -> Walk:
    """A fixed seven-event call, for when the engine cannot be loaded."""

    def walk(n: int, hand_over: Callable[[Any, list[dict[str, Any]]], object]) -> CallInfo:
        front = FrontEndCall(f"bench.{n}", f"1391234{n % 10_000:04d}", _Route())
        for event in [
            {"type": "call_offered", "known": True, "region_source": "trunk"},
            {"type": "prompt_played", "prompt": "welcome", "transition": False},
            {"type": "queued", "via": "queue", "target_kind": "seats", "target": "fuzhou-12345"},
            {"type": "answered", "target_kind": "seats", "target": "fuzhou-12345", "wait_s": 8.0},
            {"type": "prompt_played", "prompt": "survey", "transition": False},
            {"type": "survey_result", "grade": "满意", "score": 4, "key": "4"},
            {
                "type": "call_ended",
                "answered": True,
                "target_kind": "seats",
                "target": "fuzhou-12345",
                "fallbacks": 0,
                "prompts": 2,
            },
        ]:
            hand_over(front, [event])
        return CallInfo.from_route(front, front.route)

    return walk


def whole_calls(walk: Walk) -> Scenario:
    """A call's info and all its engine events at once."""

    def run(n: int) -> tuple[CallInfo, list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        info = walk(n, lambda call, batch: events.extend(batch))
        return info, events

    return run


def to_events(info: CallInfo, raw: list[dict[str, Any]]) -> list[CallEvent]:
    rec = EventRecorder(info)
    t = START
    for item in raw:
        t += timedelta(seconds=1)
        extra = {"duration_s": 60.0} if item["type"] == "call_ended" else {}
        rec.record_engine(item, t, **extra)
    return list(rec.events)


# ---- measurements ---------------------------------------------------------------------


def paced_cpu(
    walk: Walk, sink: Any, first: int, calls: int, rate: float, publisher: Publisher | None
) -> float:
    """Process CPU seconds per call for `calls` calls started at `rate` per second,
    each handing its events to `sink`; with a publisher, until Redis has them all."""
    start, cpu0 = time.perf_counter(), time.process_time()
    for i in range(calls):
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        walk(first + i, sink.call_events)
    if publisher is not None:
        assert publisher.flush(60), "publisher did not drain"
    return (time.process_time() - cpu0) / calls


def span(values: list[float], scale: float = 1e6, unit: str = " µs") -> str:
    low, high = min(values) * scale, max(values) * scale
    mid = statistics.median(values) * scale
    if unit == "%":
        return f"{mid:.1f} % (range {low:.1f}-{high:.1f} %)"
    return f"{mid:,.0f}{unit} (range {low:,.0f}-{high:,.0f})"


def cpu_per_call(calls: int, body: Callable[[int], object]) -> float:
    start = time.process_time()
    for n in range(calls):
        body(n)
    return (time.process_time() - start) / calls


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    try:
        walk = engine_walk()
        source = "ivr.core.engine"
    except Exception as exc:  # the core is young; the bench must still run
        walk, source = synthetic_walk(), f"synthetic ({type(exc).__name__})"
    scenario = whole_calls(walk)

    calls = args.calls
    walked = [scenario(n) for n in range(calls)]
    per_call = [to_events(info, raw) for info, raw in walked]
    events = [e for evs in per_call for e in evs]
    events_per_call = len(events) / calls
    sample = events[0].to_fields()

    engine_cpu = cpu_per_call(calls, scenario)
    convert_cpu = cpu_per_call(calls, lambda n: to_events(*walked[n]))

    with redis_server() as server, tempfile.TemporaryDirectory(prefix="ivr-spool-") as spool:
        port, n = server.port, args.xadd_requests
        event_cmd = ["XADD", "bench:event", "*", *[x for kv in sample.items() for x in kv]]
        xadd: dict[str, float] = {}
        for label, clients, pipeline, command in [
            ("1 field, 1 connection", 1, 1, ["XADD", "bench:small", "*", "f", "v"]),
            (f"event-sized ({len(sample)} fields), 1 connection", 1, 1, event_cmd),
            ("event-sized, 50 connections", 50, 1, event_cmd),
            (f"event-sized, 1 connection, pipeline {args.batch}", 1, args.batch, event_cmd),
        ]:
            rps = redis_benchmark(port, n, clients, pipeline, command)
            xadd[label] = rps
            rows.append((f"redis-benchmark XADD {label}", f"{rps:,.0f} entries/s"))
        server.stop()
        server.start()  # a clean server for the publisher

        pub = Publisher(
            f"redis://127.0.0.1:{port}/0",
            Path(spool) / "up",
            batch_size=args.batch,
            buffer_size=max(10_000, len(events)),
        )
        latencies: list[float] = []
        wall0, cpu0, caller0 = time.perf_counter(), time.process_time(), time.thread_time()
        for event in events:
            t0 = time.perf_counter()
            pub.publish(event)
            latencies.append(time.perf_counter() - t0)
        caller_cpu = time.thread_time() - caller0
        assert pub.flush(60), "publisher did not drain"
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stats = pub.stats()
        pub.close()
        assert stats["published"] == len(events) and stats["dropped"] == 0, stats
        stored = redis.Redis(port=port).xlen(f"ivr:events:{events[0].region}")
        assert stored > 0

        rate = len(events) / wall
        rows.append(
            (
                f"Publisher end to end, a burst ({len(events)} events, {calls} calls)",
                f"{rate:,.0f} events/s",
            )
        )
        for label in (
            f"event-sized ({len(sample)} fields), 1 connection",
            "event-sized, 50 connections",
        ):
            if xadd.get(label):
                rows.append((f"  vs. redis-benchmark XADD {label}", f"{rate / xadd[label]:.2f}x"))
        p50, p99, worst = (percentile(latencies, q) * 1e6 for q in (0.5, 0.99, 1.0))
        rows.append(
            (
                "publish() latency p50 / p99 / max (Redis up)",
                f"{p50:.1f} / {p99:.1f} / {worst:.0f} µs",
            )
        )

        # Redis down: the same events go to the spool, then are replayed.
        server.stop()
        pub = Publisher(
            f"redis://127.0.0.1:{port}/0",
            Path(spool) / "down",
            batch_size=args.batch,
            buffer_size=max(10_000, len(events)),
            retry_interval=0.05,
            max_retry_interval=0.2,
        )
        down = events[: min(len(events), 5_000)]
        latencies = []
        for event in down:
            t0 = time.perf_counter()
            pub.publish(event)
            latencies.append(time.perf_counter() - t0)
        while pub.stats()["backlog_disk"] < len(down):
            time.sleep(0.01)
        server.start()
        t0 = time.perf_counter()
        assert pub.flush(60), "replay did not finish"
        replay = time.perf_counter() - t0
        pub.close()
        p99, worst = (percentile(latencies, q) * 1e6 for q in (0.99, 1.0))
        rows.append(
            ("publish() latency p99 / max (Redis down, spooling)", f"{p99:.1f} / {worst:.0f} µs")
        )
        rows.append(
            (
                f"replay of {len(down)} spooled events after Redis returns",
                f"{len(down) / replay:,.0f} events/s (incl. reconnect back-off)",
            )
        )

        # As the controller works: paced calls, events handed over after every
        # instruction; without events and with them, alternating. (The server is up
        # again since the replay.)
        url = f"redis://127.0.0.1:{port}/0"
        bare: list[float] = []
        with_events: list[float] = []
        first = 10 * calls  # call ids not used above: the seen-sets would swallow them
        for r in range(args.rounds):
            bare.append(paced_cpu(walk, NoEvents(), first, args.paced_calls, args.rate, None))
            first += args.paced_calls
            paced_pub = Publisher(url, Path(spool) / f"paced-{r}", batch_size=args.batch)
            sink = PublishingSink(paced_pub)
            with_events.append(paced_cpu(walk, sink, first, args.paced_calls, args.rate, paced_pub))
            first += args.paced_calls
            paced_stats = paced_pub.stats()
            paced_pub.close()
            assert paced_stats["dropped"] == paced_stats["refused"] == 0, paced_stats
        costs = [e - b for b, e in zip(bare, with_events, strict=True)]
        shares = [c / b for c, b in zip(costs, bare, strict=True)]

    publish_cpu = cpu / calls
    rows += [
        ("calls walked by", source),
        ("events per call", f"{events_per_call:.1f}"),
        ("burst: CPU per call, engine walking the call", f"{engine_cpu * 1e6:,.0f} µs"),
        ("burst: CPU per call, building its CallEvents", f"{convert_cpu * 1e6:,.0f} µs"),
        ("burst: CPU per call, publish() (caller thread)", f"{caller_cpu / calls * 1e6:,.0f} µs"),
        ("burst: CPU per call, publishing (caller + worker)", f"{publish_cpu * 1e6:,.0f} µs"),
        (
            f"paced, {args.rate:g} calls/s x {args.paced_calls}, {args.rounds} rounds: "
            "CPU per call",
            "",
        ),
        ("  without events (the engine walking the call)", span(bare)),
        ("  with events (building, publishing, worker)", span(with_events)),
        ("  the events' cost per call", span(costs)),
        ("  events' cost over the engine walk's alone", span(shares, 100, "%")),
        (
            f"CPU for {PEAK_DAY_CALLS:,} calls/day of events",
            f"{PEAK_DAY_CALLS * statistics.median(costs):.1f} s/day of one core",
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls to simulate")
    parser.add_argument("--xadd-requests", type=int, default=20000, help="per redis-benchmark run")
    parser.add_argument("--batch", type=int, default=200, help="publisher batch size")
    parser.add_argument("--rate", type=float, default=200.0, help="paced calls per second")
    parser.add_argument("--paced-calls", type=int, default=600, help="calls per paced run")
    parser.add_argument("--rounds", type=int, default=3, help="paced rounds (without/with)")
    args = parser.parse_args(argv)
    rows = run(args)
    width = max(len(name) for name, _ in rows)
    print(f"{'figure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 24}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

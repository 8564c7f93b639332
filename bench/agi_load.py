"""FastAGI load generator: plays Asterisk against a FastAGI server.

Each simulated call connects, sends an environment block, answers the server's
five commands (ANSWER, SET VARIABLE x2, STREAM FILE, EXEC Dial) with
`200 result=0`, and ends when the server closes. Two load shapes:

- closed loop: N sessions back to back, each starting its next call when the
  previous one ends, for D seconds (throughput at a fixed concurrency);
- open loop: calls started at a fixed rate R for D seconds whether or not
  earlier ones finished (how latency behaves under an offered load, which is
  what Asterisk does).

Compared in one run, each server in its own process so the generator (one
core) and the server do not share a GIL:

- controller: the real controller (`ivr serve`'s incoming_call route and the
  routing core) taking a 12345 call: greeting, queue, survey, hang-up (eight
  commands);
- controller+events (with --events URL): the same, publishing every event to
  that Redis, so that what publishing costs a call is measured beside it;
- asyncio-12345: a minimal hand-written asyncio responder sending the same eight;
- ours: `ivr.agi.AgiServer` with a trivial handler sending the five commands;
- asyncio: a minimal hand-written asyncio responder sending the same five.

Each row also gives the server's CPU per call (its process's user+system time over
the calls it completed) and its context switches per call. With --repeat N the
servers alternate for N rounds and a summary gives each figure's range and the
ratios between servers within each round. --baseline DIR runs the controller and
ours from another checkout too (e.g. a `git worktree` of main), as controller@base
and ours@base, so that before and after are measured in one run. --interleave R
keeps every server up and alternates short slices between them instead (R rounds
of --duration seconds): on a shared machine that is the steadier comparison.

Usage: python bench/agi_load.py [--sessions 50] [--rate 200] [--duration 4]
       [--servers controller,asyncio-12345,ours,asyncio] [--modes closed,open]
       [--repeat N | --interleave R] [--baseline DIR] [--events redis://…]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV = (
    "".join(
        f"{k}: {v}\n"
        for k, v in {
            "agi_network": "yes",
            "agi_network_script": "bench",
            "agi_request": "agi://127.0.0.1/bench",
            "agi_channel": "PJSIP/trunk-00000001",
            "agi_language": "en",
            "agi_type": "PJSIP",
            "agi_uniqueid": "1732612345.17",
            "agi_version": "22.0.0",
            "agi_callerid": "13912340000",
            "agi_calleridname": "unknown",
            "agi_dnid": "12345",
            "agi_context": "from-trunk",
            "agi_extension": "12345",
            "agi_priority": "1",
            "agi_enhanced": "0.0",
            "agi_accountcode": "",
        }.items()
    )
    + "\n"
).encode()

# What both servers send, byte for byte (what pyst2's methods produce).
COMMANDS = [
    b"ANSWER\n",
    b'SET VARIABLE "ROUTE" "seats"\n',
    b'SET VARIABLE "LANG" "zh"\n',
    b'STREAM FILE welcome "" 0\n',
    b'EXEC Dial "PJSIP/seat1,30"\n',
]
CALL_TIMEOUT = 5.0
_CALL_IDS = itertools.count(1)

# The controller's 12345 call, as the glue starts it (trunk, no region, the trunk's
# seats as fallback), and the eight commands the controller sends for it when the seat
# answers and the caller gives no survey key.
CONTROLLER_ENV = ENV.replace(b"agi_network_script: bench", b"agi_network_script: incoming_call")
CONTROLLER_ENV = (
    CONTROLLER_ENV[:-1] + b"agi_arg_1: fuzhou-ct\nagi_arg_2: \nagi_arg_3: fuzhou-12345\n\n"
)
_CALL = b"line=12345;merge_mode=main;mode=main;original_line=12345;region=fuzhou;route=main"
CONTROLLER_COMMANDS = [
    b"ANSWER\n",
    b'STREAM FILE ivr/greeting_12345 "120" 0\n',
    b'EXEC MSet "__IVR_CALL=call_id=1732612345.17;' + _CALL + b",CDR(userfield)=" + _CALL + b'"\n',
    b'EXEC Queue "fuzhou-12345,c,,,60"\n',
    b'GET FULL VARIABLE "${QUEUESTATUS}|${ABANDONED}|${QEHOLDTIME}|${MEMBERNAME}"\n',
    b"GET DATA ivr/survey_question 8000 1\n",
    b'STREAM FILE ivr/survey_thanks "" 0\n',
    b"HANGUP\n",
]
SCRIPTS = {  # server kind -> (environment block, commands it must send)
    "ours": (ENV, COMMANDS),
    "asyncio": (ENV, COMMANDS),
    "controller": (CONTROLLER_ENV, CONTROLLER_COMMANDS),
    "controller+events": (CONTROLLER_ENV, CONTROLLER_COMMANDS),
    "asyncio-12345": (CONTROLLER_ENV, CONTROLLER_COMMANDS),
}


def reply_to(line: bytes) -> bytes:
    """What Asterisk answers: digits for nobody, the seat answered after 3 s."""
    if line.startswith(b"STREAM"):
        return b"200 result=0 endpos=8000\n"
    if line.startswith(b"GET FULL VARIABLE"):
        return b"200 result=1 (||3|seat-1)\n"
    if line.startswith(b"GET DATA"):
        return b"200 result= (timeout)\n"
    return b"200 result=0\n"


# --------------------------------------------------------------- servers


def serve_ours(log_level: str) -> None:
    try:
        from ivr.agi import AgiServer, AgiSession
    except ImportError:  # run from a checkout without the package installed
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from ivr.agi import AgiServer, AgiSession

    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s %(message)s")

    def bench(session: AgiSession) -> None:
        session.answer()
        session.set_variable("ROUTE", "seats")
        session.set_variable("LANG", "zh")
        session.stream_file("welcome")
        session.appexec("Dial", "PJSIP/seat1,30")

    server = AgiServer(("127.0.0.1", 0), {"bench": bench})
    port = server.start()[1]
    _announce_and_wait(port)
    server.stop(grace=2.0)


def serve_controller(log_level: str, events_url: str | None) -> None:
    """The real controller: the incoming_call route over the bundled configuration."""
    import tempfile

    from ivr.agi import AgiServer
    from ivr.agi.calls import CallController
    from ivr.check import load_hotline
    from ivr.events import NoEvents
    from ivr.paths import bundled_root

    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s %(message)s")
    hotline = load_hotline(bundled_root())
    events: Any = NoEvents()
    publisher = None
    spool = tempfile.TemporaryDirectory()
    if events_url:
        from ivr.platform.publisher import Publisher
        from ivr.platform.sink import PublishingSink

        publisher = Publisher(events_url, spool.name)
        events = PublishingSink(publisher)
    calls = CallController(lambda: hotline, events=events)
    server = AgiServer(("127.0.0.1", 0), calls.routes(), max_sessions=5000)
    port = server.start()[1]
    _announce_and_wait(port)
    server.stop(grace=2.0)
    if publisher is not None:
        publisher.close(5.0)
    spool.cleanup()


def responder(commands: list[bytes]) -> Any:
    """A minimal FastAGI handler: reads the environment, sends `commands` one by one,
    each awaiting its 200, and closes."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (line := await reader.readline()) not in (b"\n", b""):
                pass
            if line:
                for command in commands:
                    writer.write(command)
                    if not (await reader.readline()).startswith(b"200"):
                        break
        finally:
            writer.close()

    return respond


def serve_asyncio(commands: list[bytes]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(responder(commands), "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _announce_and_wait, port)
        server.close()

    asyncio.run(main())


def _announce_and_wait(port: int) -> None:
    # The parent reads the port, and ends us by closing our stdin.
    print(f"PORT {port}", flush=True)
    sys.stdin.read()


# ------------------------------------------------------------- generator


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    connect_waits: list[float] = field(default_factory=list)
    failures: int = 0
    elapsed: float = 0.0
    started: int = 0


async def one_call(
    port: int, result: Result, scheduled: float | None = None, kind: str = "ours"
) -> None:
    """One call; latency runs from `scheduled` when given (open loop), so a
    generator that falls behind its schedule shows up in the figures instead
    of hiding the queueing (coordinated omission)."""
    start = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            result.connect_waits.append(time.perf_counter() - start)
            env, expected = SCRIPTS[kind]
            # every call its own uniqueid, as Asterisk gives: events are keyed by it
            writer.write(env.replace(b"1732612345.17", f"1732612345.{next(_CALL_IDS)}".encode()))
            commands = 0
            while line := await reader.readline():
                commands += 1
                writer.write(reply_to(line))
        if commands != len(expected):
            result.failures += 1
            return
        result.latencies.append(time.perf_counter() - (scheduled or start))
    except (OSError, TimeoutError):
        result.failures += 1
    finally:
        if writer is not None:
            writer.close()


async def closed_loop(port: int, sessions: int, duration: float, kind: str) -> Result:
    result = Result()
    end = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < end:
            result.started += 1
            await one_call(port, result, kind=kind)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    result.elapsed = time.perf_counter() - start
    return result


async def open_loop(port: int, rate: float, duration: float, kind: str) -> Result:
    result = Result()
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    total = int(rate * duration)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one_call(port, result, due, kind))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.started += 1
    if tasks:
        await asyncio.wait(set(tasks))
    result.elapsed = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- driver


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int | None:
    """Voluntary and involuntary context switches of the process's live threads.

    A threaded server's cost under load is mostly the scheduler's: each switch is a
    thread waking for a reply or waiting for the GIL. (Threads that ended are not
    counted; the servers here keep their threads for the length of a run.)"""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Server:
    """A server to measure: a kind (what it serves) and, for a server run from
    another checkout (--baseline), that checkout's root."""

    kind: str
    tree: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}@base" if self.tree else self.kind


def spawn(server: Server, log_level: str, events: str | None) -> tuple[subprocess.Popen[str], int]:
    extra = ["--events", events] if events else []
    env = None
    if server.tree:  # the other checkout's ivr package comes first on the path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (server.tree, os.environ.get("PYTHONPATH")) if p
        )}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", server.kind, "--server-log-level", log_level, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"server {server.label!r} did not start: {line!r}")
    return proc, int(line.split()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@dataclass
class Figures:
    """One measurement of one server under one load shape."""

    label: str
    mode: str
    calls: int
    rate: float
    p50_ms: float
    p99_ms: float
    conn_max_ms: float
    failures: int
    cpu_pct: float | None
    cpu_ms_per_call: float | None
    switches_per_call: float | None


def figures(label: str, mode: str, r: Result, cpu: float | None, switches: int | None) -> Figures:
    ok = len(r.latencies)
    p50, p99 = (1000 * percentile(r.latencies, q) for q in (0.5, 0.99))
    return Figures(
        label,
        mode,
        ok,
        ok / r.elapsed,
        p50,
        p99,
        1000 * max(r.connect_waits, default=float("nan")),
        r.failures,
        100 * cpu / r.elapsed if cpu is not None else None,
        1000 * cpu / ok if cpu is not None and ok else None,
        switches / ok if switches is not None and ok else None,
    )


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'?':>{width}}"


HEADER = (
    f"{'server':<16} {'mode':<16} {'calls':>7} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'conn max':>8} {'failed':>6} {'srv CPU%':>8} {'srv ms/call':>11} {'ctx sw/call':>11}"
)


def row(f: Figures) -> str:
    return (
        f"{f.label:<16} {f.mode:<16} {f.calls:>7} {f.rate:>8.0f} {f.p50_ms:>7.2f} "
        f"{f.p99_ms:>7.2f} {f.conn_max_ms:>8.2f} {f.failures:>6} {_num(f.cpu_pct, 8, 0)} "
        f"{_num(f.cpu_ms_per_call, 11, 3)} {_num(f.switches_per_call, 11, 1)}"
    )


@dataclass
class Slice:
    """What one load shape did to one server: the calls, and the server's CPU
    seconds and context switches meanwhile (None where /proc cannot tell)."""

    result: Result
    cpu: float | None
    switches: int | None


def run_load(proc: subprocess.Popen[str], load: Coroutine[Any, Any, Result]) -> Slice:
    before, switched = cpu_seconds(proc.pid), context_switches(proc.pid)
    result = asyncio.run(load)
    after, switched_after = cpu_seconds(proc.pid), context_switches(proc.pid)
    cpu = after - before if before is not None and after is not None else None
    switches = (
        switched_after - switched if switched is not None and switched_after is not None else None
    )
    return Slice(result, cpu, switches)


def measure(
    label: str, mode: str, proc: subprocess.Popen[str], load: Coroutine[Any, Any, Result]
) -> Figures:
    got = run_load(proc, load)
    out = figures(label, mode, got.result, got.cpu, got.switches)
    print(row(out), flush=True)
    time.sleep(0.5)  # let the server drain before the next shape
    return out


def combined(slices: list[Slice]) -> Slice:
    """Several slices of one server as one measurement."""
    result = Result()
    for got in slices:
        result.latencies += got.result.latencies
        result.connect_waits += got.result.connect_waits
        result.failures += got.result.failures
        result.elapsed += got.result.elapsed
        result.started += got.result.started
    cpus = [got.cpu for got in slices]
    switches = [got.switches for got in slices]
    return Slice(
        result,
        None if None in cpus else sum(c for c in cpus if c is not None),
        None if None in switches else sum(n for n in switches if n is not None),
    )


def interleaved(args: argparse.Namespace, servers: list[Server], modes: list[str]) -> None:
    """All servers up at once, each load shape run in short slices that alternate
    between them, round after round: a neighbour's burst on a shared machine then
    hits every server alike. A row per server sums its slices; the summary pairs
    the slices of each round."""
    running = [(server, *spawn(server, args.server_log_level, args.events)) for server in servers]
    rounds: list[dict[tuple[str, str], Figures]] = [{} for _ in range(args.interleave)]
    try:
        for server, _, port in running:
            asyncio.run(closed_loop(port, args.sessions, max(args.warmup, 0.5), server.kind))
        for mode in modes:
            label = f"closed N={args.sessions}" if mode == "closed" else f"open R={args.rate:g}/s"
            slices: dict[str, list[Slice]] = {server.label: [] for server in servers}
            for index, got_round in enumerate(rounds):
                order = running if index % 2 == 0 else running[::-1]
                for server, proc, port in order:
                    load = (
                        closed_loop(port, args.sessions, args.duration, server.kind)
                        if mode == "closed"
                        else open_loop(port, args.rate, args.duration, server.kind)
                    )
                    got = run_load(proc, load)
                    slices[server.label].append(got)
                    got_round[(server.label, label)] = figures(
                        server.label, label, got.result, got.cpu, got.switches
                    )
            for server in servers:
                total = combined(slices[server.label])
                print(row(figures(server.label, label, total.result, total.cpu, total.switches)))
    finally:
        for _, proc, _ in running:
            stop(proc)
    summary(rounds)


def _span(values: list[float], digits: int) -> str:
    """min–max (median) of one figure over the rounds."""
    if not values:
        return "?"
    lo, hi, mid = min(values), max(values), statistics.median(values)
    if len(values) == 1:
        return f"{mid:.{digits}f}"
    return f"{lo:.{digits}f}–{hi:.{digits}f} ({mid:.{digits}f})"


def summary(rounds: list[dict[tuple[str, str], Figures]]) -> None:
    """Ranges over the rounds, and the ratios between servers of the same round
    (the machine may be shared: figures of one round saw the same neighbours)."""
    print(f"\n# over {len(rounds)} rounds: min–max (median)")
    keys = list(dict.fromkeys(k for r in rounds for k in r))
    for label, mode in keys:
        got = [r[(label, mode)] for r in rounds if (label, mode) in r]
        cpu = [f.cpu_ms_per_call for f in got if f.cpu_ms_per_call is not None]
        switches = [f.switches_per_call for f in got if f.switches_per_call is not None]
        print(
            f"{label:<16} {mode:<16} calls/s {_span([f.rate for f in got], 0)}; "
            f"p50 {_span([f.p50_ms for f in got], 2)} ms; "
            f"p99 {_span([f.p99_ms for f in got], 2)} ms; "
            f"CPU {_span(cpu, 3)} ms/call; {_span(switches, 1)} switches/call"
        )
    pairs = [
        ("controller", "asyncio-12345", "calls/s", lambda f: f.rate),
        ("controller@base", "asyncio-12345", "calls/s", lambda f: f.rate),
        ("controller", "asyncio-12345", "CPU/call", lambda f: f.cpu_ms_per_call),
        ("controller+events", "controller", "CPU/call", lambda f: f.cpu_ms_per_call),
        ("controller+events@base", "controller@base", "CPU/call", lambda f: f.cpu_ms_per_call),
        ("controller+events", "asyncio-12345", "calls/s", lambda f: f.rate),
        ("controller", "controller@base", "CPU/call", lambda f: f.cpu_ms_per_call),
        ("controller", "controller@base", "calls/s", lambda f: f.rate),
        ("ours", "asyncio", "CPU/call", lambda f: f.cpu_ms_per_call),
        ("ours", "ours@base", "CPU/call", lambda f: f.cpu_ms_per_call),
    ]
    modes = list(dict.fromkeys(mode for _, mode in keys))
    for a, b, what, of in pairs:
        for mode in modes:
            ratios = []
            for r in rounds:
                if (a, mode) in r and (b, mode) in r:
                    x, y = of(r[(a, mode)]), of(r[(b, mode)])
                    if x is not None and y:
                        ratios.append(x / y)
            if ratios:
                print(f"# {what} {a} / {b}, {mode}: {_span(ratios, 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50, help="closed-loop concurrency")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop calls per second")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="seconds of closed loop before measuring"
    )
    parser.add_argument(
        "--servers",
        default="controller,asyncio-12345,ours,asyncio",
        help="comma list of: " + ", ".join(SCRIPTS),
    )
    parser.add_argument(
        "--modes", default="closed,open", help="comma list of: closed, open (load shapes)"
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout (set up, prompts rendered): its controller and ours run "
        "beside this one's, as controller@base and ours@base, for before/after in one run",
    )
    parser.add_argument(
        "--events",
        metavar="URL",
        help="also run controller+events: the controller publishing its events to this Redis",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds, servers alternating (a shared machine is noisy); >1 prints ranges",
    )
    parser.add_argument(
        "--interleave",
        type=int,
        metavar="ROUNDS",
        help="all servers up at once, ROUNDS slices of --duration seconds alternating "
        "between them (steadier on a shared machine than whole runs one after another)",
    )
    parser.add_argument("--server-log-level", default="WARNING", help="logging level for ours")
    parser.add_argument("--serve", choices=list(SCRIPTS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve == "ours":
        serve_ours(args.server_log_level)
        return
    if args.serve in ("controller", "controller+events"):
        events = args.events if args.serve == "controller+events" else None
        serve_controller(args.server_log_level, events)
        return
    if args.serve in ("asyncio", "asyncio-12345"):
        serve_asyncio(SCRIPTS[args.serve][1])
        return

    servers: list[Server] = []
    for kind in (k.strip() for k in args.servers.split(",") if k.strip()):
        if kind not in SCRIPTS:
            parser.error(f"unknown server {kind!r}")
        kinds = [kind]
        if kind == "controller" and args.events:
            kinds.append("controller+events")
        for one in kinds:
            servers.append(Server(one))
            if args.baseline and one in ("controller", "controller+events", "ours"):
                servers.append(Server(one, str(Path(args.baseline).resolve())))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(
        f"# FastAGI load on 127.0.0.1, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}; closed loop {args.sessions} sessions, "
        f"open loop {args.rate:g}/s; {args.duration:g} s each"
    )
    if args.baseline:
        print(f"# @base: servers run from {args.baseline}")
    if args.interleave:
        print(f"# interleaved: {args.interleave} rounds of {args.duration:g} s slices per shape")
    if args.events:
        print(f"# controller+events publishes every call's events to {args.events}")
    print(HEADER)
    if args.interleave:
        interleaved(args, servers, modes)
        return
    rounds: list[dict[tuple[str, str], Figures]] = []
    for _ in range(args.repeat):
        got: dict[tuple[str, str], Figures] = {}
        for server in servers:
            proc, port = spawn(server, args.server_log_level, args.events)
            try:
                if args.warmup > 0:  # threads started, code paths warm
                    asyncio.run(closed_loop(port, args.sessions, args.warmup, server.kind))
                    time.sleep(0.2)
                if "closed" in modes:
                    mode = f"closed N={args.sessions}"
                    load = closed_loop(port, args.sessions, args.duration, server.kind)
                    got[(server.label, mode)] = measure(server.label, mode, proc, load)
                if "open" in modes:
                    mode = f"open R={args.rate:g}/s"
                    load = open_loop(port, args.rate, args.duration, server.kind)
                    got[(server.label, mode)] = measure(server.label, mode, proc, load)
            finally:
                stop(proc)
        rounds.append(got)
    if args.repeat > 1 or args.baseline:
        summary(rounds)


if __name__ == "__main__":
    main()

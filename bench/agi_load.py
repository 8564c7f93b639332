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

- controller: the real controller (`ivr serve`'s incoming_call route, the
  routing core and, with --events URL, publishing every event to Redis) taking
  a 12345 call: greeting, queue, survey, hang-up (nine commands);
- asyncio-12345: a minimal hand-written asyncio responder sending the same nine;
- ours: `ivr.agi.AgiServer` with a trivial handler sending the five commands;
- asyncio: a minimal hand-written asyncio responder sending the same five.

Usage: python bench/agi_load.py [--sessions 50] [--rate 200] [--duration 4]
       [--servers controller,asyncio-12345,ours,asyncio] [--events redis://…]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
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
# seats as fallback), and the nine commands the controller sends for it when the seat
# answers and the caller gives no survey key.
CONTROLLER_ENV = ENV.replace(b"agi_network_script: bench", b"agi_network_script: incoming_call")
CONTROLLER_ENV = (
    CONTROLLER_ENV[:-1] + b"agi_arg_1: fuzhou-ct\nagi_arg_2: \nagi_arg_3: fuzhou-12345\n\n"
)
_CALL = b"line=12345;merge_mode=main;mode=main;original_line=12345;region=fuzhou;route=main"
CONTROLLER_COMMANDS = [
    b"ANSWER\n",
    b'STREAM FILE ivr/greeting_12345 "120" 0\n',
    b'SET VARIABLE "__IVR_CALL" "' + _CALL + b'"\n',
    b'SET VARIABLE "CDR(userfield)" "' + _CALL + b'"\n',
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


def _responder(commands: list[bytes]) -> Any:
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
        server = await asyncio.start_server(_responder(commands), "127.0.0.1", 0, backlog=1024)
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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spawn(kind: str, log_level: str, events: str | None) -> tuple[subprocess.Popen[str], int]:
    extra = ["--events", events] if events else []
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--server-log-level", log_level, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"server {kind!r} did not start: {line!r}")
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


def row(kind: str, mode: str, r: Result, cpu: float | None) -> str:
    ok = len(r.latencies)
    cpu_pct = f"{100 * cpu / r.elapsed:>8.0f}" if cpu is not None else f"{'?':>8}"
    cpu_call = f"{1000 * cpu / ok:>11.3f}" if cpu is not None and ok else f"{'?':>11}"
    p50, p99 = (1000 * percentile(r.latencies, q) for q in (0.5, 0.99))
    conn_max = 1000 * max(r.connect_waits, default=float("nan"))
    return (
        f"{kind:<13} {mode:<16} {ok:>7} {ok / r.elapsed:>8.0f} {p50:>7.2f} {p99:>7.2f} "
        f"{conn_max:>8.2f} {r.failures:>6} {cpu_pct} {cpu_call}"
    )


def measure(
    kind: str, mode: str, proc: subprocess.Popen[str], load: Coroutine[Any, Any, Result]
) -> None:
    before = cpu_seconds(proc.pid)
    result = asyncio.run(load)
    after = cpu_seconds(proc.pid)
    cpu = after - before if before is not None and after is not None else None
    print(row(kind, mode, result, cpu), flush=True)
    time.sleep(0.5)  # let the server drain before the next shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50, help="closed-loop concurrency")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop calls per second")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument(
        "--servers",
        default="controller,asyncio-12345,ours,asyncio",
        help="comma list of: " + ", ".join(SCRIPTS),
    )
    parser.add_argument(
        "--events", metavar="URL", help="the controller publishes its events to this Redis"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds, servers alternating (a shared machine is noisy)",
    )
    parser.add_argument("--server-log-level", default="WARNING", help="logging level for ours")
    parser.add_argument("--serve", choices=list(SCRIPTS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve == "ours":
        serve_ours(args.server_log_level)
        return
    if args.serve == "controller":
        serve_controller(args.server_log_level, args.events)
        return
    if args.serve in ("asyncio", "asyncio-12345"):
        serve_asyncio(SCRIPTS[args.serve][1])
        return

    print(
        f"# FastAGI load on 127.0.0.1, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}; closed loop {args.sessions} sessions, "
        f"open loop {args.rate:g}/s; {args.duration:g} s each"
    )
    print(
        f"{'server':<13} {'mode':<16} {'calls':>7} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'conn max':>8} {'failed':>6} {'srv CPU%':>8} {'srv ms/call':>11}"
    )
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    if args.events:
        print(f"# the controller publishes every call's events to {args.events}")
    for kind in kinds * args.repeat:
        proc, port = spawn(kind, args.server_log_level, args.events)
        try:
            mode = f"closed N={args.sessions}"
            measure(kind, mode, proc, closed_loop(port, args.sessions, args.duration, kind))
            mode = f"open R={args.rate:g}/s"
            measure(kind, mode, proc, open_loop(port, args.rate, args.duration, kind))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()

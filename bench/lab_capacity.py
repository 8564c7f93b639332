"""Highest call rate with zero failed calls: the 12345 flow through the controller,
against Asterisk's native dialplan doing the same flow, in the same run on the real lab.

Both flows answer, tag the call, play the same one-second greeting and queue the caller
to the region's 12345 seats, where a SIPp seat answers; the SIPp caller talks for
``--talk`` seconds and hangs up. For each rate SIPp places ``rate x --seconds`` calls
and the rate counts as held when every call completed on time (SIPp holds calls back
when too many are in progress, which would hide an overload). Needs root and the lab root
(scripts/provision-lab); takes a few minutes.

With ``--cpu RATE`` it measures instead what each flow costs the switch at a rate it
can sustain: the same three flows, and a minimal server sent only two commands, at a
fixed rate, alternating for ``--rounds`` rounds, reading the CPU time Asterisk, the
FastAGI server (none for native) and Redis spent per call. On 2 cores the CPU, not the
FastAGI protocol, is what runs out at a steady rate, so native's CPU per call over a
flow's is the sustained capacity ratio; SIPp (the callers and seats, which a real
switch does not carry) is left out. An 8-second run at the highest rate mostly measures
how a burst above the steady capacity is absorbed.

With ``--share RATE`` it measures instead what the call events cost the whole of call
handling: the same flow through the controller at a fixed rate, one controller (as
`ivr serve` builds it) switched between publishing every event (to Redis, and to the
live indicators) and publishing none for alternate runs, for ``--rounds`` rounds. It
reads the CPU time of Asterisk, the controller and redis-server over each run.
Publishing changes nothing Asterisk does, so its cost is what it adds to the controller
and to Redis; the share is that over the CPU of the whole call (Asterisk, controller
and Redis, events on).

    .venv/bin/python bench/lab_capacity.py [--rates 40,80,120,160] [--seconds 8]
    .venv/bin/python bench/lab_capacity.py --cpu 150 [--seconds 10] [--rounds 3]
    .venv/bin/python bench/lab_capacity.py --share 50 [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import redis
import yaml
from agi_load import cpu_seconds, responder  # this folder's FastAGI bench

from ivr.check import load_hotline
from ivr.lab.conf import Trunk
from ivr.lab.hotline import HotlineLab, lab_config
from ivr.lab.lab import Lab, LabError
from ivr.paths import bundled_root

NATIVE_CALLER = "127.0.0.10"
CONTROLLER_CALLER = "127.0.0.1"
# The same flow, written natively: what the controller makes Asterisk do for 12345.
NATIVE = r"""
[bench-native]
exten => _X.,1,Answer()
 same => n,Set(CDR(userfield)=merge_mode=main\;original_line=12345)
 same => n,Playback(ivr/greeting_12345)
 same => n,Queue(fuzhou-12345,c,,,60)
 same => n,Hangup()
"""


# The yardstick between the two: a minimal FastAGI server with no logic at all, sending
# the five commands the flow needs and nothing else (ANSWER, STREAM FILE, two SET
# VARIABLEs, EXEC Queue), then closing. What it loses against native is what Asterisk
# spends on FastAGI itself, which no controller can save.
MINIMAL_CALLER = "127.0.0.11"
MINIMAL_PORT = 4575
MINIMAL = rf"""
[bench-minimal]
exten => _X.,1,AGI(agi://127.0.0.1:{MINIMAL_PORT}/minimal)
 same => n,Hangup()
"""
MINIMAL_COMMANDS = [
    b"ANSWER\n",
    b'STREAM FILE ivr/greeting_12345 "" 0\n',
    b'SET VARIABLE "__IVR_CALL" "line=12345;merge_mode=main;original_line=12345"\n',
    b'SET VARIABLE "CDR(userfield)" "merge_mode=main;original_line=12345"\n',
    b'EXEC Queue "fuzhou-12345,c,,,60"\n',
]

# What fewer commands would buy (--cpu only): the dialplan answers and tags the call
# itself, and the server sends only the greeting and the queue. The controller does not
# work so: whether to answer (a retired line's notice may play unanswered) and how to tag
# are its routing decisions. This measures what keeping them costs.
TWO_COMMAND_CALLER = "127.0.0.12"
TWO_COMMAND_PORT = 4576
_TAGS = r"merge_mode=main\;original_line=12345"  # a bare ; would start a comment
TWO_COMMAND = rf"""
[bench-two-commands]
exten => _X.,1,Answer()
 same => n,MSet(__IVR_CALL=line=12345\;{_TAGS},CDR(userfield)={_TAGS})
 same => n,AGI(agi://127.0.0.1:{TWO_COMMAND_PORT}/minimal)
 same => n,Hangup()
"""
TWO_COMMANDS = [MINIMAL_COMMANDS[1], MINIMAL_COMMANDS[4]]


def serve_minimal() -> None:
    """Both minimal servers, five commands and two, in one asyncio process."""
    import asyncio

    async def main() -> None:
        servers = [
            await asyncio.start_server(responder(commands), "127.0.0.1", port, backlog=1024)
            for commands, port in ((MINIMAL_COMMANDS, MINIMAL_PORT),
                                   (TWO_COMMANDS, TWO_COMMAND_PORT))
        ]  # fmt: skip
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for server in servers:
            server.close()

    asyncio.run(main())


def one_second_greeting(config: Path) -> None:
    """The bench plays one second of greeting, as the measured native baseline did."""
    sounds = config / "prompts" / "sounds"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16",
                    str(sounds / "greeting_12345.wav"), "synth", "1", "sine", "450", "vol", "0.3"],
                   check=True)  # fmt: skip


def run_rate(caller: str, rate: int, seconds: int, talk_s: float) -> tuple[bool, float]:
    """Place rate x seconds calls at `rate`/s; (every call completed, wall time)."""
    total = rate * seconds
    started = time.monotonic()
    done = subprocess.run(
        ["sipp", "127.0.0.1:5060", "-sn", "uac", "-s", "12345", "-i", caller, "-p", "0",
         "-r", str(rate), "-m", str(total), "-d", str(int(talk_s * 1000)), "-l", "5000",
         "-nostdin", "-timeout", f"{seconds + 30}s", "-timeout_error", "-max_recv_loops",
         "2000", "-aa"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 60,
    )  # fmt: skip
    return done.returncode == 0, time.monotonic() - started


def agi_counters(hl: HotlineLab) -> dict[str, int]:
    """The controller's FastAGI counters (its /healthz)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{hl.http_port}/healthz", timeout=5) as reply:
        agi = json.load(reply)["agi"]
    return {k: int(v) for k, v in agi.items() if isinstance(v, int)}


def handled(hl: HotlineLab) -> int:
    """FastAGI sessions the controller took."""
    return agi_counters(hl)["accepted"]


def settle(lab: Lab, timeout: float = 45.0) -> bool:
    """Wait until Asterisk has no channels (after overload it keeps re-sending BYEs).
    False if Asterisk is gone: Asterisk 22 was seen to crash at 140 calls/s here."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            idle = "0 active channels" in lab.cli("core show channels count")
        except LabError:
            return False
        if idle:
            time.sleep(2)
            return True
        time.sleep(1)
    return True


# -- --share: what the call events cost the whole call -------------------------------


def serve_controller(config: str, events_url: str, agi_port: int, http_port: int) -> None:
    """The controller as `ivr serve` builds it, in this process, publishing to
    `events_url`. Each line "on" or "off" on stdin switches between handing every
    call's events on (to Redis and the live indicators) and handing them to nobody;
    the switch is acknowledged once the publisher has sent what it held."""
    from ivr.events import NoEvents
    from ivr.serve import Controller
    from ivr.settings import load_settings

    root = Path(config)
    controller = Controller(root, load_settings(root), agi_address=("127.0.0.1", agi_port),
                            http_address=("127.0.0.1", http_port),
                            redis_url=events_url)  # fmt: skip
    publishing = controller.calls.events
    controller.start()
    print("READY", flush=True)
    for line in sys.stdin:  # the bench ends us by closing our stdin
        command = line.strip()
        controller.calls.events = publishing if command == "on" else NoEvents()
        controller.publisher.flush()
        print(f"OK {command}", flush=True)
    controller.stop()


def share_of_events(hl: HotlineLab, lab: Lab, rate: int, seconds: int, talk_s: float,
                    rounds: int) -> None:  # fmt: skip
    """One controller for the whole measurement, switched between events on and off
    for alternate runs (on first in odd rounds, off first in even ones): a process of
    its own per run moved the controller's CPU per call by more than the events cost."""
    redis_pid = int(redis.Redis.from_url(EVENTS_URL).info("server")["process_id"])
    asterisk_pid = lab.asterisk_pid()
    assert asterisk_pid is not None
    calls = rate * seconds
    rows: list[tuple[int, str, dict[str, float]]] = []
    print(f"{'round':<6} {'events':<8} {'ms of CPU per call:':<20} {'Asterisk':>9} "
          f"{'controller':>11} {'Redis':>7} {'all':>7}")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-controller", str(hl.config), "--events", EVENTS_URL,
         "--agi-port", str(hl.agi_port), "--http-port", str(hl.http_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        if proc.stdout.readline().strip() != "READY":
            raise SystemExit("the bench's controller did not start")
        pids = {"Asterisk": asterisk_pid, "controller": proc.pid, "Redis": redis_pid}
        for n in range(1, rounds + 1):
            for events in ("on", "off") if n % 2 else ("off", "on"):
                proc.stdin.write(f"{events}\n")
                proc.stdin.flush()
                if proc.stdout.readline().strip() != f"OK {events}":
                    raise SystemExit("the bench's controller did not switch its events")
                before = {k: _cpu(pid, k, lab) for k, pid in pids.items()}
                ok, _ = run_rate(CONTROLLER_CALLER, rate, seconds, talk_s)
                settle(lab)
                used = {
                    k: (_cpu(pid, k, lab) - before[k]) * 1000 / calls for k, pid in pids.items()
                }
                if not ok:
                    raise SystemExit(f"calls failed at {rate}/s: lower --share")
                used["all"] = sum(used.values())
                rows.append((n, events, used))
                print(f"{n:<6} {events:<8} {'':<20} {used['Asterisk']:>9.2f} "
                      f"{used['controller']:>11.2f} {used['Redis']:>7.2f} {used['all']:>7.2f}",
                      flush=True)  # fmt: skip
    finally:
        proc.stdin.close()
        proc.wait(30)
    shares, ctrl_shares, costs = [], [], []
    for n in range(1, rounds + 1):
        on = next(u for r, e, u in rows if r == n and e == "on")
        off = next(u for r, e, u in rows if r == n and e == "off")
        cost = (on["controller"] - off["controller"]) + (on["Redis"] - off["Redis"])
        costs.append(cost)
        shares.append(cost / on["all"])
        ctrl_shares.append((on["controller"] - off["controller"]) / on["controller"])

    def span(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
        v = sorted(x * scale for x in values)
        return f"{v[0]:.{digits}f}–{v[-1]:.{digits}f} (median {v[len(v) // 2]:.{digits}f})"

    def mean(events: str, part: str) -> float:
        return statistics.fmean(u[part] for _, e, u in rows if e == events)

    pooled = (mean("on", "controller") - mean("off", "controller")
              + mean("on", "Redis") - mean("off", "Redis"))  # fmt: skip
    print(f"\n{calls} calls per run at {rate}/s, {rounds} rounds")
    print(f"events' CPU per call (controller + Redis, on minus off): {span(costs, 1000, 0)} µs")
    print(f"share of the whole call's CPU (Asterisk + controller + Redis): {span(shares, 100)} %")
    print(
        f"  from the means over all runs: {pooled * 1000:.0f} µs per call, "
        f"{pooled / mean('on', 'all') * 100:.1f} %"
    )
    print(f"share of the controller's own CPU: {span(ctrl_shares, 100)} %")


# -- --cpu: what each flow costs the switch at a steady rate -----------------------------


def cpu_per_call(lab: Lab, rate: int, seconds: int, talk_s: float, rounds: int,
                 servers: dict[str, int]) -> None:  # fmt: skip
    """Each flow at `rate` for `rounds` rounds (the order reversed every other round):
    the CPU Asterisk, the flow's FastAGI server and Redis spent per call."""
    redis_pid = int(redis.Redis.from_url(EVENTS_URL).info("server")["process_id"])
    asterisk_pid = lab.asterisk_pid()
    assert asterisk_pid is not None
    flows = {"native dialplan": NATIVE_CALLER, "minimal FastAGI": MINIMAL_CALLER,
             "minimal, 2 commands": TWO_COMMAND_CALLER,
             "controller (FastAGI)": CONTROLLER_CALLER}  # fmt: skip
    calls = rate * seconds
    used: dict[str, list[dict[str, float]]] = {name: [] for name in flows}
    print(f"{'round':<6} {'flow':<22} {'ms of CPU per call:':<20} {'Asterisk':>9} "
          f"{'server':>7} {'Redis':>7} {'all':>7}")  # fmt: skip
    for n in range(1, rounds + 1):
        for name in list(flows) if n % 2 else list(flows)[::-1]:
            pids = {"Asterisk": asterisk_pid, "Redis": redis_pid}
            if name in servers:
                pids["server"] = servers[name]
            before = {k: _cpu(pid, k, lab) for k, pid in pids.items()}
            ok, wall = run_rate(flows[name], rate, seconds, talk_s)
            settle(lab)
            row = {k: (_cpu(pid, k, lab) - before[k]) * 1000 / calls for k, pid in pids.items()}
            if not ok or wall > seconds + talk_s + LATE_S:
                raise SystemExit(f"{name}: calls failed or ran late at {rate}/s: lower --cpu")
            row.setdefault("server", 0.0)
            row["all"] = row["Asterisk"] + row["server"] + row["Redis"]
            used[name].append(row)
            print(f"{n:<6} {name:<22} {'':<20} {row['Asterisk']:>9.2f} {row['server']:>7.2f} "
                  f"{row['Redis']:>7.2f} {row['all']:>7.2f}", flush=True)  # fmt: skip
    print(f"\n{calls} calls per run at {rate}/s, {rounds} rounds; means over the rounds")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    native = statistics.fmean(r["all"] for r in used["native dialplan"])
    for name, rows in used.items():
        mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
        pairs = zip(used["native dialplan"], rows, strict=True)
        ratios = sorted(mine["all"] / theirs["all"] for mine, theirs in pairs)
        print(
            f"{name:<22} Asterisk {mean['Asterisk']:.2f} + server {mean['server']:.2f} + "
            f"Redis {mean['Redis']:.2f} = {mean['all']:.2f} ms per call; sustained capacity "
            f"/ native {native / mean['all']:.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
        )


# Seconds a run may take beyond its calls' schedule and talk time (SIPp starting, the
# greeting, ringing) before the rate counts as not kept.
LATE_S = 3.0
EVENTS_URL = "redis://127.0.0.1:6379/15"  # the bench's events, on a database of their own


def _cpu(pid: int, name: str, lab: Lab) -> float:
    seconds = cpu_seconds(pid)
    if seconds is None:
        # Asterisk 22.10's app_queue has been seen to crash under these bursts
        # (a failed assertion in stasis_message_router_add), native dialplan included.
        where = f"; its log: {lab.messages_log}" if name == "Asterisk" else ""
        raise SystemExit(f"{name} (process {pid}) is gone: cannot read its CPU time{where}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="40,80,120,160", help="calls/s to try, ascending")
    parser.add_argument("--seconds", type=int, default=8, help="seconds of calls per rate")
    parser.add_argument("--talk", type=float, default=2.5, help="caller's seconds after answer")
    parser.add_argument(
        "--share", type=int, metavar="RATE", help="measure the events' CPU share at RATE instead"
    )
    parser.add_argument(
        "--cpu", type=int, metavar="RATE", help="measure each flow's CPU per call at RATE instead"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --share or --cpu")
    parser.add_argument("--serve-controller", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--serve-minimal", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", default=EVENTS_URL, help=argparse.SUPPRESS)
    parser.add_argument("--agi-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_minimal:
        serve_minimal()
        return 0
    if args.serve_controller:
        serve_controller(args.serve_controller, args.events, args.agi_port, args.http_port)
        return 0
    rates = [int(r) for r in args.rates.split(",")]
    if os.geteuid() != 0:
        print("needs root (the lab runs Asterisk under chroot)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "config"
        for part in ("config", "dialplans", "prompts", "transfer"):
            shutil.copytree(bundled_root() / part, config / part)
        one_second_greeting(config)
        # As many calls in the controller as Asterisk takes (maxcalls below): the
        # configured bound would otherwise turn calls away before either side is full.
        settings = config / "config" / "controller.yaml"
        values = yaml.safe_load(settings.read_text())
        values["agi"]["max_sessions"] = 4000
        settings.write_text(yaml.safe_dump(values, allow_unicode=True))
        hotline = load_hotline(config)
        # events go to Redis as in production, on a database of their own
        hl = HotlineLab.create(config, name="bench", redis_url=EVENTS_URL)
        base = lab_config(hotline, verbose=0, trace_seats=False)
        seats = tuple(replace(s, hold=None) if s.name == "seats" else s for s in base.seats)
        # RTP ports for 5,000 channels: the lab's usual 1,000 would cap both flows alike
        # at a few hundred calls in progress, and measure the port range, not the switch.
        cfg = replace(base, seats=seats, maxcalls=4000, rtp_ports=(20000, 29999),
                      trunks=(*base.trunks,
                              Trunk("bench-native", NATIVE_CALLER, context="bench-native"),
                              Trunk("bench-minimal", MINIMAL_CALLER, context="bench-minimal"),
                              Trunk("bench-two-commands", TWO_COMMAND_CALLER,
                                    context="bench-two-commands")),
                      extensions=(*base.extensions, NATIVE, MINIMAL, TWO_COMMAND))  # fmt: skip
        hl.install_sounds()
        lab = Lab(hl.root, hl.state_dir, cfg)
        lab.up()
        if args.share:
            try:
                share_of_events(hl, lab, args.share, args.seconds, args.talk, args.rounds)
            finally:
                lab.down()
            return 0
        controller_pid = hl.start_controller()
        minimal = subprocess.Popen(
            [sys.executable, __file__, "--serve-minimal"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert minimal.stdout is not None and minimal.stdin is not None
        if minimal.stdout.readline().strip() != "READY":
            raise SystemExit("the minimal FastAGI server did not start")
        if args.cpu:
            try:
                cpu_per_call(lab, args.cpu, args.seconds, args.talk, args.rounds,
                             {"minimal FastAGI": minimal.pid,
                              "minimal, 2 commands": minimal.pid,
                              "controller (FastAGI)": controller_pid})  # fmt: skip
            finally:
                minimal.stdin.close()
                minimal.wait(10)
                hl.stop_controller()
                lab.down()
            return 0
        results: dict[str, dict[int, bool]] = {
            "native dialplan": {}, "minimal FastAGI": {}, "controller (FastAGI)": {}
        }  # fmt: skip
        crashed = False
        try:
            for rate in rates:
                if crashed:
                    break
                for name, caller in (
                    ("native dialplan", NATIVE_CALLER),
                    ("minimal FastAGI", MINIMAL_CALLER),
                    ("controller (FastAGI)", CONTROLLER_CALLER),
                ):
                    before, counted = handled(hl), agi_counters(hl)
                    ok, wall = run_rate(caller, rate, args.seconds, args.talk)
                    if not settle(lab):
                        print(
                            f"{name:<22} {rate:>4} calls/s: Asterisk itself stopped "
                            "(see the lab's messages.log); no higher rate is tried"
                        )
                        results[name][rate] = False
                        crashed = True
                        break
                    through = handled(hl) - before
                    if name.startswith("controller") and through != rate * args.seconds:
                        # the glue would still answer them: only calls the controller ran count
                        moved = {k: v - counted.get(k, 0) for k, v in agi_counters(hl).items()}
                        print(
                            f"  only {through} of {rate * args.seconds} calls went through "
                            f"the controller; its counters moved by {moved}"
                        )
                        ok = False
                    late = ok and wall > args.seconds + args.talk + LATE_S
                    if late:
                        # SIPp holds new calls back while too many are in progress: every
                        # call completed, but not at the rate asked for.
                        ok = False
                    results[name][rate] = ok
                    verdict = "all completed" if ok else "FAILED calls"
                    verdict = "late: rate not kept" if late else verdict
                    print(f"{name:<22} {rate:>4} calls/s x {args.seconds} s: {verdict} "
                          f"({wall:.0f} s)", flush=True)  # fmt: skip
        finally:
            minimal.stdin.close()
            minimal.wait(10)
            hl.stop_controller()
            lab.down()

    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"{'flow':<22} {'highest rate with 0 failed calls':>34}")
    best = {}
    for name, by_rate in results.items():
        held = [r for r, ok in sorted(by_rate.items()) if ok]
        # the highest rate such that it and every lower rate held
        ceiling = 0
        for r in sorted(by_rate):
            if not by_rate[r]:
                break
            ceiling = r
        best[name] = ceiling
        print(f"{name:<22} {ceiling:>30} /s   (held: {held})")
    native = best["native dialplan"]
    if native:
        print(f"minimal FastAGI / native: {best['minimal FastAGI'] / native:.2f}")
        print(f"controller / native: {best['controller (FastAGI)'] / native:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Highest call rate with zero failed calls: the 12345 flow through the controller,
against Asterisk's native dialplan doing the same flow, in the same run on the real lab.

Both flows answer, tag the call, play the same one-second greeting and queue the caller
to the region's 12345 seats, where a SIPp seat answers; the SIPp caller talks for
``--talk`` seconds and hangs up. For each rate SIPp places ``rate x --seconds`` calls
and the rate counts as held when every call completed. Needs root and the lab root
(scripts/provision-lab); takes a few minutes.

    .venv/bin/python bench/lab_capacity.py [--rates 40,80,120,160] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="40,80,120,160", help="calls/s to try, ascending")
    parser.add_argument("--seconds", type=int, default=8, help="seconds of calls per rate")
    parser.add_argument("--talk", type=float, default=2.5, help="caller's seconds after answer")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if os.geteuid() != 0:
        print("needs root (the lab runs Asterisk under chroot)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "config"
        for part in ("config", "dialplans", "prompts", "transfer"):
            shutil.copytree(bundled_root() / part, config / part)
        one_second_greeting(config)
        hotline = load_hotline(config)
        # events go to Redis as in production, on a database of their own
        hl = HotlineLab.create(config, name="bench", redis_url="redis://127.0.0.1:6379/15")
        base = lab_config(hotline, verbose=0, trace_seats=False)
        seats = tuple(replace(s, hold=None) if s.name == "seats" else s for s in base.seats)
        cfg = replace(base, seats=seats, maxcalls=4000,
                      trunks=(*base.trunks, Trunk("bench-native", NATIVE_CALLER,
                                                  context="bench-native")),
                      extensions=(*base.extensions, NATIVE))  # fmt: skip
        hl.install_sounds()
        lab = Lab(hl.root, hl.state_dir, cfg)
        lab.up()
        hl.start_controller()
        results: dict[str, dict[int, bool]] = {"native dialplan": {}, "controller (FastAGI)": {}}
        crashed = False
        try:
            for rate in rates:
                if crashed:
                    break
                for name, caller in (
                    ("native dialplan", NATIVE_CALLER),
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
                    results[name][rate] = ok
                    print(f"{name:<22} {rate:>4} calls/s x {args.seconds} s: "
                          f"{'all completed' if ok else 'FAILED calls'} ({wall:.0f} s)",
                          flush=True)  # fmt: skip
        finally:
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
        print(f"controller / native: {best['controller (FastAGI)'] / native:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

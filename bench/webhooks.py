"""Twilio webhook benchmark: requests per second and latency under gunicorn.

Two apps, each under gunicorn (2 sync workers by default) on a free loopback port,
loaded in turn by the same client for the same time:

- webhooks: `ivr.twilio.wsgi:create_webhook_app()`, the production app: signature
  checked on every request, call state in a private Redis, events published to it.
  Each simulated call is five webhooks, as Twilio sends them for a 12345 call:
  incoming call (greeting Gather), no key (Enqueue), bridged (survey Gather), key 1
  (thanks, Hangup), status callback.
- static: a Flask endpoint returning a fixed TwiML document (this module's
  `static_app`), the ceiling for a Flask app under the same gunicorn.
- signed: the same fixed document behind the least any webhook must do, reading the
  form and checking its X-Twilio-Signature with the twilio library (`signed_app`): the
  share of the 0.8 allowance that the signature alone takes.

The client is several processes of threads on http.client, one connection per
request (gunicorn's sync workers close it anyway); it signs and parses every request
and response for both apps alike, so its own cost is the same on both sides. On a
small machine the client shares the CPU with the server: the ratio is the figure to
read, the absolute numbers are the machine's.

The apps are loaded in turn for `--rounds` rounds (the order alternating), so that a
shared machine's changing load falls on all of them; each figure is given as a range
over the rounds. Besides requests per second and latency, each round reads the CPU
time the processes used (from /proc, on Linux): the gunicorn workers (with their
event publisher thread), the Redis server and the client, per request.

`--other-tree DIR` loads a third app in the same run: the webhooks imported from
another copy of the code (e.g. one taken before a change), with the same
configuration, Redis and client.

Usage: python bench/webhooks.py [--seconds 8] [--rounds 3] [--workers 2] [--clients 3]
       [--threads 4] [--other-tree DIR] [--breakdown] [--json]
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

TOKEN = "bench-auth-token-not-a-secret"
NUMBER = "+8659112345"
STATIC_TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/static?s=1" '
    'input="dtmf" method="POST" numDigits="1" timeout="1"><Say language="zh-CN">'
    "您好，12345热线，正在转接人工。</Say></Gather>"
    '<Redirect method="POST">/static?s=1</Redirect></Response>'
)

static_app = Flask("static-twiml")


@static_app.post("/static")
def _static() -> Response:
    return Response(STATIC_TWIML, mimetype="text/xml")


signed_app = Flask("signed-static-twiml")
_validator = RequestValidator(TOKEN)


@signed_app.post("/static")
def _signed() -> Response:
    url = os.environ["IVR_BENCH_SIGNED_BASE"] + request.full_path.rstrip("?")
    expected = _validator.compute_signature(url, request.form)
    if not hmac.compare_digest(expected, request.headers.get("X-Twilio-Signature", "")):
        return Response("signature refused\n", status=403, mimetype="text/plain")
    return Response(STATIC_TWIML, mimetype="text/xml")


@signed_app.get("/healthz")
@static_app.get("/healthz")
def _healthz() -> str:
    return "ok\n"


# -- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("bench: redis-server is needed (call state is shared by the workers)")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def config_folder(folder: Path, redis_url: str, port: int, source: Path | None = None) -> Path:
    """A copy of the bundled configuration (or `source`'s: another tree runs its own)
    whose controller.yaml turns the webhooks on."""
    import yaml

    from ivr.paths import bundled_root

    root = folder / "config-root"
    for part in ("config", "dialplans", "prompts", "transfer"):
        copied = (source or bundled_root()) / part
        shutil.copytree(copied, root / part, ignore=shutil.ignore_patterns("asterisk"))
    path = root / "config" / "controller.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["platform"].update(redis_url=redis_url, spool_dir=str(folder / "spool"))
    doc["twilio"] = {
        "public_base_url": f"http://127.0.0.1:{port}",
        "numbers": {NUMBER: {"line": "12345", "region": "fuzhou"}},
        "state": {"store": "redis", "redis_url": redis_url},
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return root


def start_gunicorn(app: str, port: int, workers: int, env: dict[str, str], chdir: Path) -> Any:
    # Started in `chdir`: `python -m` puts its working folder first on sys.path, and from
    # a checkout's root that would be the checkout's `ivr`, whatever PYTHONPATH says.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind",
         f"127.0.0.1:{port}", "--chdir", str(chdir), "--log-level", "warning",
         "--backlog", "2048", app],
        env=env,
        cwd=chdir,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, proc)
    wait_for_http(port, proc)
    return proc


def wait_for_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """gunicorn's master listens before its workers have loaded the app: ask one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}: see its log above")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    raise RuntimeError(f"gunicorn on 127.0.0.1:{port} never answered")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# -- the client ---------------------------------------------------------------------------


def sign(url: str, form: dict[str, str]) -> str:
    return str(_validator.compute_signature(url, form))


def post(port: int, url: str, form: dict[str, str], latencies: list[float]) -> ET.Element:
    """One signed POST on a fresh connection; a raw socket keeps the client's own CPU
    low (it shares the machine with the server)."""
    body = urlencode(form).encode()
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {sign(url, form)}\r\n"
        "Connection: close\r\n\r\n"
    )
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    latencies.append(time.perf_counter() - start)
    status_line, _, rest = b"".join(chunks).partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    if status not in (200, 204):
        raise RuntimeError(f"{path}: HTTP {status}")
    data = rest.partition(b"\r\n\r\n")[2]
    return ET.fromstring(data) if data else ET.Element("Response")


def one_call(port: int, sid: str, latencies: list[float]) -> None:
    """A 12345 call through the webhooks, as Twilio sends it."""
    base = f"http://127.0.0.1:{port}"
    form = {"AccountSid": "AC" + "0" * 32, "CallSid": sid, "From": "+8613912340000",
            "To": NUMBER, "CallStatus": "in-progress", "Direction": "inbound"}  # fmt: skip
    root = post(port, f"{base}/twilio/voice", form, latencies)
    root = post(port, root.find("Redirect").text or "", form, latencies)  # type: ignore[union-attr]
    action = root.find("Enqueue").get("action", "")  # type: ignore[union-attr]
    root = post(port, action, {**form, "QueueResult": "bridged", "QueueTime": "7"}, latencies)
    action = root.find("Gather").get("action", "")  # type: ignore[union-attr]
    root = post(port, action, {**form, "Digits": "1"}, latencies)
    if root.find("Hangup") is None:
        raise RuntimeError("the call did not end")
    post(port, f"{base}/twilio/status", {**form, "CallStatus": "completed"}, latencies)


def static_calls(port: int, sid: str, latencies: list[float]) -> None:
    """Five requests of the same shape to the static endpoint."""
    form = {"AccountSid": "AC" + "0" * 32, "CallSid": sid, "From": "+8613912340000",
            "To": NUMBER, "CallStatus": "in-progress", "Direction": "inbound"}  # fmt: skip
    for _ in range(5):
        root = post(port, f"http://127.0.0.1:{port}/static", form, latencies)
        if root.find("Gather") is None:
            raise RuntimeError("unexpected TwiML")


def client_process(args: tuple[str, int, int, float, int]) -> tuple[list[float], int, float]:
    """Latencies, errors, and this client process's CPU seconds meanwhile."""
    kind, port, threads, seconds, _ = args
    usage = resource.getrusage(resource.RUSAGE_SELF)
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads

    def loop(t: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            sid = "CA" + uuid.uuid4().hex
            try:
                (one_call if kind in ("webhooks", "other") else static_calls)(
                    port, sid, latencies[t]
                )
            except Exception:
                errors[t] += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return [x for part in latencies for x in part], sum(errors), cpu


@dataclass
class Figures:
    name: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    # CPU microseconds per request, None where /proc could not be read
    server_cpu_us: float | None = None  # the gunicorn master and its workers
    redis_cpu_us: float | None = None
    client_cpu_us: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds the processes used so far (all their threads), from
    /proc; None where it cannot be read."""
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """A gunicorn master and its workers (children, read from /proc)."""
    pids = [pid]
    try:
        entries = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return pids
    for entry in entries:
        try:  # a process may end while the folder is read
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rpartition(")")[2].split()[1]) == pid:
                    pids.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return pids


@dataclass
class Target:
    """One app under load: its gunicorn, and the Redis it uses (if any)."""

    name: str
    port: int
    gunicorn: subprocess.Popen[bytes]
    redis_pid: int | None = None


def load(target: Target, clients: int, threads: int, seconds: float) -> Figures:
    kind, port = target.name, target.port
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        pool.map(client_process, [(kind, port, 1, 0.5, i) for i in range(clients)])  # warm up
        servers = family(target.gunicorn.pid)
        redis_pids = [target.redis_pid] if target.redis_pid else []
        server_cpu, redis_cpu = cpu_seconds(servers), cpu_seconds(redis_pids)
        start = time.monotonic()
        parts = pool.map(
            client_process, [(kind, port, threads, seconds, i) for i in range(clients)]
        )
        elapsed = time.monotonic() - start
        server_after, redis_after = cpu_seconds(servers), cpu_seconds(redis_pids)
    latencies = sorted(x for lat, _, _ in parts for x in lat)
    errors = sum(e for _, e, _ in parts)
    if not latencies:
        raise RuntimeError(f"{kind}: no request completed")
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000

    def per_request(before: float | None, after: float | None) -> float | None:
        return None if before is None or after is None else (after - before) / n * 1e6

    return Figures(
        kind, n, elapsed, errors, pct(0.50), pct(0.99),
        server_cpu_us=per_request(server_cpu, server_after),
        redis_cpu_us=per_request(redis_cpu, redis_after) if redis_pids else None,
        client_cpu_us=sum(cpu for _, _, cpu in parts) / n * 1e6,
    )  # fmt: skip


def spread(values: list[float | None], fmt: str = "{:.0f}") -> str:
    """min-max (median) of one figure over the rounds."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return "-"
    if len(known) == 1 or known[0] == known[-1]:
        return fmt.format(known[0])
    lo, mid, hi = (fmt.format(v) for v in (known[0], statistics.median(known), known[-1]))
    return f"{lo}-{hi} ({mid})"


# -- where a webhook's time goes: in-process, no HTTP server, no client processes ------


def breakdown(redis_url: str, spool: Path, calls: int = 300) -> dict[str, float]:
    """Microseconds per request through Flask's test client, adding one cost at a time."""
    from datetime import datetime

    from ivr.check import load_hotline
    from ivr.core.clock import SHANGHAI
    from ivr.paths import bundled_root
    from ivr.platform.publisher import Publisher
    from ivr.twilio import (
        MemoryStateStore,
        NoEvents,
        RedisStateStore,
        SequencedSink,
        load_twilio_settings,
        twilio_blueprint,
    )

    hotline = load_hotline(bundled_root())
    public = "http://127.0.0.1:8080"
    settings = load_twilio_settings(
        {"public_base_url": public, "numbers": {NUMBER: {"line": "12345", "region": "fuzhou"}}},
        env={"TWILIO_AUTH_TOKEN": TOKEN},
    )
    publisher = Publisher(redis_url, spool / "breakdown")
    variants: dict[str, Any] = {
        "webhooks, memory state, no events": (MemoryStateStore(), NoEvents()),
        "webhooks, Redis state, no events": (RedisStateStore.from_url(redis_url), NoEvents()),
        "webhooks, Redis state, events (production)": (
            RedisStateStore.from_url(redis_url),
            SequencedSink(publisher),
        ),
    }
    figures = {"static TwiML": _per_request(static_app.test_client(), public, calls, static=True)}
    for name, (store, events) in variants.items():
        app = Flask("breakdown")
        app.register_blueprint(
            twilio_blueprint(
                lambda: hotline, settings, events, lambda: datetime.now(SHANGHAI), store=store
            )
        )
        figures[name] = _per_request(app.test_client(), public, calls)
    publisher.close(5.0)
    return figures


def _per_request(client: Any, public: str, calls: int, static: bool = False) -> float:
    def send(url: str, form: dict[str, str]) -> ET.Element:
        parts = urlsplit(url)
        response = client.post(
            parts.path + (f"?{parts.query}" if parts.query else ""),
            data=form,
            headers={"X-Twilio-Signature": sign(url, form)},
            base_url=public,
        )
        return ET.fromstring(response.data) if response.data else ET.Element("Response")

    def call() -> None:
        form = {"CallSid": "CA" + uuid.uuid4().hex, "From": "+8613912340000", "To": NUMBER,
                "CallStatus": "in-progress"}  # fmt: skip
        if static:
            for _ in range(5):
                send(f"{public}/static", form)
            return
        root = send(f"{public}/twilio/voice", form)
        root = send(root.find("Redirect").text or "", form)  # type: ignore[union-attr]
        action = root.find("Enqueue").get("action", "")  # type: ignore[union-attr]
        root = send(action, {**form, "QueueResult": "bridged"})
        send(root.find("Gather").get("action", ""), {**form, "Digits": "1"})  # type: ignore[union-attr]
        send(f"{public}/twilio/status", {**form, "CallStatus": "completed"})

    for _ in range(30):
        call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / (calls * 5) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per app and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are ranges")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app")
    parser.add_argument("--clients", type=int, default=3, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per client process")
    parser.add_argument(
        "--other-tree", type=Path, help="also load the webhooks imported from this copy of the code"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time each cost in-process (~10 s)"
    )
    args = parser.parse_args(argv)
    costs: dict[str, float] = {}

    here = Path(__file__).resolve().parent
    procs: list[subprocess.Popen[bytes] | None] = []
    rounds: list[dict[str, Figures]] = []
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as scratch:
        folder = Path(scratch)
        try:
            redis_proc, redis_url = start_redis(folder)
            procs.append(redis_proc)
            hook_port, static_port, signed_port = free_port(), free_port(), free_port()
            env = {
                **os.environ,
                "IVR_CONFIG": str(config_folder(folder, redis_url, hook_port)),
                "TWILIO_AUTH_TOKEN": TOKEN,
                "IVR_REDIS_URL": redis_url,
                "PYTHONPATH": os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")]),
            }
            app = "ivr.twilio.wsgi:create_webhook_app()"
            hooks = start_gunicorn(app, hook_port, args.workers, env, here)
            procs.append(hooks)
            targets = [
                Target("static", static_port, start_gunicorn(
                    "webhooks:static_app", static_port, args.workers, env, here)),
                Target("signed", signed_port, start_gunicorn(
                    "webhooks:signed_app", signed_port, args.workers,
                    {**env, "IVR_BENCH_SIGNED_BASE": f"http://127.0.0.1:{signed_port}"}, here)),
                Target("webhooks", hook_port, hooks, redis_proc.pid),
            ]  # fmt: skip
            procs.extend(t.gunicorn for t in targets[:2])
            if args.other_tree:
                # The signed URLs name the public base URL: this app needs its own config.
                other_port = free_port()
                other_env = {
                    **env,
                    "IVR_CONFIG": str(
                        config_folder(
                            folder / "other", redis_url, other_port, args.other_tree.resolve()
                        )
                    ),
                    "PYTHONPATH": os.pathsep.join(
                        [str(args.other_tree.resolve()), os.environ.get("PYTHONPATH", "")]
                    ),
                }
                other = start_gunicorn(app, other_port, args.workers, other_env, here)
                procs.append(other)
                targets.append(Target("other", other_port, other, redis_proc.pid))
            for n in range(args.rounds):
                order = targets if n % 2 == 0 else targets[::-1]
                done = {t.name: load(t, args.clients, args.threads, args.seconds) for t in order}
                rounds.append({t.name: done[t.name] for t in targets})
            for proc in procs[1:]:
                stop(proc)  # the breakdown runs alone on the machine
            if args.breakdown:
                costs = breakdown(redis_url, folder / "spool")
        finally:
            for proc in reversed(procs):
                stop(proc)
    names = list(rounds[0])
    ratios = {
        name: [r[name].rps / r["static"].rps for r in rounds] for name in names if name != "static"
    }
    errors = sum(f.errors for r in rounds for f in r.values())
    if args.json:
        print(json.dumps({
            "rounds": [{name: {**f.__dict__, "rps": round(f.rps, 1)} for name, f in r.items()}
                       for r in rounds],
            "ratio": {name: [round(x, 3) for x in xs] for name, xs in ratios.items()},
            "workers": args.workers, "breakdown_us": costs,
        }))  # fmt: skip
        return 0 if errors == 0 else 1
    print(
        f"gunicorn, {args.workers} sync workers; client {args.clients}x{args.threads}; "
        f"{args.rounds} rounds of {args.seconds:g} s; min-max (median) over the rounds"
    )
    print(f"{'app':<9} {'req/s':>20} {'p50 ms':>18} {'p99 ms':>18} {'errors':>6}")
    for name in names:
        figs = [r[name] for r in rounds]
        print(
            f"{name:<9} {spread([f.rps for f in figs]):>20} "
            f"{spread([f.p50_ms for f in figs], '{:.1f}'):>18} "
            f"{spread([f.p99_ms for f in figs], '{:.1f}'):>18} {sum(f.errors for f in figs):>6}"
        )
    print("CPU per request, us: server (gunicorn workers) / Redis / client")
    for name in names:
        figs = [r[name] for r in rounds]
        print(
            f"  {name:<9} {spread([f.server_cpu_us for f in figs]):>16} / "
            f"{spread([f.redis_cpu_us for f in figs]):>14} / "
            f"{spread([f.client_cpu_us for f in figs]):>16}"
        )
    for name, xs in ratios.items():
        print(f"{name} / static throughput: {spread(xs, '{:.2f}')} (target >= 0.80)")
    if costs:
        print("in-process, Flask test client, per request:")
        for name, micros in costs.items():
            print(f"  {name:<44} {micros:>7.0f} us")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

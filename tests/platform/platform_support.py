"""Test support: a private redis-server tests may stop, pause and break, and
plausible call event sequences.

Each server listens on loopback on a free port, keeps its data in an append-only
file fsync'd on every write (so a killed server comes back with what it
acknowledged) and its users in an ACL file (so they survive a restart too).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from ivr.events import CallEvent, CallInfo, EventRecorder
from ivr.platform.acl import (
    PLATFORM_USER,
    WRITER_USER,
    platform_rules,
    setuser_args,
    writer_rules,
)

REDIS_SERVER = shutil.which("redis-server")
ADMIN_PASSWORD = "admin-test-secret"
WRITER_PASSWORD = "writer-test-secret"
PLATFORM_PASSWORD = "platform-test-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "users.acl").write_text(f"user default on >{ADMIN_PASSWORD} ~* &* +@all\n")
        (workdir / "redis.conf").write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"dir {workdir}",
                    'save ""',
                    "appendonly yes",
                    "appendfsync always",
                    f"aclfile {workdir / 'users.acl'}",
                    f"logfile {workdir / 'redis.log'}",
                    "daemonize no",
                ]
            )
            + "\n"
        )

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(self.workdir / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.admin().ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """An abrupt outage: SIGKILL, no chance to say goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        """A hung server: connections open, nothing answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=ADMIN_PASSWORD,
            decode_responses=True,
            socket_timeout=2,
        )

    def client(self, user: str, password: str) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=user,
            password=password,
            decode_responses=True,
            socket_timeout=2,
        )

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    def create_users(self) -> None:
        admin = self.admin()
        admin.execute_command("ACL", "SETUSER", *setuser_args(WRITER_USER, WRITER_PASSWORD,
                                                               writer_rules()))  # fmt: skip
        admin.execute_command(
            "ACL", "SETUSER", *setuser_args(PLATFORM_USER, PLATFORM_PASSWORD, platform_rules())
        )
        admin.execute_command("ACL", "SAVE")


START = datetime(2024, 6, 3, 1, 30, tzinfo=UTC)  # 09:30 in Fuzhou, a Monday morning
REGIONS = ("fuzhou", "xiamen", "quanzhou")


def call_info(n: int, *, caller: str | None = None) -> CallInfo:
    return CallInfo(
        call_id=f"1717378200.{n}",
        region=REGIONS[n % len(REGIONS)],
        line=("12345", "12358", "12315")[n % 3],
        mode=("main", "whole_merge", "dual_number")[n % 3],
        caller=caller if caller is not None else f"1391234{n:04d}",
    )


def simulate_call(
    call: CallInfo,
    sink: Callable[[CallEvent], object] | None = None,
    *,
    outcome: str = "answered",
    start: datetime = START,
    between: Callable[[], None] | None = None,
) -> list[CallEvent]:
    """A plausible event sequence for one call; `between` runs after every event."""
    rec = EventRecorder(call, sink)
    t = start

    def step(event_type: str, seconds: float, /, **fields: Any) -> None:
        nonlocal t
        t += timedelta(seconds=seconds)
        rec.record(event_type, t, **fields)
        if between is not None:
            between()

    step("call_offered", 0, known=True, region_source="trunk", trunk=f"{call.region}-trunk-1")
    step("prompt_played", 2, prompt="welcome", transition=call.mode == "whole_merge")
    step("keys_pressed", 3, keys="1", step="menu")
    step("queued", 0.2, target_kind="seats", target=f"{call.region}-12345", via="queue")
    if outcome == "answered":
        step("answered", 8, target_kind="seats", target=f"{call.region}-12345", wait_s=8.0,
             answered_by="seat-0042")  # fmt: skip
        step("survey_result", 150, grade=4, key="4")
        step("call_ended", 10, duration_s=173.2, answered=True, target_kind="seats",
             target=f"{call.region}-12345", fallbacks=0, prompts=2)  # fmt: skip
    elif outcome == "abandoned":
        step("abandoned", 40, wait_s=40.0, target_kind="seats", target=f"{call.region}-12345")
        step("missed_call_callback_created", 0, reason="abandoned", wait_s=40.0,
             callback_list=f"{call.region}-callbacks")  # fmt: skip
        step("call_ended", 0, duration_s=45.2, answered=False, target_kind="callback",
             target=f"{call.region}-callbacks", fallbacks=0, prompts=1)  # fmt: skip
    elif outcome == "callback":
        step("callback_requested", 30, wait_s=30.0, reason="requested",
             callback_list=f"{call.region}-callbacks")  # fmt: skip
        step("call_ended", 2, duration_s=37.4, answered=False, target_kind="callback",
             target=f"{call.region}-callbacks", fallbacks=0, prompts=1)  # fmt: skip
    elif outcome == "transfer_failed":
        step("transfer_failed", 20, kind="sub_centre", target=f"{call.region}-12366",
             outcome="noanswer")  # fmt: skip
        step("answered", 6, target_kind="seats", target=f"{call.region}-12345", wait_s=6.0)
        step("call_ended", 90, duration_s=121.4, answered=True, target_kind="seats",
             target=f"{call.region}-12345", fallbacks=1, prompts=1)  # fmt: skip
    else:
        raise ValueError(outcome)
    return list(rec.events)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()

"""A live reload (SIGHUP): a good folder replaces the configuration whole, a broken one
is refused with file, line and reason, and the running configuration stays."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from config_edits import edit, line_of

from ivr import serve
from ivr.check import load_hotline
from ivr.serve import LiveHotline
from ivr.settings import load_settings

TIMEOUT_S = 20.0


def test_a_good_folder_replaces_the_configuration_whole(config_copy: Path) -> None:
    live = LiveHotline(config_copy, load_hotline(config_copy))
    before = live()
    edit(config_copy / "config" / "hotline.yaml", "answer_timeout: 20", "answer_timeout: 25")
    assert live.reload() is True
    assert live() is not before
    assert live().directory.defaults.answer_timeout == 25
    assert before.directory.defaults.answer_timeout == 20  # a call in progress keeps its own
    assert (live.reloads, live.refused) == (1, 0)


def test_a_broken_dialplan_is_refused_and_the_running_one_stays(
    config_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveHotline(config_copy, load_hotline(config_copy))
    before = live()
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, "    timeout: 45\n", "    timout: 45\n")
    with caplog.at_level(logging.ERROR, logger="ivr.serve"):
        assert live.reload() is False
    assert live() is before
    assert (live.reloads, live.refused) == (0, 1)
    (record,) = caplog.records
    assert f"main.yaml:{line_of(main, 'timout')}:" in record.getMessage()
    assert "the running one stays" in record.getMessage()


def test_a_nul_byte_is_refused_with_its_file_and_line(
    config_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveHotline(config_copy, load_hotline(config_copy))
    before = live()
    main = config_copy / "dialplans" / "main.yaml"
    lines = main.read_bytes().count(b"\n")
    main.write_bytes(main.read_bytes() + b"# \x00\n")
    with caplog.at_level(logging.ERROR, logger="ivr.serve"):
        assert live.reload() is False
    assert live() is before
    (record,) = caplog.records
    assert f"main.yaml:{lines + 1}: error: YAML: character" in record.getMessage()


def test_a_reload_says_controller_settings_wait_for_a_restart(
    config_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Twilio's numbers, the listeners and the platform are set up once, at start.
    live = LiveHotline(config_copy, load_hotline(config_copy), settings=load_settings(config_copy))
    controller = config_copy / "config" / "controller.yaml"
    with caplog.at_level(logging.INFO, logger="ivr.serve"):
        assert live.reload() is True
    assert not [r for r in caplog.records if "controller.yaml" in r.getMessage()]
    edit(controller, '{line: "12345", region: xiamen}', '{line: "12345", region: putian}')
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ivr.serve"):
        assert live.reload() is True
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "controller.yaml changed" in warning.getMessage()
    assert "next restart" in warning.getMessage()


def test_an_unexpected_failure_while_reloading_keeps_the_running_one(
    config_copy: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our own bug in loading must not take the reload thread down unlogged, nor leave
    # the controller without a configuration.
    live = LiveHotline(config_copy, load_hotline(config_copy))
    before = live()

    def broken(root: Path) -> None:
        raise RuntimeError("a bug while loading")

    monkeypatch.setattr(serve, "load_hotline", broken)
    with caplog.at_level(logging.ERROR, logger="ivr.serve"):
        assert live.reload() is False
    assert live() is before
    assert (live.reloads, live.refused) == (0, 1)
    (record,) = caplog.records
    assert record.exc_info is not None and "a bug while loading" in str(record.exc_info[1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthz(port: int) -> dict:
    # 503 while Redis is unreachable; the body says the same either way.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())  # type: ignore[no-any-return]


def wait_for(port: int, key: str, value: int) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            health = healthz(port)
            if health[key] == value:
                return health
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} never reached {value}")
        time.sleep(0.1)


@pytest.fixture
def running(config_copy: Path, tmp_path: Path) -> Iterator[tuple[int, Path, int]]:
    """`ivr serve` on the configuration copy, its stderr in a file. No call is made,
    so no event is written: nothing listens at its Redis address."""
    http = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ivr.cli", "serve", "--config", str(config_copy),
             "--agi", f"127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{http}",
             "--redis", "redis://127.0.0.1:1/0"],
            stdout=subprocess.DEVNULL, stderr=stderr,
            env={**os.environ, "TWILIO_AUTH_TOKEN": "", "IVR_SEAT_API_TOKEN": ""},
        )  # fmt: skip
        try:
            wait_for(http, "reloads", 0)
            yield http, log_path, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(TIMEOUT_S) == 0


def test_sighup_refuses_a_broken_folder_then_takes_the_fixed_one(
    running: tuple[int, Path, int], config_copy: Path
) -> None:
    port, log_path, pid = running
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, "    timeout: 45\n", "    timout: 45\n")
    os.kill(pid, signal.SIGHUP)
    health = wait_for(port, "refused_reloads", 1)
    assert health["reloads"] == 0
    assert f"main.yaml:{line_of(main, 'timout')}:" in log_path.read_text()
    edit(main, "    timout: 45\n", "    timeout: 45\n")
    os.kill(pid, signal.SIGHUP)
    health = wait_for(port, "reloads", 1)
    assert health["refused_reloads"] == 1


def signal_a_worker_thread(pid: int, sig: int) -> None:
    """Send ``sig`` to one of the process's threads other than its main thread, as the
    kernel may do with a signal sent to the process (tgkill(2), glibc 2.30 and later)."""
    workers = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert workers, "serve runs its listeners on threads of their own"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, workers[0], sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


def test_a_signal_that_lands_on_another_thread_still_takes_effect(
    running: tuple[int, Path, int], config_copy: Path
) -> None:
    port, _, pid = running
    edit(config_copy / "config" / "hotline.yaml", "answer_timeout: 20", "answer_timeout: 25")
    signal_a_worker_thread(pid, signal.SIGHUP)
    assert wait_for(port, "reloads", 1)["refused_reloads"] == 0

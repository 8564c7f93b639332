"""Log stamps are Shanghai time with its offset, whatever zone the host keeps."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

from ivr.logs import FORMAT, LocalTimeFormatter


def test_a_utc_instant_is_stamped_in_shanghai_time() -> None:
    record = logging.LogRecord("ivr.test", logging.INFO, __file__, 1, "call %s", ("x",), None)
    record.created = datetime(2026, 11, 26, 16, 30, 5, 250_000, tzinfo=UTC).timestamp()
    line = LocalTimeFormatter(FORMAT).format(record)
    # 16:30 UTC on the 26th is half past midnight on the 27th in Shanghai
    assert line == "2026-11-27T00:30:05.250+08:00 INFO ivr.test: call x"


def test_serving_processes_log_shanghai_time_on_a_utc_host() -> None:
    code = (
        "import logging; from ivr import logs; logs.configure();"
        " logging.getLogger('ivr.serve').warning('ready')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00 WARNING ivr\.serve: ready\n", done.stderr
    ), done.stderr


def test_logging_set_up_by_the_host_process_is_left_alone() -> None:
    code = (
        "import logging, sys; logging.basicConfig(stream=sys.stderr, format='host %(message)s');"
        " from ivr import logs; logs.configure();"
        " logging.getLogger('ivr').warning('kept')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stderr == "host kept\n"


def test_a_hosts_own_handlers_still_mask_tracebacks() -> None:
    # gunicorn's --log-config: the host's format is kept, and a caller's number in an
    # exception's message is masked all the same.
    code = (
        "import logging, sys; logging.basicConfig(stream=sys.stderr, format='host %(message)s');"
        " from ivr import logs; logs.configure(); logs.configure();"
        " log = logging.getLogger('ivr')\n"
        "try:\n    raise KeyError('no route for +8613912340000')\n"
        "except KeyError:\n    log.exception('call failed')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    lines = done.stderr.splitlines()
    assert lines[0] == "host call failed" and lines[1] == "Traceback (most recent call last):"
    assert "139****0000" in done.stderr and "13912340000" not in done.stderr
    assert done.stderr.count("Traceback") == 1  # configured twice, masked once


def test_a_traceback_is_logged_masked() -> None:
    try:
        raise KeyError("no route for +8613912340000")
    except KeyError:
        record = logging.LogRecord(
            "ivr.test", logging.ERROR, __file__, 1, "call failed", (), sys.exc_info()
        )
    line = LocalTimeFormatter(FORMAT).format(record)
    assert "Traceback" in line and "KeyError" in line
    assert "139****0000" in line and "13912340000" not in line

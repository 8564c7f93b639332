"""Fixtures for the lab tests: a provisioned Debian sid root with Asterisk in it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ivr.lab import default_root

PROVISION = Path(__file__).resolve().parents[2] / "scripts" / "provision-lab"


@pytest.fixture(scope="session")
def lab_root() -> Path:
    """The lab root, provisioned now if needed. Fails (never skips) when it cannot be."""
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (apt-get, debootstrap, chroot)", pytrace=False)
    root = default_root()
    # Idempotent: a working root costs a fraction of a second to confirm.
    try:
        done = subprocess.run(
            [str(PROVISION), str(root)],
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{PROVISION} {root} timed out: {exc}", pytrace=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        pytest.fail(f"{PROVISION} {root} failed ({done.returncode}):\n{tail}", pytrace=False)
    return root

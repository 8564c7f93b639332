"""Shared fixtures: the bundled configuration, and a writable copy to break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from ivr.check import load_hotline
from ivr.core.routing import Hotline
from ivr.paths import bundled_root

CONFIG_PARTS = ("config", "dialplans", "prompts", "transfer")

# How long an example takes is the benchmarks' business: on a loaded machine (CI runs
# the real Asterisk beside these tests) a slow example is no failure.
settings.register_profile("ivr", deadline=None)
settings.load_profile("ivr")


@pytest.fixture(scope="session")
def hotline() -> Hotline:
    return load_hotline(bundled_root())


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A copy of the bundled configuration folder that a test may edit."""
    for part in CONFIG_PARTS:
        shutil.copytree(
            bundled_root() / part, tmp_path / part, ignore=shutil.ignore_patterns("asterisk")
        )
    return tmp_path

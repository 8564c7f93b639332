"""Where the bundled configuration lives: inside the wheel, or the checkout's root."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_root() -> Path:
    """The folder holding config/, dialplans/, prompts/ and transfer/ shipped with ivr."""
    packaged = _PACKAGE / "bundled"
    if (packaged / "config").is_dir():
        return packaged
    return _PACKAGE.parent


def default_root() -> Path:
    """IVR_CONFIG names another folder; otherwise the bundled one."""
    configured = os.environ.get("IVR_CONFIG")
    return Path(configured) if configured else bundled_root()

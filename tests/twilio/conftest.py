"""Fixtures for the Twilio front-end tests; the Twilio peer lives in twilio_peer.py."""

from __future__ import annotations

import sys
from pathlib import Path

# The parity test drives the FastAGI route with the scripted Asterisk of tests/agi,
# imported as `agi.fake_asterisk` like tests/controller does.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

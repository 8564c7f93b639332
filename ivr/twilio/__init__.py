"""Twilio front-end: the same dialplans as webhooks (Flask, TwiML), signatures enforced.

`twilio_blueprint()` answers Twilio's voice webhooks under /twilio for every configured
number; `register_twilio()` is the one call `ivr serve` needs, and says why the webhooks
stay off when there is no auth token. `ivr.twilio.wsgi` is the same app for gunicorn.

Names are imported on first use, so `ivr.twilio.settings` (the `twilio:` section's
model) loads without Flask, Redis or the twilio library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivr.twilio.app import open_state_store, register_twilio
    from ivr.twilio.events import NoEvents, SequencedSink, TwilioCall
    from ivr.twilio.settings import (
        Destination,
        NumberRoute,
        TwilioNotConfigured,
        TwilioSection,
        TwilioSettings,
        load_twilio_settings,
        parse_destination,
    )
    from ivr.twilio.state import (
        CallRecord,
        MemoryStateStore,
        RedisStateStore,
        StateStore,
        Tokens,
    )
    from ivr.twilio.webhooks import TwilioWebhooks, twilio_blueprint

_WHERE = {
    "open_state_store": "app",
    "register_twilio": "app",
    "NoEvents": "events",
    "SequencedSink": "events",
    "TwilioCall": "events",
    "Destination": "settings",
    "NumberRoute": "settings",
    "TwilioNotConfigured": "settings",
    "TwilioSection": "settings",
    "TwilioSettings": "settings",
    "load_twilio_settings": "settings",
    "parse_destination": "settings",
    "CallRecord": "state",
    "MemoryStateStore": "state",
    "RedisStateStore": "state",
    "StateStore": "state",
    "Tokens": "state",
    "TwilioWebhooks": "webhooks",
    "twilio_blueprint": "webhooks",
}

__all__ = [
    "CallRecord",
    "Destination",
    "MemoryStateStore",
    "NoEvents",
    "NumberRoute",
    "RedisStateStore",
    "SequencedSink",
    "StateStore",
    "Tokens",
    "TwilioCall",
    "TwilioNotConfigured",
    "TwilioSection",
    "TwilioSettings",
    "TwilioWebhooks",
    "load_twilio_settings",
    "open_state_store",
    "parse_destination",
    "register_twilio",
    "twilio_blueprint",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ivr.twilio' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ivr.twilio.{module}"), name)

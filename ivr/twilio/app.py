"""Putting the webhooks into a Flask app: the state store, and `register_twilio()`,
the one call `ivr serve` needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask

from ivr.core.routing import Hotline
from ivr.twilio.settings import (
    TwilioNotConfigured,
    TwilioSection,
    TwilioSettings,
    load_twilio_settings,
)
from ivr.twilio.state import MemoryStateStore, RedisStateStore, StateStore
from ivr.twilio.webhooks import twilio_blueprint


def open_state_store(settings: TwilioSettings) -> StateStore:
    """Redis when configured (every worker sees every call), else this process's memory."""
    if settings.state_store == "redis":
        if not settings.redis_url:
            raise TwilioNotConfigured("twilio.state.store is redis but no Redis URL is set")
        return RedisStateStore.from_url(settings.redis_url, settings.state_ttl_s)
    return MemoryStateStore(settings.state_ttl_s)


def register_twilio(
    app: Flask,
    hotline_source: Callable[[], Hotline],
    section: TwilioSection | Mapping[str, Any] | None,
    *,
    root: Path,
    events: Any = None,
    clock: Callable[[], datetime] | None = None,
    default_redis_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Add the webhooks to ``app`` if an auth token is configured. Returns one line for
    the log: where the webhooks are, or why they are off."""
    try:
        settings = load_twilio_settings(
            section, root=root, env=env, default_redis_url=default_redis_url
        )
        store = open_state_store(settings)
    except TwilioNotConfigured as exc:
        return f"Twilio webhooks off: {exc}"
    app.register_blueprint(twilio_blueprint(hotline_source, settings, events, clock, store=store))
    where = settings.public_base_url or "(no public_base_url: the Host header decides)"
    return (
        f"Twilio webhooks on {where}/twilio/voice (status /twilio/status, fallback "
        f"/twilio/fallback); call state in {settings.state_store}"
    )

"""Putting the webhooks into a Flask app: the state store, and `register_twilio()`,
the one call `ivr serve` needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask

from ivr.core.clock import SHANGHAI
from ivr.core.routing import Hotline
from ivr.events import NoEvents
from ivr.twilio.rest import TwilioRest
from ivr.twilio.settings import (
    TwilioNotConfigured,
    TwilioSection,
    TwilioSettings,
    load_twilio_settings,
)
from ivr.twilio.state import MemoryStateStore, RedisStateStore, StateStore
from ivr.twilio.transfers import TwilioTransfers
from ivr.twilio.webhooks import TwilioWebhooks


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
    desks: list[Any] | None = None,
) -> str:
    """Add the webhooks to ``app`` if an auth token is configured. Returns one line for
    the log: where the webhooks are, or why they are off. ``desks`` (the seat API's
    front-ends) gets the Twilio one, which transfers calls through the REST API."""
    try:
        settings = load_twilio_settings(
            section, root=root, env=env, default_redis_url=default_redis_url
        )
        store = open_state_store(settings)
    except TwilioNotConfigured as exc:
        return f"Twilio webhooks off: {exc}"
    hooks = TwilioWebhooks(
        hotline_source, settings, events if events is not None else NoEvents(),
        clock or (lambda: datetime.now(SHANGHAI)), store,
    )  # fmt: skip
    rest, why_not = TwilioRest.from_env(settings.auth_token, env)
    transfers = TwilioTransfers(hooks, rest, why_not)
    if desks is not None:
        desks.append(transfers)
    app.register_blueprint(hooks.blueprint())
    where = settings.public_base_url or "(no public_base_url: the Host header decides)"
    return (
        f"Twilio webhooks on {where}/twilio/voice (status /twilio/status, fallback "
        f"/twilio/fallback); call state in {settings.state_store}; "
        + ("seats' transfers through the REST API" if rest else why_not)
    )

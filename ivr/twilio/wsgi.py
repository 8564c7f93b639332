"""The Twilio webhooks as a WSGI app of their own, for gunicorn in production:

    gunicorn -w 4 -b 127.0.0.1:8080 'ivr.twilio.wsgi:create_webhook_app()'

Each worker loads the configuration folder ($IVR_CONFIG, else the bundled one), the
`twilio:` section of its config/controller.yaml and the auth token (TWILIO_AUTH_TOKEN
or a secrets file). Without a token the worker refuses to boot: webhooks are never
served unchecked. Call state must be in Redis (`twilio.state.store: redis`, the
default) so that any worker can take any webhook of a call. `gunicorn` reloads the
configuration on SIGHUP by starting fresh workers.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from flask import Flask
from prometheus_client import CollectorRegistry

from ivr import logs
from ivr.check import load_hotline
from ivr.config import ConfigError, read_yaml, validate
from ivr.core.clock import SHANGHAI
from ivr.paths import default_root
from ivr.platform.publisher import Publisher
from ivr.settings import ControllerSettings, secret
from ivr.twilio.app import open_state_store
from ivr.twilio.events import SequencedSink
from ivr.twilio.rest import TwilioRest
from ivr.twilio.settings import REDIS_ENV, TwilioNotConfigured, load_twilio_settings
from ivr.twilio.transfers import TwilioTransfers
from ivr.twilio.webhooks import TwilioWebhooks
from ivr.web import create_app

log = logging.getLogger(__name__)

_held: list[IO[bytes]] = []  # spool slot locks, held for the worker's life


def create_webhook_app(root: str | Path | None = None) -> Flask:
    logs.configure()  # gunicorn sets up only its own loggers
    env = os.environ
    folder = Path(root) if root else default_root()
    hotline = load_hotline(folder)
    controller, section = read_controller(folder)
    redis_url = env.get(REDIS_ENV) or controller.platform.redis_url
    try:
        settings = load_twilio_settings(section, root=folder, env=env, default_redis_url=redis_url)
    except TwilioNotConfigured as exc:
        raise SystemExit(f"Twilio webhooks not started: {exc}") from None
    if settings.state_store == "memory":
        log.warning("twilio.state.store is memory: run one worker only, or calls get lost")
    registry = CollectorRegistry()
    spool = Path(controller.platform.spool_dir)
    publisher = Publisher(
        redis_url,
        spool_slot(spool if spool.is_absolute() else folder / spool),
        full_numbers=controller.platform.full_numbers,
        registry=registry,
        client_name="ivr-twilio-publisher",
    )
    atexit.register(publisher.close, 5.0)

    def health() -> dict[str, Any]:
        stats = publisher.stats()
        return {"ok": bool(stats["healthy"]), "events": stats}

    hooks = TwilioWebhooks(
        lambda: hotline, settings, SequencedSink(publisher),
        lambda: datetime.now(SHANGHAI), open_state_store(settings),
    )  # fmt: skip
    rest, why_not = TwilioRest.from_env(settings.auth_token, env)
    transfers = TwilioTransfers(hooks, rest, why_not)
    if rest is None:
        log.warning("%s", why_not)
    # The seats' desktop API beside the webhooks: transfers of Twilio calls.
    seat_token, where = secret("IVR_SEAT_API_TOKEN", controller.seat_api.token_file, folder)
    if seat_token is None:
        log.warning("seat API off: %s", where)
    app = create_app(
        registry=registry, health=health, publisher=publisher, seat_token=seat_token,
        desks=[transfers],
    )  # fmt: skip
    app.register_blueprint(hooks.blueprint())
    return app


def read_controller(folder: Path) -> tuple[ControllerSettings, Mapping[str, Any] | None]:
    """config/controller.yaml, its `twilio:` section apart (read here whether or not
    ControllerSettings knows the section)."""
    path = folder / "config" / "controller.yaml"
    if not path.exists():
        return ControllerSettings(), None
    doc, problems = read_yaml(path, str(path))
    if doc is None:
        raise ConfigError(problems)
    data = dict(doc.data or {})
    section = data.pop("twilio", None)
    doc.data = data
    settings, problems = validate(doc, ControllerSettings)
    if problems:
        raise ConfigError(problems)
    return settings, section


def spool_slot(base: Path) -> Path:
    """A spool folder no other live worker uses: a spool belongs to one process, and a
    restarted worker takes over (and replays) the folder its predecessor left."""
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for slot in range(256):
        lock = (base / f"twilio-{slot}.slot").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _held.append(lock)
        return base / f"twilio-{slot}"
    raise RuntimeError(f"no free event spool slot under {base}")

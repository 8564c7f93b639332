"""`ivr serve`: the FastAGI controller and its HTTP side, on a configuration that can be
reloaded live.

SIGHUP reloads the configuration folder. A folder with any error is refused with file,
line and reason, and the running configuration stays; a good one replaces it whole,
between calls (a call in progress keeps the configuration it started with).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from werkzeug.serving import BaseWSGIServer

from ivr.agi.calls import AsteriskSettings, CallController
from ivr.agi.manager import AmiSettings
from ivr.agi.server import AgiServer
from ivr.agi.transfers import AsteriskTransfers
from ivr.check import load_hotline
from ivr.config import ConfigError
from ivr.core.clock import SHANGHAI, now_local
from ivr.core.routing import Hotline
from ivr.events import FanOut
from ivr.listen import listen
from ivr.platform.publisher import Publisher
from ivr.platform.sink import PublishingSink
from ivr.settings import ControllerSettings, host_port, load_settings, secret
from ivr.twilio import SequencedSink, register_twilio
from ivr.web import create_app
from ivr.web.metrics import IndicatorCollector, LiveIndicators
from ivr.web.server import BoundedWSGIServer

log = logging.getLogger(__name__)


@dataclass
class LiveHotline:
    """The configuration in force; swapped whole, read once per call."""

    root: Path
    current: Hotline
    lock: threading.Lock = field(default_factory=threading.Lock)
    reloads: int = 0
    refused: int = 0
    # config/controller.yaml as the controller started with it: how it listens, the
    # platform, Twilio's numbers. A reload does not change those; it says so.
    settings: ControllerSettings | None = None

    def __call__(self) -> Hotline:
        return self.current

    def reload(self) -> bool:
        with self.lock:
            try:
                fresh = load_hotline(self.root)
            except ConfigError as exc:
                self.refused += 1
                log.error("configuration in %s refused; the running one stays:\n%s", self.root, exc)
                return False
            except Exception:  # our own bug: still no reason to drop what is running
                self.refused += 1
                log.exception("reloading %s failed; the running configuration stays", self.root)
                return False
            self.current = fresh
            self.reloads += 1
            log.info("configuration reloaded from %s", self.root)
            if self.settings is not None and load_settings(self.root) != self.settings:
                log.warning(
                    "config/controller.yaml changed; its settings take effect at the next "
                    "restart (the dialplans, directory and prompts took effect now)"
                )
            return True


# As werkzeug listens by itself: Twilio's and the seats' requests are short.
HTTP_BACKLOG = 128


class Controller:
    """Everything `ivr serve` runs, startable and stoppable from tests."""

    def __init__(
        self,
        root: Path,
        settings: ControllerSettings,
        *,
        agi_address: tuple[str, int] | None = None,
        http_address: tuple[str, int] | None = None,
        redis_url: str | None = None,
        pretend_now: datetime | None = None,
    ) -> None:
        self.live = LiveHotline(root, load_hotline(root), settings=settings)
        self.registry = CollectorRegistry()
        self.indicators = LiveIndicators()
        self.registry.register(IndicatorCollector(self.indicators))
        platform = settings.platform
        spool = Path(platform.spool_dir)
        self.publisher = Publisher(
            redis_url or platform.redis_url,
            spool if spool.is_absolute() else root / spool,
            full_numbers=platform.full_numbers,
            registry=self.registry,
        )
        names = settings.asterisk
        self.calls = CallController(
            self.live,
            AsteriskSettings(sounds_prefix=names.sounds_prefix, dial_template=names.dial_template),
            FanOut([PublishingSink(self.publisher), self.indicators]),
            clock=shifted_clock(pretend_now) if pretend_now else now_local,
        )
        self.agi = AgiServer(
            agi_address or host_port(settings.agi.listen),
            self.calls.routes(),
            allowed_hosts=settings.agi.allowed_hosts,
            max_sessions=settings.agi.max_sessions,
            # A session we cannot serve at all (bad route, garbage) is just closed: the
            # glue then queues the caller to the seats, so no error hook is needed.
        )
        ami = names.ami
        ami_secret, _ = secret("IVR_AMI_SECRET", ami.secret_file, root)
        self.transfers = AsteriskTransfers(
            self.calls,
            AmiSettings(
                ami.host, ami.port, os.environ.get("IVR_AMI_USERNAME") or ami.username,
                ami_secret or "",
            ),
        )  # fmt: skip
        seat_token, where = secret("IVR_SEAT_API_TOKEN", settings.seat_api.token_file, root)
        self.seat_api_status = (
            f"seat API on /calls (token from {where})"
            if seat_token
            else f"seat API off: {where}; it is never served without a token"
        )
        desks: list[Any] = [self.transfers]
        self.app = create_app(
            registry=self.registry, health=self.health, seat_token=seat_token, desks=desks
        )
        # Twilio numbers are answered on the same HTTP listener, once a token is set.
        self.twilio_status = register_twilio(
            self.app, self.live, settings.twilio, root=root,
            events=FanOut([SequencedSink(self.publisher), self.indicators]),
            clock=self.calls.clock, default_redis_url=redis_url or platform.redis_url,
            desks=desks,
        )  # fmt: skip
        self.http_address = http_address or host_port(settings.http.listen)
        self.http: BaseWSGIServer | None = None

    def start(self) -> tuple[str, int]:
        # The HTTP port is bound before the FastAGI listener serves: a port in use
        # stops the start with a line naming it (werkzeug would print its own advice
        # and exit) and nothing half-running.
        try:
            listener = listen("HTTP", self.http_address, HTTP_BACKLOG)
        except OSError:
            self.agi.stop(grace=0)
            raise
        with listener:  # werkzeug serves a duplicate of it
            self.http_address = listener.getsockname()[:2]  # the port, if 0 was asked
            self.http = BoundedWSGIServer(*self.http_address, self.app, fd=listener.fileno())
        address = self.agi.start()
        threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()
        return address

    def stop(self) -> None:
        self.agi.stop()
        if self.http:
            self.http.shutdown()
        if parked := self.calls.end_parked_calls():
            log.warning("%d calls in seats' transfers recorded as handed to the switch", parked)
        if not self.publisher.close(timeout=5.0):
            log.warning("events not yet in Redis stay in the spool for the next start")

    def health(self) -> dict[str, Any]:
        publisher = self.publisher.stats()
        return {
            "ok": bool(publisher["healthy"]),
            "agi": asdict(self.agi.stats()),
            "events": publisher,
            "reloads": self.live.reloads,
            "refused_reloads": self.live.refused,
        }


def shifted_clock(start: datetime) -> Callable[[], datetime]:
    """A clock that reads ``start`` now and runs on from there: for trying a dialplan
    on a date to come (or gone) in the lab, never for production."""
    offset = start - datetime.now(SHANGHAI)
    return lambda: datetime.now(SHANGHAI) + offset


SIGNAL_POLL_S = 0.5


def run(controller: Controller) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(
        signal.SIGHUP,
        lambda *_: threading.Thread(
            target=controller.live.reload, name="reload", daemon=True
        ).start(),
    )
    host, port = controller.start()
    twilio = controller.twilio_status
    (log.warning if twilio.startswith("Twilio webhooks off") else log.info)("%s", twilio)
    seat_api = controller.seat_api_status
    (log.warning if seat_api.startswith("seat API off") else log.info)("%s", seat_api)
    log.info(
        "FastAGI controller on %s:%d (routes: %s); HTTP on %s:%d (/metrics, /healthz, /twilio)",
        host, port, ", ".join(controller.calls.routes()), *controller.http_address,
    )  # fmt: skip
    try:
        # The kernel may hand a signal to any of our threads; Python runs its handler
        # on the main thread only once that thread wakes. Waking now and then makes a
        # SIGHUP or SIGTERM that landed elsewhere take effect within the interval.
        while not stop.wait(SIGNAL_POLL_S):
            pass
    finally:
        log.info("stopping: finishing calls in progress")
        controller.stop()

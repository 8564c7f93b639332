"""`ivr serve`: the FastAGI controller, on a configuration that can be reloaded live.

SIGHUP reloads the configuration folder. A folder with any error is refused with file,
line and reason, and the running configuration stays; a good one replaces it whole,
between calls (a call in progress keeps the configuration it started with).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ivr.agi.calls import AsteriskSettings, CallController, EventSink, NoEvents
from ivr.agi.server import AgiServer
from ivr.agi.session import AgiSession
from ivr.check import load_hotline
from ivr.config import ConfigError
from ivr.core.clock import SHANGHAI
from ivr.core.routing import Hotline
from ivr.settings import ControllerSettings, host_port

log = logging.getLogger(__name__)


@dataclass
class LiveHotline:
    """The configuration in force; swapped whole, read once per call."""

    root: Path
    current: Hotline
    lock: threading.Lock = field(default_factory=threading.Lock)
    reloads: int = 0
    refused: int = 0

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
            self.current = fresh
            self.reloads += 1
            log.info("configuration reloaded from %s", self.root)
            return True


class Controller:
    """Everything `ivr serve` runs, startable and stoppable from tests."""

    def __init__(
        self,
        root: Path,
        settings: ControllerSettings,
        *,
        agi_address: tuple[str, int] | None = None,
        events: EventSink | None = None,
        pretend_now: datetime | None = None,
    ) -> None:
        self.live = LiveHotline(root, load_hotline(root))
        names = settings.asterisk
        self.calls = CallController(
            self.live,
            AsteriskSettings(sounds_prefix=names.sounds_prefix, dial_template=names.dial_template),
            events or NoEvents(),
            clock=shifted_clock(pretend_now) if pretend_now else _now,
        )
        self.agi = AgiServer(
            agi_address or host_port(settings.agi.listen),
            self.calls.routes(),
            allowed_hosts=settings.agi.allowed_hosts,
            max_sessions=settings.agi.max_sessions,
            on_error=_on_error,
        )

    def start(self) -> tuple[str, int]:
        return self.agi.start()

    def stop(self) -> None:
        self.agi.stop()

    def status(self) -> dict[str, Any]:
        return {
            "agi": asdict(self.agi.stats()),
            "reloads": self.live.reloads,
            "refused_reloads": self.live.refused,
        }


def _now() -> datetime:
    return datetime.now(SHANGHAI)


def shifted_clock(start: datetime) -> Callable[[], datetime]:
    """A clock that reads ``start`` now and runs on from there: for trying a dialplan
    on a date to come (or gone) in the lab, never for production."""
    offset = start - datetime.now(SHANGHAI)
    return lambda: datetime.now(SHANGHAI) + offset


def _on_error(session: AgiSession, exc: Exception) -> None:
    # A session we could not serve at all (bad route, garbage): closing it returns the
    # channel to the glue, which queues the caller to the seats. Nothing else to do.
    return None


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
    log.info(
        "FastAGI controller listening on %s:%d (routes: %s)",
        host,
        port,
        ", ".join(controller.calls.routes()),
    )
    try:
        stop.wait()
    finally:
        log.info("stopping: finishing calls in progress")
        controller.stop()

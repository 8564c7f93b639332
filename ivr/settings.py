"""`config/controller.yaml`: how the controller runs (not what it routes)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ivr.config import ConfigError, read_yaml, validate
from ivr.twilio.settings import TwilioSection


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgiSettings(_Strict):
    listen: str = Field(default="127.0.0.1:4573", pattern=r"^[^:\s]+:[0-9]{1,5}$")
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"], min_length=1)
    max_sessions: int = Field(default=2000, ge=1, le=100_000)


class AsteriskNames(_Strict):
    sounds_prefix: str = "ivr"
    dial_template: str = Field(default="Local/{number}@ivr-outbound", pattern=r"\{number\}")


class PlatformSettings(_Strict):
    """Where call events go (docs/events.md). IVR_REDIS_URL or --redis override redis_url."""

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    spool_dir: str = Field(default="var/spool", description="relative to the config folder")
    full_numbers: bool = Field(
        default=False, description="put callers' full numbers on the event streams"
    )


class HttpSettings(_Strict):
    listen: str = Field(default="127.0.0.1:8080", pattern=r"^[^:\s]+:[0-9]{1,5}$")


class ControllerSettings(_Strict):
    agi: AgiSettings = Field(default_factory=AgiSettings)
    asterisk: AsteriskNames = Field(default_factory=AsteriskNames)
    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    twilio: TwilioSection = Field(default_factory=TwilioSection)


def load_settings(root: Path) -> ControllerSettings:
    path = root / "config" / "controller.yaml"
    if not path.exists():
        return ControllerSettings()
    doc, problems = read_yaml(path, str(path))
    if doc is None:
        raise ConfigError(problems)
    settings, problems = validate(doc, ControllerSettings)
    if problems:
        raise ConfigError(problems)
    return settings


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)

"""`config/controller.yaml`: how the controller runs (not what it routes)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ivr.config import ConfigError, Document, Problem, exists, read_yaml, validate
from ivr.twilio.settings import TwilioSection


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listen_address(value: str) -> str:
    host_port(value)  # port in range
    return value


ListenAddress = Annotated[
    str, Field(pattern=r"^[^:\s]+:[0-9]{1,5}$"), AfterValidator(_listen_address)
]


def _redis_url(value: str) -> str:
    problem = redis_url_problem(value)  # one rule for the file, the environment and --redis
    if problem:
        raise ValueError(problem)
    return value


RedisUrl = Annotated[str, AfterValidator(_redis_url)]


class AgiSettings(_Strict):
    listen: ListenAddress = "127.0.0.1:4573"
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"], min_length=1)
    max_sessions: int = Field(default=2000, ge=1, le=100_000)


class ManagerLink(_Strict):
    """The Asterisk manager (AMI) user that carries out seats' transfers. The secret
    comes from IVR_AMI_SECRET or a secrets file (IVR_AMI_SECRET_FILE or secret_file);
    IVR_AMI_USERNAME overrides username."""

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = ""
    secret_file: str | None = None


class AsteriskNames(_Strict):
    sounds_prefix: str = "ivr"
    dial_template: str = Field(default="Local/{number}@ivr-outbound", pattern=r"\{number\}")
    ami: ManagerLink = Field(default_factory=ManagerLink)


class SeatApiSettings(_Strict):
    """The seats' desktop API (/calls: transfers). Its bearer token comes from
    IVR_SEAT_API_TOKEN or a secrets file (IVR_SEAT_API_TOKEN_FILE or token_file)."""

    token_file: str | None = None


class PlatformSettings(_Strict):
    """Where call events go (docs/events.md). IVR_REDIS_URL or --redis override redis_url."""

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    spool_dir: str = Field(default="var/spool", description="relative to the config folder")
    full_numbers: bool = Field(
        default=False, description="put callers' full numbers on the event streams"
    )


class HttpSettings(_Strict):
    listen: ListenAddress = "127.0.0.1:8080"


class ControllerSettings(_Strict):
    agi: AgiSettings = Field(default_factory=AgiSettings)
    asterisk: AsteriskNames = Field(default_factory=AsteriskNames)
    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    twilio: TwilioSection = Field(default_factory=TwilioSection)
    seat_api: SeatApiSettings = Field(default_factory=SeatApiSettings)


def load_settings(root: Path) -> ControllerSettings:
    _, settings, problems = read_settings(root)
    if settings is None:
        raise ConfigError(problems)
    return settings


def read_settings(root: Path) -> tuple[Document | None, ControllerSettings | None, list[Problem]]:
    """config/controller.yaml as read (None: no file, the defaults), the settings (None
    when refused) and why it was refused."""
    path = root / "config" / "controller.yaml"
    if not exists(path):
        return None, ControllerSettings(), []
    doc, problems = read_yaml(path, str(path))
    if doc is None:
        return None, None, problems
    settings, problems = validate(doc, ControllerSettings)
    return doc, (settings if not problems else None), problems


def host_port(text: str) -> tuple[str, int]:
    """HOST:PORT; raises ValueError for anything else (port 0: any free port)."""
    host, _, port = text.rpartition(":")
    number = int(port) if port.isdigit() else -1
    if not host or not 0 <= number <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT with a port of 0-65535")
    return host.strip("[]"), number


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_url_problem(url: str) -> str | None:
    """Why `url` cannot be a Redis address, or None."""
    if not url.startswith(REDIS_SCHEMES):
        return f"{url!r} is not a Redis URL ({', '.join(REDIS_SCHEMES)})"
    return None


def secret(
    env_name: str,
    configured_file: str | None,
    root: Path,
    env: Mapping[str, str] | None = None,
) -> tuple[str | None, str]:
    """A secret from ``$env_name``, else the file named by ``$env_name_FILE`` or the
    configuration (relative to ``root``). Returns (secret, where from) or (None, why
    not): secrets never live in the repository."""
    env = os.environ if env is None else env
    if env.get(env_name):
        return env[env_name].strip(), f"${env_name}"
    named = env.get(f"{env_name}_FILE") or configured_file
    if not named:
        return None, f"no {env_name}, {env_name}_FILE or secrets file configured"
    path = Path(named)
    path = path if path.is_absolute() else root / path
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        return None, f"secrets file {path} unreadable: {exc.strerror or exc}"
    if not value:
        return None, f"secrets file {path} is empty"
    return value, str(path)

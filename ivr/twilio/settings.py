"""How the Twilio front-end is set up: the `twilio:` section of config/controller.yaml,
and the secrets that never live in it.

The auth token comes from ``TWILIO_AUTH_TOKEN`` or from a secrets file (an argument,
``TWILIO_AUTH_TOKEN_FILE``, or ``twilio.auth_token_file``). Without one there is no
webhook listener: an unchecked webhook would let anyone on the internet walk calls
through our flows, so :func:`load_twilio_settings` refuses rather than guess.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

TOKEN_ENV = "TWILIO_AUTH_TOKEN"
TOKEN_FILE_ENV = "TWILIO_AUTH_TOKEN_FILE"
SHARED_KEY_ENV = "TWILIO_WEBHOOK_SHARED_KEY_SECRET"
STATE_SECRET_ENV = "IVR_TWILIO_STATE_SECRET"
REDIS_ENV = "IVR_REDIS_URL"

_PHONE_KEY = re.compile(r"[\s().-]")


class TwilioNotConfigured(RuntimeError):
    """The webhook listener stays off; the message says why, for the operator."""


# -- the YAML section ------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberEntry(_Strict):
    """What a Twilio number stands for: the line dialed, and where the call belongs."""

    line: str | None = Field(
        default=None, description="the service number it stands for; default: the number itself"
    )
    region: str | None = Field(default=None, description="region id; else trunk, DID, area code")
    trunk: str | None = Field(default=None, description="a trunk id of config/trunks.yaml")


class StateSection(_Strict):
    store: Literal["redis", "memory"] = Field(
        default="redis",
        description="redis: shared by every worker; memory: one process only (ivr serve, tests)",
    )
    ttl_s: int = Field(default=4 * 3600, ge=60, le=48 * 3600)
    redis_url: str | None = Field(
        default=None, pattern=r"^rediss?://", description="default: $IVR_REDIS_URL, else platform"
    )


class TwilioSection(_Strict):
    """`twilio:` in config/controller.yaml. Every key is optional; no section = defaults."""

    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="the URL Twilio requests for this app's root, as seen outside the proxy",
    )
    auth_token_file: str | None = Field(
        default=None, description="a file holding the auth token (when $TWILIO_AUTH_TOKEN is unset)"
    )
    prompts_base_url: str | None = Field(
        default=None, description="<Play> {prompts_base_url}/{name}.wav"
    )
    serve_prompts: bool = Field(
        default=False,
        description="serve prompts/sounds at /twilio/prompts/<name>.wav, play those",
    )
    say_language: str = "zh-CN"
    say_voice: str | None = None
    shortcut_timeout_s: int = Field(
        default=1, ge=1, le=10, description="wait for a shortcut key after a prompt ends"
    )
    hold_music_url: str | None = None
    action_wait_s: float = Field(
        default=2.0,
        ge=0,
        le=10,
        description="how long the status callback of a caller who left while being put "
        "through waits for the Dial's or Enqueue's own report, which knows whether a "
        "person answered (Twilio sends the two in no set order)",
    )
    numbers: dict[str, NumberEntry] = Field(default_factory=dict)
    queues: dict[str, str] = Field(
        default_factory=dict,
        description="queue id -> queue:NAME | sip:URI | client:NAME | +E164; default queue:<id>",
    )
    dial_template: str = Field(
        default="{number}",
        pattern=r"\{(number|e164)\}",
        description="{number} as the directory has it (059196300), {e164} as +8659196300",
    )
    dial_numbers: dict[str, str] = Field(
        default_factory=dict, description="number dialed out -> sip:URI | client:NAME | +E164"
    )
    state: StateSection = Field(default_factory=StateSection)

    @field_validator("queues", "dial_numbers")
    @classmethod
    def _destinations(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            parse_destination(text, f"{key!r}")
        return value


# -- what the blueprint uses -----------------------------------------------------


@dataclass(frozen=True)
class NumberRoute:
    line: str | None = None
    region: str | None = None
    trunk: str | None = None


@dataclass(frozen=True)
class Destination:
    """Where TwiML sends a caller: a Twilio queue, or a dial to a number, SIP URI or client."""

    kind: Literal["queue", "number", "sip", "client"]
    value: str


def parse_destination(text: str, what: str = "destination") -> Destination:
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if sep and scheme == "queue" and rest:
        if len(rest) > 64:  # Twilio's limit on a queue's name
            raise ValueError(f"{what}: a Twilio queue name has at most 64 characters")
        return Destination("queue", rest)
    if sep and scheme in ("sip", "sips") and rest:
        return Destination("sip", text)
    if sep and scheme == "client" and rest:
        return Destination("client", rest)
    if re.fullmatch(r"\+?[0-9]{2,20}", text):
        return Destination("number", text)
    raise ValueError(f"{what}: {text!r} is none of queue:NAME, sip:URI, client:NAME or a number")


@dataclass(frozen=True)
class TwilioSettings:
    auth_token: str = field(repr=False)
    state_secret: bytes = field(repr=False)
    public_base_url: str | None = None
    prompts_base_url: str | None = None  # None: <Say> the catalog text
    prompts_dir: Path | None = None  # served at /twilio/prompts/<name>.wav when set
    say_language: str = "zh-CN"
    say_voice: str | None = None
    shortcut_timeout_s: int = 1
    hold_music_url: str | None = None
    action_wait_s: float = 2.0
    numbers: Mapping[str, NumberRoute] = field(default_factory=dict)
    queues: Mapping[str, Destination] = field(default_factory=dict)
    dial_template: str = "{number}"
    dial_numbers: Mapping[str, Destination] = field(default_factory=dict)
    state_store: Literal["redis", "memory"] = "memory"
    state_ttl_s: int = 4 * 3600
    redis_url: str | None = None
    shared_key_secret: str | None = field(default=None, repr=False)

    def number_route(self, to: str) -> NumberRoute | None:
        return self.numbers.get(number_key(to))

    def queue_destination(self, queue: str) -> Destination:
        return self.queues.get(queue) or Destination("queue", queue)

    def dial_destination(self, number: str) -> Destination:
        return self.dial_numbers.get(number) or parse_destination(
            self.dial_template.format(number=number, e164=e164(number)),
            f"dial_template for {number}",
        )


def number_key(number: str) -> str:
    """Twilio sends E.164 (+8659112345); the YAML may hold it with spaces or dashes."""
    text = number.strip()
    if text.startswith("sip:"):
        text = text[4:].split("@", 1)[0]
    return _PHONE_KEY.sub("", text)


def e164(number: str) -> str:
    """A Chinese number with its trunk prefix (0591…) as E.164; service numbers (110,
    95598) have no E.164 form and stay as they are."""
    digits = re.sub(r"[^0-9+]", "", number)
    if digits.startswith("+"):
        return digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if digits.startswith("0") and len(digits) > 4:
        return "+86" + digits[1:]
    return digits


def derive_state_secret(auth_token: str) -> bytes:
    """The same in every worker without another secret to deploy; still not the token."""
    return hmac.new(auth_token.encode(), b"ivr-twilio-call-state", hashlib.sha256).digest()


def load_twilio_settings(
    section: TwilioSection | Mapping[str, Any] | None = None,
    *,
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    secrets_file: Path | None = None,
    default_redis_url: str | None = None,
) -> TwilioSettings:
    """Settings for the webhooks, or TwilioNotConfigured saying why they stay off.

    ``root`` is the configuration folder: relative file names are read from it, and
    prompts are served from its prompts/sounds when ``serve_prompts`` is on.
    """
    env = os.environ if env is None else env
    try:
        config = (
            section
            if isinstance(section, TwilioSection)
            else TwilioSection.model_validate(dict(section or {}))
        )
    except ValidationError as exc:
        raise TwilioNotConfigured(f"twilio section refused: {exc}") from None
    token = _auth_token(config, root, env, secrets_file)
    state_secret = env.get(STATE_SECRET_ENV, "").encode() or derive_state_secret(token)
    prompts_dir = (root / "prompts" / "sounds") if (config.serve_prompts and root) else None
    prompts_base = config.prompts_base_url
    if prompts_base is None and config.serve_prompts:
        prompts_base = f"{(config.public_base_url or '').rstrip('/')}/twilio/prompts"
    return TwilioSettings(
        auth_token=token,
        state_secret=state_secret,
        public_base_url=config.public_base_url.rstrip("/") if config.public_base_url else None,
        prompts_base_url=prompts_base.rstrip("/") if prompts_base else None,
        prompts_dir=prompts_dir,
        say_language=config.say_language,
        say_voice=config.say_voice,
        shortcut_timeout_s=config.shortcut_timeout_s,
        hold_music_url=config.hold_music_url,
        action_wait_s=config.action_wait_s,
        numbers={
            number_key(k): NumberRoute(v.line, v.region, v.trunk) for k, v in config.numbers.items()
        },
        queues={k: parse_destination(v) for k, v in config.queues.items()},
        dial_template=config.dial_template,
        dial_numbers={k: parse_destination(v) for k, v in config.dial_numbers.items()},
        state_store=config.state.store,
        state_ttl_s=config.state.ttl_s,
        redis_url=config.state.redis_url or env.get(REDIS_ENV) or default_redis_url,
        shared_key_secret=env.get(SHARED_KEY_ENV) or None,
    )


def _auth_token(
    config: TwilioSection, root: Path | None, env: Mapping[str, str], secrets_file: Path | None
) -> str:
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token
    named = secrets_file or env.get(TOKEN_FILE_ENV) or config.auth_token_file
    if not named:
        raise TwilioNotConfigured(
            f"no Twilio auth token: set {TOKEN_ENV}, or {TOKEN_FILE_ENV} or "
            "twilio.auth_token_file to a secrets file; webhooks are never served unchecked"
        )
    path = Path(named)
    if not path.is_absolute() and root is not None:
        path = root / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TwilioNotConfigured(
            f"Twilio auth token file {path} unreadable: {type(exc).__name__}"
        ) from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise TwilioNotConfigured(f"Twilio auth token file {path} is empty")
    if path.stat().st_mode & 0o077:
        log.warning("Twilio auth token file %s is readable by others: chmod 600 it", path)
    return token

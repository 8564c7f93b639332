"""The `twilio:` section, the auth token's sources, and the webhook listener left off
(with the reason) when there is no token."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from twilio_peer import TOKEN, TwilioPeer, make_harness

from ivr.core.clock import SHANGHAI
from ivr.core.routing import Hotline
from ivr.twilio import (
    Destination,
    TwilioNotConfigured,
    TwilioSection,
    load_twilio_settings,
    open_state_store,
    parse_destination,
    register_twilio,
)
from ivr.twilio.settings import derive_state_secret, e164, number_key
from ivr.twilio.state import MemoryStateStore, RedisStateStore
from ivr.twilio.wsgi import create_webhook_app, read_controller, spool_slot
from ivr.web import create_app


def test_no_section_means_defaults() -> None:
    settings = load_twilio_settings(None, env={"TWILIO_AUTH_TOKEN": "t"})
    assert settings.public_base_url is None and settings.prompts_base_url is None
    assert settings.state_store == "redis" and settings.state_ttl_s == 4 * 3600
    assert settings.queue_destination("fuzhou-12345") == Destination("queue", "fuzhou-12345")
    assert settings.dial_destination("110") == Destination("number", "110")


def test_the_token_comes_from_the_environment_first(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    env = {"TWILIO_AUTH_TOKEN": " from-env ", "TWILIO_AUTH_TOKEN_FILE": str(secret)}
    assert load_twilio_settings({}, env=env).auth_token == "from-env"


@pytest.mark.parametrize("where", ["argument", "env", "yaml"])
def test_the_token_from_a_secrets_file(tmp_path: Path, where: str) -> None:
    secret = tmp_path / "secrets" / "twilio"
    secret.parent.mkdir()
    secret.write_text("file-token\n")
    secret.chmod(0o600)
    section: dict[str, str] = {}
    env: dict[str, str] = {}
    kwargs: dict[str, Path] = {}
    if where == "argument":
        kwargs["secrets_file"] = secret
    elif where == "env":
        env["TWILIO_AUTH_TOKEN_FILE"] = str(secret)
    else:
        section["auth_token_file"] = "secrets/twilio"  # relative to the config folder
    settings = load_twilio_settings(section, root=tmp_path, env=env, **kwargs)
    assert settings.auth_token == "file-token"


def test_no_token_says_why(tmp_path: Path) -> None:
    with pytest.raises(TwilioNotConfigured, match="TWILIO_AUTH_TOKEN"):
        load_twilio_settings({}, env={})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(TwilioNotConfigured, match="empty"):
        load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN_FILE": str(empty)})
    with pytest.raises(TwilioNotConfigured, match="unreadable"):
        load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN_FILE": str(tmp_path / "none")})


def test_the_token_never_lives_in_the_yaml() -> None:
    with pytest.raises(TwilioNotConfigured, match="auth_token"):
        load_twilio_settings({"auth_token": TOKEN}, env={"TWILIO_AUTH_TOKEN": "t"})


def test_the_token_is_not_in_the_settings_repr() -> None:
    settings = load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN": TOKEN})
    assert TOKEN not in repr(settings)


def test_state_secret_is_derived_alike_in_every_worker_or_set() -> None:
    one = load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN": "a"})
    two = load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN": "a"})
    other = load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN": "b"})
    assert one.state_secret == two.state_secret == derive_state_secret("a")
    assert one.state_secret != other.state_secret and one.state_secret != b"a"
    set_ = load_twilio_settings(
        {}, env={"TWILIO_AUTH_TOKEN": "a", "IVR_TWILIO_STATE_SECRET": "s3cret"}
    )
    assert set_.state_secret == b"s3cret"


def test_a_full_section_validates() -> None:
    text = """
public_base_url: https://ivr.example.test/hotline/
serve_prompts: true
numbers:
  "+86 591 12345": {line: "12345", region: fuzhou}
  "+86-592-12315": {line: "12315", trunk: xiamen-ct}
queues: {fuzhou-12345: "queue:fz-12345", xiamen-12315: "sip:kept@pbx.example.test"}
dial_template: "{e164}"
dial_numbers: {"110": "client:police-desk"}
state: {store: memory, ttl_s: 600}
"""
    section = TwilioSection.model_validate(yaml.safe_load(text))
    settings = load_twilio_settings(section, root=Path("/srv/ivr"), env={"TWILIO_AUTH_TOKEN": "t"})
    assert settings.public_base_url == "https://ivr.example.test/hotline"
    assert settings.prompts_base_url == "https://ivr.example.test/hotline/twilio/prompts"
    assert settings.prompts_dir == Path("/srv/ivr/prompts/sounds")
    assert settings.number_route("+8659112345").region == "fuzhou"  # type: ignore[union-attr]
    assert settings.number_route("+8659212315").trunk == "xiamen-ct"  # type: ignore[union-attr]
    assert settings.queue_destination("fuzhou-12345") == Destination("queue", "fz-12345")
    assert settings.queue_destination("xiamen-12315").kind == "sip"
    assert settings.dial_destination("059112366") == Destination("number", "+8659112366")
    assert settings.dial_destination("110") == Destination("client", "police-desk")
    assert isinstance(open_state_store(settings), MemoryStateStore)


@pytest.mark.parametrize(
    "bad",
    [
        {"public_base_url": "ivr.example.test"},
        {"queues": {"q": "mailto:x"}},
        {"dial_template": "sip:110@gw"},
        {"state": {"store": "disk"}},
        {"numbers": {"+8659112345": {"line": "12345", "city": "fuzhou"}}},
    ],
)
def test_a_bad_section_is_refused_with_the_reason(bad: dict) -> None:
    with pytest.raises(TwilioNotConfigured, match="twilio section refused"):
        load_twilio_settings(bad, env={"TWILIO_AUTH_TOKEN": "t"})


def test_destinations_and_numbers() -> None:
    assert parse_destination("queue:fuzhou-12345") == Destination("queue", "fuzhou-12345")
    assert parse_destination("sips:seat@pbx.example.test").kind == "sip"
    assert parse_destination("+8659196300") == Destination("number", "+8659196300")
    with pytest.raises(ValueError, match="64 characters"):
        parse_destination("queue:" + "q" * 65)
    assert number_key("sip:+8659112345@trunk.example.test") == "+8659112345"
    assert number_key("+86 (591) 1234-5") == "+8659112345"
    assert e164("059196300") == "+8659196300"
    assert e164("0086059112345") == "+86059112345"
    assert e164("95598") == "95598" and e164("110") == "110"


def test_redis_store_needs_a_url() -> None:
    settings = load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN": "t"})
    with pytest.raises(TwilioNotConfigured, match="Redis"):
        open_state_store(settings)
    with_url = load_twilio_settings(
        {}, env={"TWILIO_AUTH_TOKEN": "t", "IVR_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert isinstance(open_state_store(with_url), RedisStateStore)  # connects lazily


# -- the listener off without a token, on with one ------------------------------------


def test_register_leaves_webhooks_off_without_a_token(hotline: Hotline, tmp_path: Path) -> None:
    app = Flask("serve")
    message = register_twilio(app, lambda: hotline, None, root=tmp_path, env={})
    assert message.startswith("Twilio webhooks off: no Twilio auth token")
    assert "twilio" not in app.blueprints
    assert app.test_client().post("/twilio/voice").status_code == 404


def test_register_turns_webhooks_on_with_a_token(hotline: Hotline, tmp_path: Path) -> None:
    app = Flask("serve")
    section = {"public_base_url": "https://ivr.example.test", "state": {"store": "memory"}}
    message = register_twilio(
        app, lambda: hotline, section, root=tmp_path, env={"TWILIO_AUTH_TOKEN": TOKEN}
    )
    assert "https://ivr.example.test/twilio/voice" in message and "memory" in message
    response = TwilioPeer(app.test_client(), "+8659112345").post("/twilio/voice")
    assert response.status_code == 200


# -- the gunicorn app ---------------------------------------------------------------------


def test_read_controller_takes_the_twilio_section_apart(config_copy: Path) -> None:
    path = config_copy / "config" / "controller.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["twilio"] = {"public_base_url": "https://ivr.example.test"}
    path.write_text(yaml.safe_dump(doc))
    controller, section = read_controller(config_copy)
    assert section == {"public_base_url": "https://ivr.example.test"}
    assert controller.agi.listen == "127.0.0.1:4573"


def test_the_gunicorn_app_refuses_to_start_without_a_token(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="no Twilio auth token"):
        create_webhook_app(config_copy)


def test_the_gunicorn_app_serves_webhooks(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_copy / "config" / "controller.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["twilio"] = {"public_base_url": "https://ivr.example.test", "state": {"store": "memory"}}
    doc["platform"]["redis_url"] = "redis://127.0.0.1:1/0"  # nobody there: events spool
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("IVR_REDIS_URL", raising=False)
    app = create_webhook_app(config_copy)
    try:
        client = app.test_client()
        root = TwilioPeer(client, "+8659112345").call()
        assert root[0].tag == "Gather"
        assert client.get("/healthz").status_code in (200, 503)
    finally:
        app.extensions["ivr"]["publisher"].close(timeout=2.0)
    slots = sorted(p.name for p in (config_copy / "var" / "spool").iterdir())
    assert "twilio-0" in slots  # this worker's own event spool


def test_spool_slots_are_one_per_process(tmp_path: Path) -> None:
    base = tmp_path / "spool"
    first, second = spool_slot(base), spool_slot(base)  # each holds its slot's lock
    assert first != second and {first.name, second.name} == {"twilio-0", "twilio-1"}
    assert all(p.parent == base for p in (first, second))
    assert oct(os.stat(base).st_mode & 0o777) == "0o700"  # spools hold callers' numbers


def test_the_section_model_loads_without_the_web_stack() -> None:
    """config/controller.yaml's model may import it: no Flask, Redis or twilio for that."""
    code = (
        "import sys, ivr.twilio.settings, ivr.twilio as t\n"
        "heavy = {'flask', 'redis', 'twilio'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert all(getattr(t, name) for name in t.__all__)\n"
        "assert 'flask' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


class CountingBody(io.BytesIO):
    """A form body of ``size`` bytes that counts what the app reads of it."""

    def __init__(self, size: int) -> None:
        super().__init__(b"CallSid=" + b"a" * (size - 8))
        self.size, self.taken = size, 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.taken += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self.taken += n
        return n


@pytest.mark.parametrize("chunked", [False, True])
def test_an_unsigned_body_of_any_size_is_not_read_whole(
    hotline: Hotline, tmp_path: Path, chunked: bool
) -> None:
    # Before the signature was checked, werkzeug's form parser read and kept any body
    # sent: one request of 400 MB grew the process by 800 MB.
    app = create_app()  # as `ivr serve` and the gunicorn app make theirs
    section = {"public_base_url": "https://ivr.example.test", "state": {"store": "memory"}}
    register_twilio(app, lambda: hotline, section, root=tmp_path, env={"TWILIO_AUTH_TOKEN": TOKEN})
    body = CountingBody(64 * 1024 * 1024)
    length = {"CONTENT_LENGTH": "", "wsgi.input_terminated": True} if chunked else {}
    answer = app.test_client().post(
        "/twilio/voice", input_stream=body, content_length=body.size,
        content_type="application/x-www-form-urlencoded", environ_overrides=length,
    )  # fmt: skip
    # with a length, refused unread; chunked, read up to the limit, which no signature
    # can match then
    assert answer.status_code == (403 if chunked else 413)
    assert body.taken <= (64 * 1024 if chunked else 0)


def test_a_refused_webhooks_log_line_is_its_own(
    hotline: Hotline, caplog: pytest.LogCaptureFixture
) -> None:
    # The unsigned request's CallSid went into the 403 line as sent: a caller's number,
    # or a line break and a forged line of its own.
    forged = "13912340000\n2026-03-03T10:00:00.000+08:00 INFO ivr.twilio.webhooks: forged"
    harness = make_harness(hotline, datetime(2024, 6, 1, 10, 0, tzinfo=SHANGHAI))
    peer = TwilioPeer(harness.client, "+8659112345")
    with caplog.at_level(logging.WARNING):
        assert peer.post("/twilio/voice", sign=False, CallSid=forged).status_code == 403
        assert peer.post("/twilio/voice", sign=False).status_code == 403
    lines = [r.getMessage() for r in caplog.records if "refused (403)" in r.getMessage()]
    assert len(lines) == 2 and not any("13912340000" in m or "\n" in m for m in lines)
    assert lines[1].endswith(f"call {peer.sid}")  # a real CallSid is shown whole

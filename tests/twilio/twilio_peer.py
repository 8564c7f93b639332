"""Test support: a peer that speaks to the webhooks exactly as Twilio does.

Requests are form-encoded POSTs with Twilio's field names, signed with the twilio
library's own algorithm over the public URL (what Twilio signs, not what the app sees
behind the proxy). Responses are parsed as XML, never compared as strings.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from ivr.core.routing import Hotline
from ivr.twilio import TwilioSettings, load_twilio_settings, twilio_blueprint
from ivr.twilio.state import MemoryStateStore, StateStore

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://ivr.example.test"
ACCOUNT = "AC" + "0" * 32
CALLER = "+8613912340000"

# Twilio's numbers for the hotline in these tests: one per line and region.
NUMBERS: dict[str, dict[str, str]] = {
    "+8659112345": {"line": "12345", "region": "fuzhou"},
    "+8659212345": {"line": "12345", "region": "xiamen"},
    "+8659312345": {"line": "12345", "region": "ningde"},
    "+8659512315": {"line": "12315", "region": "quanzhou"},
    "+8659112315": {"line": "12315", "region": "fuzhou"},
    "+8659312348": {"line": "12348", "region": "ningde"},
    "+8659112358": {"line": "12358", "region": "fuzhou"},
    "+8659112366": {"line": "12366", "region": "fuzhou"},
    "+8659112336": {"line": "12336", "region": "fuzhou"},
    "+8659112110": {"line": "110", "trunk": "xiamen-ct"},
}


class Recorder:
    """An event sink that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[Any, list[dict[str, Any]]]] = []

    def call_events(self, call: Any, events: list[dict[str, Any]]) -> None:
        self.batches.append((call, list(events)))

    def types(self, call_id: str | None = None) -> list[str]:
        return [
            e["type"]
            for call, events in self.batches
            if call_id is None or call.call_id == call_id
            for e in events
        ]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, events in self.batches for e in events if e["type"] == kind]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_settings(**section: Any) -> TwilioSettings:
    # A status callback waits this long for a connect's own report; tests that race
    # the two set their own.
    options: dict[str, Any] = {"public_base_url": PUBLIC, "numbers": NUMBERS, "action_wait_s": 0.2}
    options.update(section)
    return load_twilio_settings(options, env={"TWILIO_AUTH_TOKEN": TOKEN})


@dataclass
class Harness:
    app: Flask
    client: FlaskClient
    settings: TwilioSettings
    store: StateStore
    events: Any  # a Recorder unless the test gave another sink
    clock: Clock


def make_harness(
    hotline: Hotline | Callable[[], Hotline],
    now: datetime,
    *,
    settings: TwilioSettings | None = None,
    store: StateStore | None = None,
    events: Any = None,
) -> Harness:
    settings = settings or make_settings()
    store = store or MemoryStateStore()
    events, clock = events if events is not None else Recorder(), Clock(now)
    source = hotline if callable(hotline) else (lambda: hotline)
    app = Flask("twilio-test")
    app.register_blueprint(twilio_blueprint(source, settings, events, clock, store=store))
    return Harness(app, app.test_client(), settings, store, events, clock)


def parse(body: bytes) -> ET.Element:
    root = ET.fromstring(body)
    assert root.tag == "Response", root.tag
    return root


@dataclass
class TwilioPeer:
    """One call, as Twilio places it."""

    client: FlaskClient
    to: str
    sid: str = "CA" + "1" * 32
    caller: str = CALLER
    token: str = TOKEN
    public: str = PUBLIC
    status: str = "in-progress"
    proxy_prefix: str = ""  # what a reverse proxy strips from the public path
    sent: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def fields(self, **extra: str) -> dict[str, str]:
        base = {
            "AccountSid": ACCOUNT,
            "ApiVersion": "2010-04-01",
            "CallSid": self.sid,
            "CallStatus": self.status,
            "Called": self.to,
            "Caller": self.caller,
            "Direction": "inbound",
            "From": self.caller,
            "To": self.to,
        }
        base.update(extra)
        return {k: v for k, v in base.items() if v is not None}

    def post(
        self,
        url: str,
        form: dict[str, str] | None = None,
        *,
        sign: bool = True,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: str,
    ) -> Any:
        """POST to an absolute public URL (or a path under it), as Twilio would."""
        full = url if url.startswith("http") else self.public + url
        data = form if form is not None else self.fields(**extra)
        sent_headers = dict(headers or {})
        if sign:
            validator = RequestValidator(token or self.token)
            sent_headers["X-Twilio-Signature"] = validator.compute_signature(full, data)
        parts = urlsplit(full)
        path = parts.path.removeprefix(self.proxy_prefix)
        self.sent.append((path, data))
        return self.client.post(
            path + (f"?{parts.query}" if parts.query else ""),
            data=data,
            headers=sent_headers,
            base_url="http://127.0.0.1:8080",
        )

    def call(self) -> ET.Element:
        response = self.post("/twilio/voice")
        assert response.status_code == 200, response.get_data(as_text=True)
        return parse(response.data)

    def hang_up(self) -> int:
        self.status = "completed"
        return self.post("/twilio/status", CallStatus="completed", CallDuration="30").status_code


@dataclass
class Walk:
    """What the peer saw of a call walked to its end."""

    responses: list[ET.Element]
    verbs: list[str]


def walk(
    peer: TwilioPeer,
    keys: str = "",
    outcomes: Iterator[str] | None = None,
    hang_up_at: int | None = None,
) -> Walk:
    """Drive a call like the simulated world of `ivr test`: keys in order, one per
    prompt that takes keys (a collect takes what it wants at once); each connect ends
    as ``outcomes`` says (answered when it runs out). ``hang_up_at``: the caller
    hangs up at the Nth response that waits on them."""
    pressed = list(keys)
    outcomes = outcomes or iter(())
    root = peer.call()
    responses, verbs, waits = [root], [], 0
    while True:
        verbs += [child.tag for child in root]
        last = root[-1] if len(root) else None
        if last is None or last.tag == "Hangup":
            peer.hang_up()  # Twilio's status callback after the call ends
            return Walk(responses, verbs)
        waits += 1
        if hang_up_at is not None and waits >= hang_up_at:
            if last.tag == "Enqueue":  # Twilio reports the queue's end first
                peer.status = "completed"
                peer.post(last.get("action", ""), QueueResult="hangup", QueueTime="30")
            peer.hang_up()
            return Walk(responses, verbs)
        response = _answer(peer, root, last, pressed, outcomes)
        assert response.status_code == 200, (response.status_code, response.get_data())
        root = parse(response.data)
        responses.append(root)


def _answer(
    peer: TwilioPeer, root: ET.Element, last: ET.Element, pressed: list[str], outcomes: Any
) -> Any:
    if last.tag == "Redirect":
        gather = root.find("Gather")
        if gather is not None and pressed:
            wanted = int(gather.get("numDigits", "1"))
            digits = "".join(pressed[:wanted])
            del pressed[:wanted]
            return peer.post(gather.get("action", ""), Digits=digits)
        return peer.post(last.text or "")
    outcome = next(outcomes, "answered")
    if last.tag == "Enqueue":
        result = {
            "answered": "bridged",
            "noanswer": "leave",
            "busy": "queue-full",
            "failed": "system-error",
        }[outcome]
        return peer.post(last.get("action", ""), QueueResult=result, QueueTime="5")
    assert last.tag == "Dial", last.tag
    status = {
        "answered": "completed",
        "noanswer": "no-answer",
        "busy": "busy",
        "failed": "failed",
    }[outcome]
    duration = "60" if outcome == "answered" else "0"
    return peer.post(last.get("action", ""), DialCallStatus=status, DialCallDuration=duration)

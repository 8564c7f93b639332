"""Every webhook's X-Twilio-Signature, behind a proxy too; and continuations that are
replayed or forged cannot move a call."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
from datetime import datetime
from urllib.parse import urlencode, urlsplit

import pytest
from twilio.request_validator import RequestValidator
from twilio_peer import TOKEN, Harness, TwilioPeer, make_harness, make_settings, parse

from ivr.core.clock import SHANGHAI
from ivr.core.routing import Hotline
from ivr.twilio import load_twilio_settings

NOW = datetime(2024, 6, 1, 10, 0, tzinfo=SHANGHAI)
TO = "+8659112345"


@pytest.fixture
def harness(hotline: Hotline) -> Harness:
    return make_harness(hotline, NOW)


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused (403)" in r.getMessage()]


def test_missing_signature_is_403_with_the_reason_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    response = TwilioPeer(harness.client, TO).post("/twilio/voice", sign=False)
    assert response.status_code == 403
    assert any("no X-Twilio-Signature header" in m for m in refusals(caplog))
    assert harness.events.batches == []


def test_wrong_token_is_403(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    response = TwilioPeer(harness.client, TO).post("/twilio/voice", token="not-the-token")
    assert response.status_code == 403
    assert any("does not match" in m for m in refusals(caplog))


def test_a_field_changed_after_signing_is_403(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, TO)
    form = peer.fields()
    signature = RequestValidator(TOKEN).compute_signature(f"{peer.public}/twilio/voice", form)
    response = harness.client.post(
        "/twilio/voice",
        data={**form, "To": "+8659212345"},
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 403


def test_every_webhook_is_checked(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, TO)
    root = peer.call()
    action = root[-1].text or ""
    for url in (action, "/twilio/status", "/twilio/wait?s=1&l=0&d=0&t=x", "/twilio/fallback"):
        assert peer.post(url, sign=False).status_code == 403, url
        assert peer.post(url, token="forged").status_code == 403, url


def test_the_log_line_masks_nothing_personal(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    peer = TwilioPeer(harness.client, TO)
    peer.post("/twilio/voice", sign=False)
    peer.call()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "13912340000" not in text and "139****0000" in text


# -- behind a reverse proxy -------------------------------------------------------------


def test_behind_a_proxy_the_public_url_is_what_twilio_signed(hotline: Hotline) -> None:
    public = "https://hotline.example.test:8443/ivr"
    h = make_harness(hotline, NOW, settings=make_settings(public_base_url=public))
    peer = TwilioPeer(h.client, TO, public=public, proxy_prefix="/ivr")
    root = peer.call()  # the app itself is reached as http://127.0.0.1:8080/twilio/voice
    action = root[-1].text or ""
    assert action.startswith(f"{public}/twilio/continue?")
    assert peer.post(action).status_code == 200
    # Signed over the URL the app sees instead: not what Twilio signs, refused.
    inside = TwilioPeer(h.client, TO, public="http://127.0.0.1:8080", sid="CA" + "3" * 32)
    assert inside.post("/twilio/voice").status_code == 403


def test_twilio_signing_with_the_default_port_is_accepted(hotline: Hotline) -> None:
    h = make_harness(hotline, NOW)
    peer = TwilioPeer(h.client, TO, public="https://ivr.example.test:443")
    assert peer.post("/twilio/voice").status_code == 200


def test_without_a_public_url_the_request_url_is_checked(hotline: Hotline) -> None:
    settings = load_twilio_settings({}, env={"TWILIO_AUTH_TOKEN": TOKEN})
    h = make_harness(hotline, NOW, settings=settings)
    peer = TwilioPeer(h.client, "+15005550006", public="http://127.0.0.1:8080")
    root = peer.call()
    action = root[-1].text or ""
    assert action.startswith("/twilio/continue?")  # relative: Twilio resolves it
    assert peer.post(f"http://127.0.0.1:8080{action}").status_code == 200


def test_a_get_webhook_is_signed_over_its_query(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, TO)
    url = f"{peer.public}/twilio/voice?{urlencode(peer.fields())}"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    parts = urlsplit(url)
    ok = harness.client.get(
        f"{parts.path}?{parts.query}", headers={"X-Twilio-Signature": signature}
    )
    assert ok.status_code == 200 and parse(ok.data)[0].tag == "Gather"
    forged = harness.client.get(
        f"{parts.path}?{parts.query}".replace("8659112345", "8659212345"),
        headers={"X-Twilio-Signature": signature},
    )
    assert forged.status_code == 403


def _sha256_signature(secret: str, url: str, form: dict[str, str]) -> str:
    text = url + "".join(k + form[k] for k in sorted(form))
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_webhook_shared_keys_need_their_secret(hotline: Hotline) -> None:
    header = {
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    }
    without = make_harness(hotline, NOW)
    peer = TwilioPeer(without.client, TO)
    form = peer.fields()
    signature = _sha256_signature("shared-secret", f"{peer.public}/twilio/voice", form)
    refused = without.client.post(
        "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature, **header}
    )
    assert refused.status_code == 403
    settings = load_twilio_settings(
        {"public_base_url": peer.public},
        env={"TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_WEBHOOK_SHARED_KEY_SECRET": "shared-secret"},
    )
    with_key = make_harness(hotline, NOW, settings=settings)
    accepted = with_key.client.post(
        "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature, **header}
    )
    assert accepted.status_code == 200


# -- replayed and forged continuations --------------------------------------------------


def test_a_replayed_continuation_cannot_move_the_call(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, TO)
    action = peer.call()[0].get("action") or ""
    first = peer.post(action, Digits="1")
    assert parse(first.data)[0].text == "fuzhou-enterprise"
    step = harness.store.get(peer.sid).step  # type: ignore[union-attr]
    events = len(harness.events.types())
    again = peer.post(action, Digits="0")  # the same URL, a different key: a replay
    assert again.status_code == 409
    assert harness.store.get(peer.sid).step == step  # type: ignore[union-attr]
    assert len(harness.events.types()) == events


def test_an_old_continuation_after_later_steps_is_refused(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, TO)
    greeting = peer.call()[0].get("action") or ""
    queue = parse(peer.post(greeting).data)[0]
    survey = parse(peer.post(queue.get("action", ""), QueueResult="bridged").data)
    assert survey[0].tag == "Gather"
    assert peer.post(greeting, Digits="0").status_code == 409
    assert peer.post(queue.get("action", ""), QueueResult="leave").status_code == 409


def test_a_continuation_of_another_call_is_forged(harness: Harness) -> None:
    one = TwilioPeer(harness.client, TO, sid="CA" + "a" * 32)
    two = TwilioPeer(harness.client, TO, sid="CA" + "b" * 32)
    action = one.call()[-1].text or ""
    two.call()
    assert two.post(action, Digits="1").status_code == 403  # signed by Twilio, yet refused
    assert two.post(action.replace("s=1", "s=2"), Digits="1").status_code == 403


def test_a_step_changed_in_the_url_is_forged(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, TO)
    action = peer.call()[-1].text or ""
    bumped = action.replace("s=1&", "s=2&")
    assert bumped != action
    assert peer.post(bumped, Digits="1").status_code == 403
    assert peer.post(action, Digits="1").status_code == 200  # the call is unharmed


@pytest.mark.parametrize("forged", ["%C3%A9", "%E4%B8%AD" * 8])
def test_a_token_that_is_not_ascii_is_forged_too(harness: Harness, forged: str) -> None:
    # hmac.compare_digest refuses to compare such strings at all: that must read as
    # a forgery (403), not as our failure (which sends the call to the seats).
    peer = TwilioPeer(harness.client, TO)
    action = peer.call()[-1].text or ""
    step = harness.store.get(peer.sid).step  # type: ignore[union-attr]
    tampered = re.sub(r"t=[^&]+", f"t={forged}", action)
    assert tampered != action
    assert peer.post(tampered, Digits="1").status_code == 403
    assert harness.store.get(peer.sid).step == step  # type: ignore[union-attr]
    assert peer.post(action, Digits="1").status_code == 200  # the call is unharmed


def test_two_copies_of_one_continuation_move_the_call_once(hotline: Hotline) -> None:
    h = make_harness(hotline, NOW)
    peer = TwilioPeer(h.client, TO)
    action = peer.call()[-1].text or ""
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        client = h.app.test_client()
        copy = TwilioPeer(client, TO, sid=peer.sid)
        barrier.wait()
        statuses.append(copy.post(action, Digits="1").status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(statuses) == [200, 409, 409, 409]
    assert h.events.types().count("keys_pressed") == 1


def test_a_second_incoming_webhook_for_a_call_is_refused(harness: Harness) -> None:
    peer = TwilioPeer(harness.client, TO)
    peer.call()
    assert peer.post("/twilio/voice").status_code == 409
    assert harness.events.types().count("call_offered") == 1

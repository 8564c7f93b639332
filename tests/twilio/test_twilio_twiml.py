"""`Twiml`, the webhooks' document: what the twilio library renders for the same calls,
rendered once per shape, each call's URLs filled in."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from twilio.twiml.voice_response import VoiceResponse

from ivr.twilio import render
from ivr.twilio.render import Twiml


def keys_then_queue(doc: Any, action: str, wait: str) -> None:
    gather = doc.gather(input="dtmf", num_digits=1, timeout=5, action=action, method="POST")
    gather.say("您好，12345热线。", language="zh-CN", voice=None)
    gather.play("https://example.org/prompts/greeting_12345.wav")
    doc.redirect(action, method="POST")
    doc.enqueue("fuzhou-12345", action=action, method="POST", wait_url=wait,
                wait_url_method="POST")  # fmt: skip
    doc.hangup()


def dial_sip(doc: Any, action: str, wait: str) -> None:
    dial = doc.dial(action=action, method="POST", timeout=20)
    dial.sip("sip:seat@example.org")
    dial.number("+8659112366")
    dial.client("desk-7")
    doc.redirect(wait)


def canonical(text: str) -> str:
    return ET.canonicalize(text, strip_text=True)


@pytest.mark.parametrize("build", [keys_then_queue, dial_sip])
def test_the_same_document_as_the_twilio_library(build: Callable[..., None]) -> None:
    for n in range(3):  # the first renders the shape, the others fill it in
        action = f"https://example.org/twilio/continue?s={n}&t=tok{n}"
        wait = f"https://example.org/twilio/wait?s={n}&l=60&d=0&t=w{n}"
        ours, library = Twiml(), VoiceResponse()
        build(ours, action, wait)
        build(library, action, wait)
        assert canonical(str(ours)) == canonical(str(library))
        root = ET.fromstring(str(ours))
        assert action in {element.get("action") for element in root.iter()}


def test_a_shape_is_rendered_once_and_each_call_keeps_its_own_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[Any] = []
    real = render.render_shape

    def counting(shape: Any, parent: Any = None) -> VoiceResponse:
        if parent is None:
            rendered.append(shape)
        return real(shape, parent)

    monkeypatch.setattr(render, "render_shape", counting)
    monkeypatch.setattr(render, "_rendered", {})
    texts = []
    for sid in ("CA1", "CA2"):
        doc = Twiml()
        doc.redirect(f"https://example.org/twilio/continue?sid={sid}&s=2", method="POST")
        texts.append(str(doc))
    assert len(rendered) == 1
    urls = [ET.fromstring(text).find("Redirect").text for text in texts]  # type: ignore[union-attr]
    assert urls == [
        "https://example.org/twilio/continue?sid=CA1&s=2",
        "https://example.org/twilio/continue?sid=CA2&s=2",
    ]


def test_characters_xml_escapes_survive_in_urls() -> None:
    odd = 'https://example.org/x?a=1&b=<2>&c="3"&d=\tx'
    doc = Twiml()
    doc.gather(action=odd, method="POST").say("x", language="zh-CN", voice=None)
    doc.redirect(odd)
    root = ET.fromstring(str(doc))
    assert root.find("Gather").get("action") == odd  # type: ignore[union-attr]
    assert root.find("Redirect").text == odd  # type: ignore[union-attr]


def test_the_shape_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_rendered", {})
    monkeypatch.setattr(render, "_MAX_SHAPES", 3)
    for n in range(7):
        doc = Twiml()
        doc.say(f"prompt {n}", language="zh-CN", voice=None)
        assert ET.fromstring(str(doc)).find("Say").text == f"prompt {n}"  # type: ignore[union-attr]
    assert 1 <= len(render._rendered) <= 3


def test_an_empty_document() -> None:
    assert ET.fromstring(str(Twiml())).tag == "Response"
    assert len(ET.fromstring(str(Twiml()))) == 0

"""The routing core's instructions as TwiML verbs, built with the twilio library.

Only the how lives here (which verb, which attributes); what to do next is the
engine's business, and when to come back is the blueprint's.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from twilio.twiml.voice_response import Dial, VoiceResponse

from ivr.core.engine import Connect
from ivr.core.routing import Hotline, Route
from ivr.twilio.settings import Destination, TwilioSettings

log = logging.getLogger(__name__)

DIAL_TIMEOUT_MAX = 600  # Twilio's <Dial timeout> bounds
DIAL_TIMEOUT_MIN = 5


# -- a webhook's answer: the twilio library renders each shape once ----------------------


class Twiml:
    """A TwiML document being built, with the calls of `VoiceResponse` the webhooks use.

    Two calls of one flow get the same document but for their continuation URLs (each
    carries the call's id, step and token). So the verbs are kept with those URLs
    replaced by numbered slots: that is the document's shape. The twilio library renders
    each shape once (`render_shape`), and a webhook fills the call's URLs into the
    cached text: building and serializing the document was a webhook's costliest part.
    """

    __slots__ = ("_urls", "_verbs")

    def __init__(self, urls: list[str] | None = None) -> None:
        self._verbs: list[tuple[Any, ...]] = []
        self._urls = [] if urls is None else urls  # shared with nested verbs, in order

    def _slot(self, url: str) -> str:
        self._urls.append(url)
        return _SLOT.format(len(self._urls) - 1)

    def play(self, url: str) -> None:
        self._verbs.append(("play", url))

    def say(self, text: str, *, language: str | None = None, voice: str | None = None) -> None:
        self._verbs.append(("say", text, language, voice))

    def _options(self, options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        """Keyword arguments in their order, the URLs among them as slots."""
        return tuple(
            (name, self._slot(value) if name in _URL_OPTIONS and value is not None else value)
            for name, value in options.items()
        )

    def gather(self, **options: Any) -> Twiml:
        child = Twiml(self._urls)
        self._verbs.append(("gather", self._options(options), child))
        return child

    def redirect(self, url: str, **options: Any) -> None:
        self._verbs.append(("redirect", self._slot(url), self._options(options)))

    def enqueue(self, name: str, **options: Any) -> None:
        self._verbs.append(("enqueue", name, self._options(options)))

    def dial(self, **options: Any) -> Twiml:
        child = Twiml(self._urls)
        self._verbs.append(("dial", self._options(options), child))
        return child

    def sip(self, uri: str) -> None:
        self._verbs.append(("sip", uri))

    def client(self, identity: str) -> None:
        self._verbs.append(("client", identity))

    def number(self, number: str) -> None:
        self._verbs.append(("number", number))

    def hangup(self) -> None:
        self._verbs.append(("hangup",))

    def shape(self) -> tuple[Any, ...]:
        """The verbs with their URLs as slots: equal for every call of one flow step."""
        return tuple(
            (*verb[:-1], verb[-1].shape()) if isinstance(verb[-1], Twiml) else verb
            for verb in self._verbs
        )

    def __str__(self) -> str:
        parts = _rendered.get(shape := self.shape())
        if parts is None:
            parts = _remember(shape)
        urls = self._urls
        return "".join(
            part if n % 2 == 0 else _escape(urls[int(part)]) for n, part in enumerate(parts)
        )


# A slot is text the library writes as it is (no character XML escapes) and no prompt
# or setting holds.
_SLOT = "urn:ivr-slot:{}:"
_URL_OPTIONS = frozenset({"action", "wait_url", "status_callback"})
_SLOTS = re.compile(r"urn:ivr-slot:(\d+):")
_MAX_SHAPES = 4096  # shapes come from the configuration; this only bounds a bad one
_rendered: dict[tuple[Any, ...], list[str]] = {}
_rendering = threading.Lock()


def _remember(shape: tuple[Any, ...]) -> list[str]:
    """The shape rendered by the twilio library, split at its slots: text, slot number,
    text, and so on."""
    parts = _SLOTS.split(str(render_shape(shape)))
    with _rendering:
        if len(_rendered) >= _MAX_SHAPES:
            _rendered.clear()
        _rendered[shape] = parts
    return parts


def render_shape(shape: tuple[Any, ...], parent: Any = None) -> VoiceResponse:
    """A shape as the twilio library's document, slots and all."""
    response = parent if parent is not None else VoiceResponse()
    for verb in shape:
        kind = verb[0]
        if kind == "play":
            response.play(verb[1])
        elif kind == "say":
            response.say(verb[1], language=verb[2], voice=verb[3])
        elif kind == "gather":
            render_shape(verb[2], response.gather(**dict(verb[1])))
        elif kind == "redirect":
            response.redirect(verb[1], **dict(verb[2]))
        elif kind == "enqueue":
            response.enqueue(verb[1], **dict(verb[2]))
        elif kind == "dial":
            render_shape(verb[2], response.dial(**dict(verb[1])))
        elif kind in ("sip", "client", "number"):
            getattr(response, kind)(verb[1])
        elif kind == "hangup":
            response.hangup()
        else:
            raise ValueError(f"no TwiML verb {kind!r}")
    return response


def _escape(url: str) -> str:
    """A URL as the library writes an attribute (our URLs need only &; a character
    reference reads the same in text)."""
    if "&" in url:
        url = url.replace("&", "&amp;")
    if any(c in url for c in _ODD):
        for c, ref in _ODD.items():
            url = url.replace(c, ref)
    return url


_ODD = {"<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#09;"}


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


class Renderer:
    """TwiML for one call's route under one configuration."""

    def __init__(self, settings: TwilioSettings, hotline: Hotline, route: Route) -> None:
        self.settings = settings
        self.hotline = hotline
        self.route = route

    def sound_name(self, prompt: str) -> str:
        """The file a prompt is rendered to: as Asterisk plays it (ivr/agi/calls.py)."""
        entry = self.hotline.catalog.prompts.get(prompt)
        return f"{prompt}-{self.route.line}" if entry and entry.per_line else prompt

    def prompt(self, parent: Twiml, prompt: str) -> None:
        """<Play> the rendered prompt, or <Say> its catalog text when no audio is served."""
        base = self.settings.prompts_base_url
        if base is not None:
            parent.play(f"{base}/{self.sound_name(prompt)}.wav")
            return
        entry = self.hotline.catalog.prompts.get(prompt)
        if entry is None:  # `ivr check` refuses this; never leave the caller for it
            log.warning("prompt %s is not in the catalog; going on", prompt)
            return
        text = entry.zh.format_map(_Fields(self.route.tag_fields()))
        parent.say(text, language=self.settings.say_language, voice=self.settings.say_voice)

    def keys(
        self,
        response: Twiml,
        prompt: str,
        *,
        max_digits: int,
        timeout: int,
        action: str,
    ) -> None:
        """A prompt that takes keys; no key falls through to the <Redirect> after it."""
        gather = response.gather(
            input="dtmf", num_digits=max_digits, timeout=timeout, action=action, method="POST"
        )
        self.prompt(gather, prompt)
        response.redirect(action, method="POST")

    def connect(
        self,
        response: Twiml,
        connect: Connect,
        *,
        action: str,
        wait_url: str | None,
    ) -> str:
        """<Enqueue> or <Dial>; returns "queue" or "dial": which result fields will come."""
        destination = self.destination(connect)
        if destination.kind == "queue":
            options: dict[str, Any] = {"action": action, "method": "POST"}
            if wait_url is not None:
                options.update(wait_url=wait_url, wait_url_method="POST")
            response.enqueue(destination.value, **options)
            return "queue"
        timeout = connect.timeout or DIAL_TIMEOUT_MAX
        dial = response.dial(
            action=action,
            method="POST",
            timeout=min(DIAL_TIMEOUT_MAX, max(DIAL_TIMEOUT_MIN, timeout)),
        )
        dial_to(dial, destination)
        return "dial"

    def destination(self, connect: Connect) -> Destination:
        target = connect.target
        if target.queue:
            return self.settings.queue_destination(target.queue)
        if target.number:
            return self.settings.dial_destination(target.number)
        raise ValueError(f"target {target.id} has neither a queue nor a number")


def dial_to(dial: Dial | Twiml, destination: Destination) -> None:
    if destination.kind == "sip":
        dial.sip(destination.value)
    elif destination.kind == "client":
        dial.client(destination.value)
    else:
        dial.number(destination.value)


def seats_twiml(settings: TwilioSettings, queue: str) -> VoiceResponse:
    """The caller to the 12345 seats, waiting as long as they will: the answer to any
    failure of ours. No action URL: nothing of ours needs to answer again."""
    response = VoiceResponse()
    destination = settings.queue_destination(queue)
    if destination.kind == "queue":
        response.enqueue(destination.value)
    else:
        dial_to(response.dial(timeout=DIAL_TIMEOUT_MAX), destination)
    response.hangup()
    return response


def wait_twiml(settings: TwilioSettings, remaining: float | None, again: str) -> VoiceResponse:
    """While in a Twilio queue: hold, then <Leave> once the step's timeout has passed
    (the Enqueue action then reports QueueResult=leave: nobody answered in time)."""
    response = VoiceResponse()
    if remaining is not None and remaining <= 0:
        response.leave()
        return response
    if settings.hold_music_url:
        response.play(settings.hold_music_url)
    else:
        pause = 10 if remaining is None else max(1, min(10, int(remaining + 0.999)))
        response.pause(length=pause)
    response.redirect(again, method="POST")
    return response

"""The routing core's instructions as TwiML verbs, built with the twilio library.

Only the how lives here (which verb, which attributes); what to do next is the
engine's business, and when to come back is the blueprint's.
"""

from __future__ import annotations

import logging
from typing import Any

from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from ivr.core.engine import Connect
from ivr.core.routing import Hotline, Route
from ivr.twilio.settings import Destination, TwilioSettings

log = logging.getLogger(__name__)

DIAL_TIMEOUT_MAX = 600  # Twilio's <Dial timeout> bounds
DIAL_TIMEOUT_MIN = 5


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

    def prompt(self, parent: VoiceResponse | Gather, prompt: str) -> None:
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
        response: VoiceResponse,
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
        self, response: VoiceResponse, connect: Connect, *, action: str, wait_url: str | None
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


def dial_to(dial: Dial, destination: Destination) -> None:
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

"""The few Twilio REST calls a seat's transfer needs, through the twilio library.

Webhooks only answer Twilio; a transfer happens while no webhook is in flight, so the
controller must ask Twilio itself: move a call to new TwiML, ring a participant into
a conference, change a participant. Every request has a short timeout: a seat waits
for the answer, and a call must never wait on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import requests
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

ACCOUNT_ENV = "TWILIO_ACCOUNT_SID"
REST_TIMEOUT_S = 5.0


class TwilioUnavailable(RuntimeError):
    """Twilio's REST API refused or did not answer; the message says why. Raised for
    every failure of a request (the library's own errors, and the HTTP client's:
    a timeout is not a TwilioException), so that a transfer is always concluded."""


@dataclass
class TwilioRest:
    client: Client

    @classmethod
    def create(
        cls,
        account_sid: str,
        auth_token: str,
        http_client: HttpClient | None = None,
    ) -> TwilioRest:
        http = http_client or TwilioHttpClient(timeout=REST_TIMEOUT_S, max_retries=0)
        return cls(Client(account_sid, auth_token, http_client=http))

    @classmethod
    def from_env(
        cls, auth_token: str, env: Mapping[str, str] | None = None
    ) -> tuple[TwilioRest | None, str]:
        """(client, "") or (None, why not): the account SID is not secret, but it is
        per deployment, so it comes from $TWILIO_ACCOUNT_SID."""
        env = os.environ if env is None else env
        sid = env.get(ACCOUNT_ENV, "").strip()
        if not sid:
            return None, f"no {ACCOUNT_ENV}: Twilio calls cannot be transferred"
        return cls.create(sid, auth_token), ""

    def redirect(self, call_sid: str, twiml: str) -> None:
        """The call leaves whatever it is doing for ``twiml``.

        A request sent but not answered in time may have moved the call all the same;
        taking it for "not moved" could leave a caller alone in a room. It is sent once
        more: moving a call to the TwiML it already runs only starts that again. A
        refusal, or a connection never made, is known not to have moved it."""
        for attempt in (1, 2):
            try:
                self.client.calls(call_sid).update(twiml=twiml)
                return
            except requests.exceptions.ReadTimeout as exc:
                if attempt == 2:
                    raise TwilioUnavailable(f"moving call {call_sid}: {exc}") from exc
            except Exception as exc:  # the API's refusal, a dropped link
                raise TwilioUnavailable(f"moving call {call_sid}: {exc}") from exc

    def ring_into(
        self,
        room: str,
        *,
        from_: str,
        to: str,
        timeout: int,
        status_callback: str,
    ) -> tuple[str, str]:
        """Ring ``to`` into the conference named ``room`` (Twilio accepts the name in
        place of the SID here, and creates the room if need be). Returns the new leg's
        CallSid and the room's ConferenceSid. The leg's progress (answered, then
        completed / no-answer / busy / failed) goes to ``status_callback``; the room
        ends when the leg leaves."""
        try:
            participant = self.client.conferences(room).participants.create(
                from_=from_,
                to=to,
                timeout=timeout,
                beep="false",
                early_media=False,
                end_conference_on_exit=True,
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["answered", "completed"],
                label="transfer-target",
            )
        except Exception as exc:  # the API's refusal, a timeout, a dropped link
            raise TwilioUnavailable(f"ringing {to} into {room}: {exc}") from exc
        return str(participant.call_sid or ""), str(participant.conference_sid or "")

    def end_room_when_leaving(self, conference_sid: str, call_sid: str) -> None:
        """The room ends when this participant leaves (the seat, once the target did
        not answer: the caller must not stay alone in it)."""
        try:
            self.client.conferences(conference_sid).participants(call_sid).update(
                end_conference_on_exit=True
            )
        except Exception as exc:  # the API's refusal, a timeout, a dropped link
            raise TwilioUnavailable(f"updating {call_sid} in {conference_sid}: {exc}") from exc

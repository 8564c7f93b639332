"""The Twilio voice webhooks: each carries the routing core's instructions out as TwiML.

The model is the FastAGI route (ivr/agi/calls.py): one walk loop, the engine decides,
this module only renders. What differs is time: a FastAGI call is one connection,
a Twilio call is a string of webhooks, so the engine's state is stored between them
(ivr/twilio/state.py) and every webhook that leaves the call waiting hands Twilio a
continuation URL guarded by the call's step counter.

One webhook renders as much as it can: instructions that need nothing from the caller
(an answer, prompts followed only by prompts or a hang-up) go out together. A prompt
followed by keys or a connect is sent alone with a <Redirect>: the engine must not count
a prompt as heard, nor a caller as waiting for a person, before Twilio says the caller
was still there.

Any failure of ours answers with TwiML that puts the caller through to the region's
12345 seats; Twilio's fallback URL (/twilio/fallback) does the same.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Request, Response, abort, request, send_from_directory
from twilio.twiml.voice_response import VoiceResponse

from ivr.core.clock import SHANGHAI
from ivr.core.engine import (
    AnswerCall,
    CallSession,
    CollectDigits,
    Connect,
    ConnectResult,
    HangUp,
    Instruction,
    PlayPrompt,
    SessionState,
)
from ivr.core.privacy import loggable, mask_number
from ivr.core.routing import Call, Hotline, Route, unrouted
from ivr.core.transfer import drop_repeated_answer
from ivr.events import EventSink, NoEvents
from ivr.twilio.events import TwilioCall
from ivr.twilio.fields import query_fields, webhook_fields
from ivr.twilio.render import Renderer, Twiml, seats_twiml, wait_twiml
from ivr.twilio.settings import TwilioSettings, number_key
from ivr.twilio.signature import SignatureChecker
from ivr.twilio.state import (
    CallRecord,
    MemoryStateStore,
    StateStore,
    StateUnavailable,
    Tokens,
)

log = logging.getLogger(__name__)

# CallStatus values after which the caller is gone.
ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
DIAL_OUTCOME = {
    "completed": "answered",
    "answered": "answered",
    "busy": "busy",
    "no-answer": "noanswer",
    "failed": "failed",
    "canceled": "noanswer",
}
QUEUE_OUTCOME = {
    "bridged": "answered",
    "bridging-in-process": "answered",
    "leave": "noanswer",  # our wait URL's <Leave> once the step's timeout passed
    "queue-full": "busy",
    "hangup": "noanswer",  # the caller left; handled as a hang-up before this is read
    "redirected": "failed",
    "error": "failed",
    "system-error": "failed",
}
CONTINUE = "continue"
_SOUND_NAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,80}")


class MissingField(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class _Turn:
    """One webhook's work on one call."""

    sid: str
    record: CallRecord
    session: CallSession
    now: float


def twilio_blueprint(
    hotline_source: Callable[[], Hotline],
    settings: TwilioSettings,
    events: EventSink | None = None,
    clock: Callable[[], datetime] | None = None,
    *,
    store: StateStore | None = None,
) -> Blueprint:
    """The /twilio/* webhooks. ``events`` takes ``call_events(call, events)``; ``clock``
    returns an aware Asia/Shanghai datetime; ``store`` defaults to one process's memory."""
    hooks = TwilioWebhooks(
        hotline_source,
        settings,
        events if events is not None else NoEvents(),
        clock or (lambda: datetime.now(SHANGHAI)),
        store or MemoryStateStore(settings.state_ttl_s),
    )
    return hooks.blueprint()


class TwilioWebhooks:
    def __init__(
        self,
        hotline_source: Callable[[], Hotline],
        settings: TwilioSettings,
        events: EventSink,
        clock: Callable[[], datetime],
        store: StateStore,
    ) -> None:
        self.hotline_source = hotline_source
        self.settings = settings
        self.events = events
        self.clock = clock
        self.store = store
        self.tokens = Tokens(settings.state_secret)
        self.signatures = SignatureChecker(
            settings.auth_token, settings.public_base_url, settings.shared_key_secret
        )
        self.transfers: Any = None  # a TwilioTransfers once seats may transfer calls

    def blueprint(self) -> Blueprint:
        bp = Blueprint("twilio", __name__, url_prefix="/twilio")
        bp.before_request(self._check_signature)
        methods = ["GET", "POST"]  # a number may be set to either; POST is Twilio's default
        bp.add_url_rule("/voice", "voice", self._guard(self.voice), methods=methods)
        bp.add_url_rule("/continue", "continue", self._guard(self.resume), methods=methods)
        bp.add_url_rule(
            "/wait", "wait",
            self._guard(self.wait, self._keep_waiting, "the caller keeps waiting"),
            methods=methods,
        )  # fmt: skip
        # Twilio acts on nothing a status callback answers: a failure there has no
        # caller to send to the seats, and must not make up a call to send.
        bp.add_url_rule(
            "/status", "status",
            self._guard(self.status, _not_recorded, "status not recorded (503)"),
            methods=methods,
        )  # fmt: skip
        bp.add_url_rule("/fallback", "fallback", self.fallback, methods=methods)
        bp.add_url_rule(
            "/transfer-ended", "transfer_ended", self._guard(self._transfer_ended), methods=methods
        )
        bp.add_url_rule(
            "/transfer-status", "transfer_status",
            self._guard(self._transfer_status, _not_recorded, "status not recorded (503)"),
            methods=methods,
        )  # fmt: skip
        if self.settings.prompts_dir is not None:
            bp.add_url_rule("/prompts/<name>.wav", "prompt", self.prompt)
        return bp

    # -- guards --------------------------------------------------------------------

    def _check_signature(self) -> Response | None:
        req = _current_request()
        if req.endpoint == "twilio.prompt":
            return None  # media Twilio fetches for <Play> carries no signature
        verdict = self.signatures.check(req)
        if verdict.ok:
            return None
        log.warning(
            "twilio %s refused (403): %s; checked against %s; call %s",
            request.path,
            verdict.reason,
            verdict.url.split("?", 1)[0],
            _sid_for_log(webhook_fields(request).get("CallSid", "?")),
        )
        return Response("signature refused\n", status=403, mimetype="text/plain")

    def _guard(
        self,
        handler: Callable[[], Response],
        on_error: Callable[[Request], Response] | None = None,
        after_error: str = "to the 12345 seats",
    ) -> Callable[[], Response]:
        """400 for a webhook missing a field; for any failure of ours the 12345 seats,
        or `on_error`'s answer (`after_error` says what that does, for the log)."""

        def guarded() -> Response:
            try:
                return handler()
            except MissingField as exc:
                log.warning("twilio %s: 400, missing field %s", request.path, exc.name)
                return Response(f"missing field: {exc.name}\n", status=400, mimetype="text/plain")
            except StateUnavailable as exc:  # an outage, not a bug: no trace per webhook
                sid = webhook_fields(request).get("CallSid", "?")
                log.warning("twilio %s: call %s: call state unavailable (%s); %s",
                            request.path, sid, exc, after_error)  # fmt: skip
                if on_error is not None:
                    return on_error(request)
                return self._to_seats(request, "state_unavailable")
            except Exception:
                sid = webhook_fields(request).get("CallSid", "?")
                log.exception("twilio %s: call %s failed; %s", request.path, sid, after_error)
                if on_error is not None:
                    return on_error(request)
                return self._to_seats(request, "controller_error")

        guarded.__name__ = handler.__name__
        return guarded

    # -- webhooks --------------------------------------------------------------------

    def voice(self) -> Response:
        """A new call to one of our numbers: route it and walk it to its first wait."""
        form = webhook_fields(_current_request())
        sid, to = _need(form, "CallSid"), _need(form, "To")
        caller = form.get("From") or None
        hotline = self.hotline_source()  # one configuration for the whole webhook
        now = self.clock()
        route = self.route(hotline, sid, to, caller, now)
        if log.isEnabledFor(logging.INFO):  # the masking is work of its own
            log.info(
                "twilio call %s to %s from %s: %s in %s (%s)",
                sid,
                route.line,
                mask_number(caller),
                route.mode.value,
                route.region,
                route.region_source,
            )
        session, instruction = CallSession.start(hotline, route, now=now.timestamp())
        record = CallRecord(step=1, state={}, caller=caller, started=now.timestamp())
        turn = _Turn(sid, record, session, now.timestamp())
        response = self._walk(turn, instruction)
        record.state = state_data(session.state)
        events = session.take_events()
        record.published = len(events)
        if not self.store.create(sid, record):
            log.warning("twilio call %s: incoming webhook again (409); state kept", sid)
            return Response("call already in progress\n", status=409, mimetype="text/plain")
        self._publish(sid, record, route, events, seq_base=0)
        return _twiml(response)

    def resume(self) -> Response:
        """A continuation: keys gathered, a prompt heard, a dial or queue finished."""
        req = _current_request()
        form = webhook_fields(req)
        sid = _need(form, "CallSid")
        step, token = _step_and_token(req)
        if step is None or not self.tokens.check(token, sid, step, CONTINUE):
            log.warning("twilio call %s: continuation with a bad token refused (403)", sid)
            return Response("continuation refused\n", status=403, mimetype="text/plain")
        record = self.store.get(sid)
        if record is None:
            log.warning("twilio call %s: unknown or expired call state; to the seats", sid)
            return self._to_seats(req, "state_lost")
        transfer = record.extra.get("transfer") or {}
        stayed = (
            transfer.get("caller_stayed") is True
            and step == transfer.get("connect_step")
            and not record.state.get("done")
            and record.state.get("waiting") in ("connect", "last_resort")
        )
        if stayed:
            # A seat's transfer that never moved the caller: this is the report of the
            # connect they are still in (the seat hung up, or they did).
            step = record.step
        if record.step != step:
            if record.state.get("done") or transfer:
                # a late result for a call that has ended, or the queue's or dial's own
                # report once a seat's transfer moved the caller: Twilio ignores it
                return _twiml(Twiml())
            log.warning(
                "twilio call %s: replayed continuation refused (409): step %d, current %d",
                sid,
                step,
                record.step,
            )
            return Response("stale continuation\n", status=409, mimetype="text/plain")
        turn = self._turn(sid, record)
        if stayed:  # that report counts once: a replay of it is refused as stale
            turn.record.extra["transfer"]["caller_stayed"] = False
        session = turn.session
        gone = form.get("CallStatus") in ENDED
        if session.state.waiting in ("connect", "last_resort"):
            result = connect_result(form, record, turn.now)
            if gone or form.get("QueueResult") == "hangup":
                session.caller_hung_up(answered=result.outcome == "answered", wait_s=result.wait_s)
                response = Twiml()
            else:
                response = self._walk(turn, session.resume(result))
            if stayed:
                drop_repeated_answer(session.events)  # answered when the transfer began
        elif gone:
            session.caller_hung_up()
            response = Twiml()
        else:
            response = self._walk(turn, session.resume(form.get("Digits", "")))
        return self._commit(turn, step, response)

    def wait(self) -> Response:
        """Twilio's waitUrl while a caller is queued: hold, then leave at the timeout.
        Read-only: the token says which call, step and limit; nothing is stored."""
        form = webhook_fields(request)
        sid = _need(form, "CallSid")
        step, token = _step_and_token(request)
        query = query_fields(request)
        limit, deadline = query.get("l", ""), query.get("d", "")
        purpose = f"wait:{limit}:{deadline}"
        if step is None or not self.tokens.check(token, sid, step, purpose):
            log.warning("twilio call %s: wait URL with a bad token refused (403)", sid)
            return Response("wait refused\n", status=403, mimetype="text/plain")
        remaining: float | None = None
        if limit and int(limit) > 0:
            queue_time = form.get("QueueTime")
            if queue_time is not None:
                remaining = int(limit) - float(queue_time)
            else:  # a <Redirect> of ours may come without the queue's fields
                remaining = float(deadline) - self.clock().timestamp()
        return _twiml(wait_twiml(self.settings, remaining, self._signed_self(request)))

    def status(self) -> Response:
        """The call's status callback: a caller who hung up while we waited on them."""
        form = webhook_fields(_current_request())
        sid, call_status = _need(form, "CallSid"), _need(form, "CallStatus")
        if call_status not in ENDED:
            return Response(status=204)
        waited_for_action = False
        for _ in range(3):  # a continuation may move the call meanwhile: read again
            record = self.store.get(sid)
            if record is None or record.state.get("done"):
                return Response(status=204)
            turn = self._turn(sid, record)
            state = turn.session.state
            if "transfer" in record.extra and state.waiting == "connect":
                if not waited_for_action:
                    # The transfer's own report (a one-key Dial's action, the room's
                    # end) says how it went, and may come after this callback.
                    waited_for_action = True
                    if self._moved_meanwhile(sid, record.step):
                        continue
                # the caller left during a seat's transfer: they had a person
                if self.transfers is not None:
                    self.transfers.caller_left(turn)
                else:
                    turn.session.caller_hung_up(answered=True)
            elif state.waiting in ("connect", "last_resort"):
                if not waited_for_action:
                    # Twilio also requests the Dial's or Enqueue's action, which says
                    # whether a person answered; the two come in no set order. Let it
                    # close the call; only if it does not come is this one the end.
                    waited_for_action = True
                    if self._moved_meanwhile(sid, record.step):
                        continue
                waited = turn.now - (record.connect_at or turn.now)
                turn.session.caller_hung_up(answered=False, wait_s=max(0.0, waited))
            else:
                turn.session.caller_hung_up()
            if self._commit(turn, record.step, Twiml()).status_code == 200:
                return Response(status=204)
        log.warning("twilio call %s: status callback lost the race three times", sid)
        return Response(status=204)

    def _moved_meanwhile(self, sid: str, step: int) -> bool:
        """Whether another webhook moved the call from `step` within action_wait_s."""
        deadline = time.monotonic() + self.settings.action_wait_s
        while time.monotonic() < deadline:
            time.sleep(0.05)
            record = self.store.get(sid)
            if record is None or record.step != step:
                return True
        return False

    def fallback(self) -> Response:
        """Twilio's fallback URL: something of ours failed; the caller goes to the seats."""
        form = webhook_fields(request)
        log.warning(
            "twilio call %s: fallback URL called (error %s); to the 12345 seats",
            form.get("CallSid", "?"),
            form.get("ErrorCode", "?"),
        )
        return self._to_seats(request, "twilio_fallback")

    def _transfer_ended(self) -> Response:
        if self.transfers is None:
            return self._to_seats(request, "transfers_off")
        return self.transfers.ended()

    def _transfer_status(self) -> Response:
        if self.transfers is None:
            return Response(status=204)
        return self.transfers.status()

    def _keep_waiting(self, req: Request) -> Response:
        """A wait URL that failed: the caller is already queued for a person (where
        <Enqueue> is not allowed), so they keep waiting there."""
        return _twiml(wait_twiml(self.settings, None, self._signed_self(req)))

    def prompt(self, name: str) -> Response:
        folder = self.settings.prompts_dir
        if not _SOUND_NAME.fullmatch(name) or folder is None:
            abort(404)
        if not (Path(folder) / f"{name}.wav").is_file():
            abort(404)
        return send_from_directory(folder, f"{name}.wav", mimetype="audio/wav", max_age=3600)

    # -- the walk --------------------------------------------------------------------

    def _walk(self, turn: _Turn, instruction: Instruction) -> Twiml:
        """Render instructions until one needs the caller or Twilio to answer."""
        session, record = turn.session, turn.record
        response = Twiml()
        render = Renderer(self.settings, session.hotline, session.route)
        action = self._url("continue", s=record.step, t=self._token(turn, CONTINUE))
        record.via = record.connect_at = None
        while True:
            if isinstance(instruction, AnswerCall):
                instruction = session.resume(None)  # Twilio answers with the first verb
                continue
            if isinstance(instruction, HangUp):
                response.hangup()
                return response
            if isinstance(instruction, PlayPrompt) and not instruction.interrupt_digits:
                before, pending = state_copy(session.state), list(session.events)
                render.prompt(response, instruction.prompt)
                following = session.resume(None)
                while isinstance(following, AnswerCall):
                    following = session.resume(None)
                if isinstance(following, HangUp) or (
                    isinstance(following, PlayPrompt) and not following.interrupt_digits
                ):
                    instruction = following
                    continue
                # Keys or a person come next: hear back from Twilio after the prompt first.
                session.state, session.events = SessionState.from_dict(before), pending
                response.redirect(action, method="POST")
                return response
            if isinstance(instruction, PlayPrompt):
                render.keys(
                    response,
                    instruction.prompt,
                    max_digits=1,
                    timeout=self.settings.shortcut_timeout_s,
                    action=action,
                )
                return response
            if isinstance(instruction, CollectDigits):
                render.keys(
                    response,
                    instruction.prompt,
                    max_digits=instruction.max_digits,
                    timeout=instruction.timeout,
                    action=action,
                )
                return response
            assert isinstance(instruction, Connect)
            record.via = render.connect(
                response, instruction, action=action, wait_url=self._wait_url(turn, instruction)
            )
            record.connect_at = turn.now
            return response

    # -- routing, state, events ------------------------------------------------------

    def route(
        self, hotline: Hotline, sid: str, to: str, caller: str | None, now: datetime
    ) -> Route:
        """Twilio numbers map to a line and region; any other `To` is routed as dialed
        (the core sends every number it does not know to the 12345 flow)."""
        entry = self.settings.number_route(to)
        if entry is None:
            return hotline.route(Call(number_key(to), now, caller, call_id=sid))
        return hotline.route(
            Call(entry.line or number_key(to), now, caller, entry.trunk, entry.region, sid)
        )

    def _turn(self, sid: str, record: CallRecord) -> _Turn:
        now = self.clock().timestamp()
        session = CallSession(self.hotline_source(), SessionState.from_dict(record.state), now=now)
        # The turn's URLs carry the next step: this one is spent once the turn commits.
        return _Turn(sid, replace(record, step=record.step + 1), session, now)

    def _commit(self, turn: _Turn, expected_step: int, response: VoiceResponse | Twiml) -> Response:
        """Store the call's new state if nobody moved it meanwhile, then publish."""
        record = turn.record
        seq_base = record.published
        events = turn.session.take_events()
        record.state = state_data(turn.session.state)
        record.published = seq_base + len(events)
        if not self.store.replace(turn.sid, expected_step, record):
            log.warning("twilio call %s: step %d already taken (409)", turn.sid, expected_step)
            return Response("stale continuation\n", status=409, mimetype="text/plain")
        self._publish(turn.sid, record, turn.session.route, events, seq_base)
        return _twiml(response)

    def _publish(
        self,
        sid: str,
        record: CallRecord,
        route: Route,
        events: list[dict[str, Any]],
        seq_base: int,
    ) -> None:
        if not events:
            return
        call = TwilioCall(sid, record.caller, route, seq_base=seq_base, started_at=record.started)
        try:
            self.events.call_events(call, events)
        except Exception:  # publishing must never cost a call
            log.exception("call %s: events not published", sid)

    def _to_seats(self, req: Request, reason: str) -> Response:
        """The region's 12345 seats for this call, whatever else is broken."""
        form = webhook_fields(req)
        sid, to = form.get("CallSid"), form.get("To", "")
        queue = "12345"  # nothing at all could be read: still a queue, never a 500
        try:
            hotline = self.hotline_source()
            queue = hotline.directory.regions[self._region_guess(hotline, to)].seats
            caller, first = form.get("From") or None, _first_webhook(req, form)
            route = self._end_at_seats(hotline, sid, to, caller, reason, first=first)
            queue = hotline.directory.regions[route.region].seats
        except StateUnavailable as exc:
            log.warning("call %s: hand-over to the seats not recorded: %s", sid or "?", exc)
        except Exception:
            log.exception("call %s: could not record the hand-over to the seats", sid or "?")
        return _twiml(seats_twiml(self.settings, queue))

    def _region_guess(self, hotline: Hotline, to: str) -> str:
        """The region by the number map alone: what is left when routing itself failed."""
        entry = self.settings.number_route(to)
        if entry is None:
            return unrouted(hotline.directory, None, None).region
        return unrouted(hotline.directory, entry.region, entry.trunk).region

    def _end_at_seats(
        self,
        hotline: Hotline,
        sid: str | None,
        to: str,
        caller: str | None,
        reason: str,
        *,
        first: bool = False,
    ) -> Route:
        """Record the hand-over so the call counts; return the route whose seats take it.

        ``first``: nothing of this call can have been published before (its incoming
        webhook, or the fallback for it). Then a store that cannot be reached does not
        stop the record: the call's offer and hand-over go to the publisher, which
        keeps them through a Redis outage. Later in a call, its events so far are
        numbered in the state that cannot be read, and `StateUnavailable` is raised."""
        try:
            record = self.store.get(sid) if sid else None
            store_up = True
        except StateUnavailable:
            if not first:
                raise
            record, store_up = None, False
        if sid and record is not None:
            turn = self._turn(sid, record)
            if not turn.session.state.done:
                turn.session.handed_to_switch(reason)
                self._commit(turn, record.step, Twiml())
            return turn.session.route
        now = self.clock()
        route = self.route(hotline, sid or "unknown", to, caller, now)
        if sid and reason != "state_lost":
            # Our incoming-call webhook never answered: the call still counts, at the seats.
            # (A lost state is a call whose offer was published already: not again.)
            session, _ = CallSession.start(hotline, route)
            session.handed_to_switch(reason)
            events = session.take_events()
            record = CallRecord(
                step=1,
                state=state_data(session.state),
                caller=caller,
                started=now.timestamp(),
                published=len(events),
            )
            # (no state kept while the store is away: nothing follows a hand-over)
            if not store_up or self.store.create(sid, record):
                self._publish(sid, record, route, events, seq_base=0)
        return route

    # -- URLs --------------------------------------------------------------------------

    def _url(self, path: str, **query: int | str) -> str:
        """A URL of ours for Twilio to call back. Its query holds numbers and tokens
        (URL-safe base64, never padded), nothing that needs quoting: urlencode cost a
        webhook more than the HMAC behind the token."""
        base = self.settings.public_base_url or request.script_root
        return f"{base}/twilio/{path}?" + "&".join(f"{k}={v}" for k, v in query.items())

    def _token(self, turn: _Turn, purpose: str) -> str:
        return self.tokens.make(turn.sid, turn.record.step, purpose)

    def _wait_url(self, turn: _Turn, connect: Connect) -> str | None:
        limit = connect.timeout or 0
        if not limit and not self.settings.hold_music_url:
            return None  # Twilio's own hold music, as long as the caller waits
        deadline = int(turn.now + limit) if limit else 0
        purpose = f"wait:{limit}:{deadline}"
        return self._url(
            "wait", s=turn.record.step, l=limit, d=deadline, t=self._token(turn, purpose)
        )

    def _signed_self(self, req: Request) -> str:
        """The wait URL again, for its <Redirect> (same query, same token)."""
        base = self.settings.public_base_url or req.script_root
        return f"{base}{req.path}?{req.query_string.decode('latin-1')}"


# -- helpers ---------------------------------------------------------------------------


def connect_result(form: Mapping[str, str], record: CallRecord, now: float) -> ConnectResult:
    """What Twilio reports of an <Enqueue> (QueueResult) or a <Dial> (DialCallStatus)."""
    waited = max(0.0, now - (record.connect_at or now))
    if "QueueResult" in form:
        outcome = QUEUE_OUTCOME.get(form["QueueResult"], "failed")
        return ConnectResult(outcome, _seconds(form.get("QueueTime"), waited))
    if "DialCallStatus" in form:
        outcome = DIAL_OUTCOME.get(form["DialCallStatus"], "failed")
        # DialCallDuration is the talk; what came before it was ringing, i.e. waiting.
        talk = _seconds(form.get("DialCallDuration"), 0.0)
        return ConnectResult(outcome, max(0.0, waited - talk) if talk else waited)
    raise MissingField("QueueResult" if record.via == "queue" else "DialCallStatus")


_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(SessionState))


def state_data(state: SessionState) -> dict[str, Any]:
    """``SessionState.to_dict()`` without its deep copy: the record is serialized at
    once, so sharing the engine's lists and dicts for that moment is safe (and it was
    the costliest step of a webhook)."""
    return {name: getattr(state, name) for name in _STATE_FIELDS}


def state_copy(state: SessionState) -> dict[str, Any]:
    """A copy of the engine state that later steps cannot change, equal to
    ``SessionState.to_dict()``; its lists and dicts are copied by hand rather than
    through dataclasses.asdict, which calls copy.deepcopy on every value in them."""
    return {name: _plain_copy(getattr(state, name)) for name in _STATE_FIELDS}


_IMMUTABLE = (str, int, float, bool, type(None))


def _plain_copy(value: Any) -> Any:
    kind = value.__class__
    if kind is dict:
        return {k: _plain_copy(v) for k, v in value.items()}
    if kind is list:
        return [_plain_copy(v) for v in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


def _first_webhook(req: Request, form: Mapping[str, str]) -> bool:
    """The call's incoming webhook, or Twilio's fallback for it (ErrorUrl names the
    request that failed)."""
    endpoint = req.endpoint or ""
    if endpoint.endswith(".voice"):
        return True
    failed = urlsplit(form.get("ErrorUrl", "")).path
    return endpoint.endswith(".fallback") and failed.endswith("/twilio/voice")


_CALL_SID = re.compile(r"CA[0-9a-f]{32}")


def _sid_for_log(value: str) -> str:
    """A refused request's CallSid as sent: shown whole when it is one (to find the
    call in Twilio's console), else masked and escaped (it may be anything)."""
    return value if _CALL_SID.fullmatch(value) else loggable(value)


def _current_request() -> Request:
    """The request behind Flask's proxy: one look-up instead of one per attribute."""
    return request._get_current_object()  # type: ignore[attr-defined,no-any-return]


def _need(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise MissingField(name)
    return value


def _step_and_token(req: Request) -> tuple[int | None, str]:
    query = query_fields(req)
    try:
        step = int(query.get("s", ""))
    except ValueError:
        step = None
    return step, query.get("t", "")


def _seconds(text: str | None, default: float) -> float:
    try:
        return max(0.0, float(text)) if text not in (None, "") else default
    except ValueError:
        return default


def _not_recorded(req: Request) -> Response:
    return Response("status not recorded\n", status=503, mimetype="text/plain")


def _twiml(response: VoiceResponse | Twiml) -> Response:
    return Response(str(response), mimetype="text/xml")

"""A seat's transfer of a Twilio call: three-way in a <Conference>, one-key by <Dial>.

The routing core plans the transfer and decides its end (ivr/core/transfer.py); this
module moves the calls through Twilio's REST API and follows them by webhook:

- three-way (三方转接): the caller and the seat are moved into the call's conference
  (``ivr-<CallSid>``); the target is rung into it as a participant. The room ends when
  the caller leaves, or when the target leaves; if the target does not answer, the
  room ends when the seat leaves, so the caller is never left alone in it.
- one-key (一键转接): the caller alone is moved to a <Dial> of the target; the seat's
  leg ends with the bridge, so the seat is free at once.

Either way the caller's TwiML carries an action URL, /twilio/transfer-ended, where the
flow goes on: the survey, or the 12345 seats when a one-key target did not answer.
The target's progress comes to /twilio/transfer-status. Both are signed, and bound to
the call and the step the transfer began at.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from flask import Response, request
from twilio.twiml.voice_response import VoiceResponse

from ivr.core.engine import ConnectResult, SessionState
from ivr.core.privacy import mask_text
from ivr.core.routing import Target
from ivr.core.transfer import (
    BadTransferRequest,
    CallNotFound,
    TransferOutcome,
    TransferPlan,
    TransferRefused,
    drop_repeated_answer,
    plan_transfer,
    split_at_answer,
    transfer_outcome,
)
from ivr.twilio.fields import query_fields, webhook_fields
from ivr.twilio.render import DIAL_TIMEOUT_MAX, dial_to, seats_twiml
from ivr.twilio.rest import TwilioRest, TwilioUnavailable
from ivr.twilio.state import CallRecord
from ivr.twilio.webhooks import DIAL_OUTCOME, ENDED, _need, _step_and_token, _twiml

if TYPE_CHECKING:
    from ivr.twilio.webhooks import TwilioWebhooks, _Turn

log = logging.getLogger(__name__)

CALL_SID = re.compile(r"CA[0-9a-f]{32}")

# A participant leg's CallStatus once it is over, as a transfer outcome.
_LEG_OUTCOME = {"no-answer": "noanswer", "busy": "busy", "failed": "failed",
                "canceled": "noanswer"}  # fmt: skip


class TwilioTransfers:
    """Seats' transfers of the calls the Twilio webhooks carry."""

    front_end = "twilio"

    def __init__(
        self,
        hooks: TwilioWebhooks,
        rest: TwilioRest | None,
        why_not: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hooks = hooks
        self.rest = rest
        self.why_not = why_not
        self.clock = clock
        hooks.transfers = self  # its transfer-ended and transfer-status webhooks

    # -- the seat API's side --------------------------------------------------------
    def live_calls(self) -> list[dict[str, Any]]:
        # Twilio calls live in the state store, shared by every worker; a seat names
        # its call by the CallSid its screen pop shows.
        return []

    def knows(self, call_id: str) -> bool:
        record = self.hooks.store.get(call_id)
        return record is not None and not record.state.get("done")

    def transfer(
        self, call_id: str, target_ref: str, seat_call: str = "", method: str | None = None
    ) -> TransferPlan:
        hooks = self.hooks
        record = hooks.store.get(call_id)
        if record is None or record.state.get("done"):
            raise CallNotFound(call_id)
        if self.rest is None:
            raise TwilioUnavailable(self.why_not or "no Twilio REST client")
        turn = hooks._turn(call_id, record)
        session = turn.session
        if session.state.waiting != "connect" or record.via is None:
            raise TransferRefused("the caller is not talking to a seat")
        pending = record.extra.get("transfer")
        if pending and not pending.get("concluded"):
            raise TransferRefused("a transfer of this call is already under way")
        hotline = session.hotline
        plan = plan_transfer(
            hotline.directory, hotline.transfers, session.route, target_ref, method
        )
        if plan.method == "three_way" and not seat_call:
            raise TransferRefused(
                "a three-way transfer on Twilio needs the seat's call (seat_call)"
            )
        if seat_call and (not CALL_SID.fullmatch(seat_call) or seat_call == call_id):
            raise BadTransferRequest(
                f"seat_call {seat_call!r} is not the seat's Twilio call (CA and 32 hex digits)"
            )
        target_to = self._dialable(plan.target)
        if pending:
            # An attempt before this one reported the answer and recorded the wait.
            wait = float(pending.get("wait_s", 0.0))
        else:
            wait = max(0.0, turn.now - (record.connect_at or turn.now))
            self._answered_now(turn, ConnectResult("answered", wait, seat_call or None))
        # The queue's or dial's own report carries the step the caller was connected
        # at: where no attempt moved the caller, that is still the first attempt's.
        connect_step = record.step
        if pending and pending.get("caller_stayed"):
            connect_step = int(pending["connect_step"])
        room = f"ivr-{call_id}"
        turn.record.extra["transfer"] = {
            "method": plan.method,
            "target": asdict(plan.target),
            "ring_timeout": plan.ring_timeout,
            "on_failure": plan.on_failure,
            "seat_call": seat_call,
            "room": room,
            "step": turn.record.step,
            "connect_step": connect_step,
            "wait_s": wait,
            "concluded": False,
        }
        step = turn.record.step
        caller_twiml = self._caller_twiml(call_id, step, plan, room)
        if hooks._commit(turn, record.step, VoiceResponse()).status_code != 200:
            raise TransferRefused("the call moved on meanwhile; try again")
        caller_moved = False
        try:
            self.rest.redirect(call_id, str(caller_twiml))
            caller_moved = True
            if plan.method == "three_way":
                self.rest.redirect(seat_call, str(_room_twiml(room, ends_it=False)))
                _, conference = self.rest.ring_into(
                    room,
                    from_=self._our_number(session.route.line, session.route.region),
                    to=target_to,
                    timeout=plan.ring_timeout,
                    status_callback=hooks._url(
                        "transfer-status", c=call_id, s=step,
                        t=hooks.tokens.make(call_id, step, "transfer-status"),
                    ),
                )  # fmt: skip
                self._remember(call_id, conference=conference)
                self._no_answer_came_first(call_id, step)
        except TwilioUnavailable:
            # Not moved, the caller is still talking to the seat: when the seat hangs
            # up, the queue's or dial's own report must still lead to the survey.
            self._conclude_now(call_id, "failed", caller_stayed=not caller_moved)
            if caller_moved and plan.method == "three_way":
                self._back_to_the_seats(call_id, session)
            raise
        return plan

    def _back_to_the_seats(self, call_id: str, session: Any) -> None:
        """The caller went to the room but the seat could not follow (its call had
        ended, say): rather than leave them alone there, queue them to the seats."""
        assert self.rest is not None
        queue = session.hotline.directory.regions[session.route.region].seats
        try:
            self.rest.redirect(call_id, str(seats_twiml(self.hooks.settings, queue)))
        except TwilioUnavailable as exc:
            log.error("twilio call %s: caller alone in the room: %s", call_id, mask_text(str(exc)))

    # -- webhooks --------------------------------------------------------------------
    def ended(self) -> Response:
        """The caller's action URL after the conference or the one-key <Dial>."""
        hooks = self.hooks
        form = webhook_fields(request)
        sid = _need(form, "CallSid")
        step, token = _step_and_token(request)
        if step is None or not hooks.tokens.check(token, sid, step, "transfer"):
            log.warning("twilio call %s: transfer-ended with a bad token refused (403)", sid)
            return Response("refused\n", status=403, mimetype="text/plain")
        record = hooks.store.get(sid)
        if record is None:
            return hooks._to_seats(request, "state_lost")
        transfer = record.extra.get("transfer") or {}
        if transfer.get("step") != step or transfer.get("ended") or record.state.get("done"):
            return _twiml(VoiceResponse())  # a late or replayed report: nothing to do
        turn = hooks._turn(sid, record)
        turn.record.extra["transfer"]["ended"] = True
        session = turn.session
        result = ConnectResult("answered", float(transfer.get("wait_s", 0.0)),
                               transfer.get("seat_call") or None)  # fmt: skip
        if form.get("CallStatus") in ENDED:
            dialled = DIAL_OUTCOME.get(form.get("DialCallStatus", ""), "caller_left")
            self.caller_left(turn, dialled if transfer["method"] == "one_key" else "caller_left")
            return hooks._commit(turn, record.step, VoiceResponse())
        if transfer["method"] == "one_key":
            verdict = self._conclude(
                turn, DIAL_OUTCOME.get(form.get("DialCallStatus", ""), "failed")
            )
            if verdict is not None and not verdict.answered:
                # back to the 12345 seats: the seat who tried is free already
                session.handed_to_switch("transfer_failed")
                queue = session.hotline.directory.regions[session.route.region].seats
                committed = hooks._commit(turn, record.step, VoiceResponse())
                if committed.status_code != 200:
                    return committed
                return _twiml(seats_twiml(hooks.settings, queue))
        else:
            self._conclude(turn, "noanswer")  # the room ended before the target answered
        instruction = session.resume(result)
        drop_repeated_answer(session.events)
        return hooks._commit(turn, record.step, hooks._walk(turn, instruction))

    def status(self) -> Response:
        """The target leg's progress: answered, or why it never was."""
        hooks = self.hooks
        form = webhook_fields(request)
        sid = query_fields(request).get("c", "")
        step, token = _step_and_token(request)
        if not sid or step is None or not hooks.tokens.check(token, sid, step, "transfer-status"):
            log.warning("twilio call %s: transfer-status with a bad token refused (403)", sid)
            return Response("refused\n", status=403, mimetype="text/plain")
        leg = _need(form, "CallStatus")
        if leg in ("in-progress", "answered", "completed"):
            outcome = "answered"
        elif leg in _LEG_OUTCOME:
            outcome = _LEG_OUTCOME[leg]
        else:
            return Response(status=204)  # initiated, ringing: nothing decided yet
        verdict = self._conclude_now(sid, outcome, step=step)
        if verdict is not None and not verdict.answered:
            record = hooks.store.get(sid)
            transfer = (record.extra.get("transfer") if record else None) or {}
            if transfer.get("conference"):  # else the transfer's start sees to it
                self._after_no_answer(sid, transfer)
        return Response(status=204)

    def _no_answer_came_first(self, sid: str, step: int) -> None:
        """The target's no-answer may have come before the room's id was stored, when
        the status callback could not tie the room to the seat: do it now."""
        try:
            record = self.hooks.store.get(sid)
            transfer = (record.extra.get("transfer") if record else None) or {}
            if transfer.get("step") == step and transfer.get("outcome") not in (None, "answered"):
                self._after_no_answer(sid, transfer)
        except Exception:  # the transfer is under way: the seat's request succeeded
            log.exception("twilio call %s: could not look at the transfer's outcome", sid)

    def _after_no_answer(self, sid: str, transfer: dict[str, Any]) -> None:
        """The target did not answer; caller and seat talk on in the room. The room
        must end when the seat leaves, or the caller would stay there alone. Where that
        cannot be set (the seat has left already, the API failed), the caller is taken
        out of the room, on to where the flow goes after the transfer."""
        if self.rest is None or not transfer.get("seat_call"):
            return
        try:
            self.rest.end_room_when_leaving(transfer["conference"], transfer["seat_call"])
            return
        except TwilioUnavailable as exc:
            log.error("twilio call %s: %s; taking the caller out of the room", sid, exc)
        hooks, step = self.hooks, int(transfer["step"])
        onwards = VoiceResponse()
        onwards.redirect(
            hooks._url("transfer-ended", s=step, t=hooks.tokens.make(sid, step, "transfer")),
            method="POST",
        )
        try:
            self.rest.redirect(sid, str(onwards))
        except TwilioUnavailable as exc:
            log.error("twilio call %s: the caller may be left alone in the room: %s", sid, exc)

    def caller_left(self, turn: _Turn, outcome: str = "caller_left") -> None:
        """The caller hung up while a transfer had them: they had a person, so the
        call ends answered (the answer was published when the transfer began)."""
        transfer = turn.record.extra["transfer"]
        self._conclude(turn, outcome)
        turn.session.caller_hung_up(answered=True, wait_s=float(transfer.get("wait_s", 0.0)))
        drop_repeated_answer(turn.session.events)

    # -- helpers ---------------------------------------------------------------------
    def _dialable(self, target: Target) -> str:
        """Where a participant or a <Dial> can ring the target (never a Twilio queue)."""
        settings = self.hooks.settings
        if target.number:
            destination = settings.dial_destination(target.number)
        else:
            destination = settings.queue_destination(target.queue or "")
        if destination.kind == "queue":
            raise TransferRefused(
                f"{target.id} is a Twilio queue, which cannot be rung into a call: map it to "
                "a number, SIP URI or client in twilio.queues"
            )
        return destination.value

    def _caller_twiml(self, sid: str, step: int, plan: TransferPlan, room: str) -> VoiceResponse:
        hooks = self.hooks
        action = hooks._url("transfer-ended", s=step, t=hooks.tokens.make(sid, step, "transfer"))
        if plan.method == "three_way":
            return _room_twiml(room, ends_it=True, action=action)
        response = VoiceResponse()
        dial = response.dial(action=action, method="POST",
                             timeout=min(DIAL_TIMEOUT_MAX, plan.ring_timeout))  # fmt: skip
        settings = hooks.settings
        target = plan.target
        destination = (
            settings.dial_destination(target.number)
            if target.number
            else settings.queue_destination(target.queue or "")
        )
        dial_to(dial, destination)
        return response

    def _our_number(self, line: str, region: str) -> str:
        """The caller ID for ringing a target: our Twilio number for this line and
        region, else any of the region's, else any we have."""
        numbers = self.hooks.settings.numbers
        ranked = sorted(
            numbers.items(),
            key=lambda item: (item[1].region != region, item[1].line != line, item[0]),
        )
        if not ranked:
            raise TransferRefused("no Twilio number configured to ring a target from")
        return ranked[0][0]

    def _answered_now(self, turn: _Turn, result: ConnectResult) -> None:
        """Record that a person answered (queue or dial), without moving the flow on:
        the engine stays on the connect until the transfer ends."""
        session = turn.session
        before, pending = session.state.to_dict(), list(session.events)
        session.resume(result)
        answered, _ = split_at_answer(session.take_events())
        session.state = SessionState.from_dict(before)
        session.events = pending + answered

    def _conclude(self, turn: _Turn, outcome: str) -> TransferOutcome | None:
        transfer = turn.record.extra.get("transfer")
        if not transfer or transfer.get("concluded"):
            return None
        transfer["concluded"] = True
        transfer["outcome"] = outcome
        plan = TransferPlan(Target(**transfer["target"]), transfer["method"],
                            int(transfer["ring_timeout"]), transfer["on_failure"])  # fmt: skip
        verdict = transfer_outcome(plan, outcome)
        turn.session.events.extend(verdict.events)
        log.info("twilio call %s: %s transfer to %s: %s", turn.sid, plan.method,
                 plan.target.id, outcome)  # fmt: skip
        return verdict

    def _conclude_now(
        self, sid: str, outcome: str, step: int | None = None, caller_stayed: bool = False
    ) -> TransferOutcome | None:
        """Conclude outside the caller's own webhooks."""
        verdicts: list[TransferOutcome] = []

        def conclude(turn: _Turn, record: CallRecord) -> bool:
            transfer = record.extra.get("transfer") or {}
            if step is not None and transfer.get("step") != step:
                return False  # a callback of an earlier transfer of this call
            if caller_stayed:
                turn.record.extra["transfer"]["caller_stayed"] = True
            verdict = self._conclude(turn, outcome)
            verdicts[:] = [verdict] if verdict is not None else []
            return verdict is not None

        return verdicts[0] if self._update(sid, conclude) and verdicts else None

    def _remember(self, sid: str, **facts: str) -> None:
        def remember(turn: _Turn, record: CallRecord) -> bool:
            turn.record.extra["transfer"].update(facts)
            return True

        self._update(sid, remember)

    def _update(self, sid: str, change: Callable[[_Turn, CallRecord], bool]) -> bool:
        """Apply ``change`` to a call in a transfer and store it by compare-and-set,
        reading again when a webhook moved the call meanwhile. ``change`` returns False
        to leave the call alone. True once stored."""
        hooks = self.hooks
        for _ in range(3):
            record = hooks.store.get(sid)
            if record is None or "transfer" not in record.extra:
                return False
            turn = hooks._turn(sid, record)
            if not change(turn, record):
                return False
            if hooks._commit(turn, record.step, VoiceResponse()).status_code == 200:
                return True
        log.warning("twilio call %s: a transfer update lost the race three times", sid)
        return False


def _room_twiml(room: str, *, ends_it: bool, action: str | None = None) -> VoiceResponse:
    response = VoiceResponse()
    options: dict[str, Any] = {"action": action, "method": "POST"} if action else {}
    dial = response.dial(**options)
    dial.conference(room, beep="false", start_conference_on_enter=True,
                    end_conference_on_exit=ends_it)  # fmt: skip
    return response

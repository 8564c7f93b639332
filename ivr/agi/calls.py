"""The FastAGI routes: each carries the routing core's instructions out on a channel.

One handler per route, named as the route (``AGI(agi://host/incoming_call)``). A
handler asks the engine for the next instruction, does it with as few AGI commands as
it can (every round trip costs Asterisk CPU), and resumes the engine with the result.
The engine decides; this module only speaks AGI.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from asterisk.agi import AGIAppError

from ivr.agi import variables as var
from ivr.agi.live import LiveCall, LiveCalls
from ivr.agi.session import AgiSession, BadSession, CallerHungUp
from ivr.core.clock import now_local
from ivr.core.engine import (
    AnswerCall,
    CallSession,
    CollectDigits,
    Connect,
    ConnectResult,
    HangUp,
    Instruction,
    PlayPrompt,
)
from ivr.core.privacy import loggable, mask_number
from ivr.core.routing import Call, Hotline, Route, unrouted
from ivr.core.transfer import TransferOutcome, split_at_answer, transfer_outcome
from ivr.events import EventSink, NoEvents

log = logging.getLogger(__name__)

# QUEUESTATUS values that mean nobody could take the call, as opposed to a timeout.
_QUEUE_NO_MEMBERS = {"FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL"}
_DIAL_OUTCOME = {"ANSWER": "answered", "NOANSWER": "noanswer", "BUSY": "busy"}
# How long a connect (ringing and the conversation after it) may block before we
# stop waiting on it.
_CONVERSATION_CAP = 4 * 3600.0
# GET DATA plays its prompt, then waits up to its timeout for each key: a menu's prompt
# and a caller typing 20 digits slowly can take longer than one command may.
_PROMPT_CAP_S = 120.0
# Why a call was handed to the switch when the controller stopping cut its session
# (or left a seat's transfer to end without it).
CUT_BY_STOP = "controller_stopped"
# Why a call parked for a seat's transfer was ended when it had not come back for
# PARKED_MAX_S.
NEVER_CAME_BACK = "transfer_never_ended"


@dataclass(frozen=True)
class CallInfo:
    """What every event of one call carries."""

    call_id: str
    caller: str | None
    route: Route
    front_end: str = "asterisk"


@dataclass(frozen=True)
class AsteriskSettings:
    """How the controller names things on the Asterisk side."""

    sounds_prefix: str = "ivr"  # STREAM FILE ivr/<prompt>[-<line>]
    dial_template: str = "Local/{number}@ivr-outbound"
    queue_options: str = "c"  # c: carry on (to the survey) when the seat hangs up
    dial_options: str = "g"  # g: carry on when the called side hangs up


@dataclass
class CallController:
    """The FastAGI routes, over a Hotline that may be swapped whole on reload."""

    hotline_source: Callable[[], Hotline]
    settings: AsteriskSettings = field(default_factory=AsteriskSettings)
    events: EventSink = field(default_factory=NoEvents)
    clock: Callable[[], datetime] = now_local
    live: LiveCalls = field(default_factory=LiveCalls)

    def __post_init__(self) -> None:
        if self.live.given_up is None:
            self.live.given_up = lambda live: self._end_parked(live, NEVER_CAME_BACK)
        # The engine's `now` on every resume: the real clock's epoch seconds are
        # time.time(), which costs a tenth of reading a zoned datetime.
        real = self.clock is now_local
        self._now: Callable[[], float] = time.time if real else self._clock_epoch

    def routes(self) -> dict[str, Callable[[AgiSession], None]]:
        return {"incoming_call": self.incoming_call, "transfer_ended": self.transfer_ended}

    # -- route: incoming_call ------------------------------------------------------

    def incoming_call(self, agi: AgiSession) -> None:
        """A call for 12345, a legacy number or a DID: walk it through its flows."""
        hotline = self.hotline_source()  # one configuration for the whole call
        env = agi.env
        args = agi.args
        dnid = env.get("agi_dnid", "")
        trunk = args[0] if args and args[0] else None
        region = args[1] if len(args) > 1 and args[1] else None
        try:
            call = Call(
                dialed=dnid if dnid not in ("", "unknown") else env.get("agi_extension", ""),
                now=self.clock(),
                caller=env.get("agi_callerid") or None,
                trunk=trunk,
                region=region,
                call_id=agi.uniqueid,
            )
            route = hotline.route(call)
        except Exception:
            # Returning leaves the caller to the glue's 12345 queue; the call still counts.
            log.exception("call %s: could not be routed; handing the caller to the seats",
                          loggable(agi.uniqueid))  # fmt: skip
            self._record_unrouted(agi, hotline, region, trunk)
            return
        info = CallInfo(call.call_id, call.caller, route)
        if log.isEnabledFor(logging.INFO):  # the masking is work of its own
            log.info(
                "call %s to %s from %s: %s in %s (%s)",
                loggable(call.call_id),
                mask_number(call.dialed),  # a forwarded call may carry a mobile number
                mask_number(call.caller),
                route.mode.value,
                route.region,
                route.region_source,
            )
        session, instruction = CallSession.start(hotline, route, now=call.now.timestamp())
        channel = _Channel(agi, hotline, route, self.settings)
        live = LiveCall(info, session, agi.env.get("agi_channel", ""))
        self.live.add(live)
        try:
            channel.announce(args[2] if len(args) > 2 else "")
            self._walk(channel, session, instruction, info, live)
        except CallerHungUp:
            if agi.cut:
                session.handed_to_switch(CUT_BY_STOP)
            else:
                session.caller_hung_up()  # gone before the flow began (the walk ends its own)
            raise
        except BadSession:
            # Asterisk's side broke off mid-call: close, and the glue queues the caller.
            session.handed_to_switch("bad_session")
            raise
        except Exception:
            # Any failure of ours: the glue queues the caller to the region's 12345 seats.
            log.exception(
                "call %s: controller failed; handing the caller to the seats", call.call_id
            )
            session.handed_to_switch("controller_error")
            channel.hand_over()
        finally:
            if not live.parked.is_set():
                self.live.remove(call.call_id)
            self._publish(info, session)

    def _record_unrouted(
        self, agi: AgiSession, hotline: Hotline, region: str | None, trunk: str | None
    ) -> None:
        try:
            route = unrouted(hotline.directory, region, trunk)
            session, _ = CallSession.start(hotline, route)
            session.handed_to_switch("controller_error")
            info = CallInfo(agi.uniqueid, agi.env.get("agi_callerid") or None, route)
            self._publish(info, session)
        except Exception:
            log.exception("call %s: not recorded", loggable(agi.uniqueid))

    def _walk(
        self,
        channel: _Channel,
        session: CallSession,
        instruction: Instruction,
        info: CallInfo,
        live: LiveCall | None = None,
    ) -> None:
        while not isinstance(instruction, HangUp):
            self._publish(info, session)
            try:
                result = channel.do(instruction)
            except CallerHungUp:
                if channel.agi.cut:  # our side closed: the caller's handler records it
                    raise
                answered, wait_s = channel.after_hangup(instruction)
                # Moved out of Queue()/Dial() by a seat's transfer, or gone? The switch's
                # own facts say whether a person had answered; only then is it a move.
                if live is not None and answered and live.may_park():
                    self._park(live, wait_s)
                    return
                session.caller_hung_up(answered=answered, wait_s=wait_s, now=self._now())
                self._publish(info, session)
                raise
            instruction = session.resume(result, now=self._now())
        self._publish(info, session)
        channel.hang_up(instruction)

    def _clock_epoch(self) -> float:
        return self.clock().timestamp()

    def _publish(self, info: CallInfo, session: CallSession) -> None:
        events = session.take_events()
        if not events:
            return
        self._send(info, events)

    def _send(self, info: CallInfo, events: list[dict[str, object]]) -> None:
        try:
            self.events.call_events(info, events)
        except Exception:  # publishing must never cost a call
            log.exception("call %s: events not published", info.call_id)

    # -- a seat's transfer -----------------------------------------------------------

    def _park(self, live: LiveCall, wait_s: float) -> None:
        """A seat's transfer moved the caller out of Queue()/Dial(): the person had
        answered. Record that, keep where the flow goes on after the transfer, and let
        this session end; transfer_ended takes the call up again."""
        session = live.session
        live.next_instruction = session.resume(
            ConnectResult("answered", wait_s, live.talking_to or None), now=self._now()
        )
        now, later = split_at_answer(session.take_events())
        with live.events_lock:
            self._send(live.info, now)
            live.held_events = later
        live.parked.set()
        log.info("call %s: handed to a %s transfer", live.info.call_id,
                 live.transfer.method if live.transfer else "?")  # fmt: skip

    def end_parked_call(self, live: LiveCall, wait_s: float = 5.0) -> None:
        """The caller hung up just as a transfer was starting, and the transfer then
        failed: the session parked the call for a transfer_ended that will never come.
        End it as transfer_ended would for a hang-up: they had been talking to a seat."""
        live.parked.wait(wait_s)  # the session may still be parking it
        self._end_held(live, lambda session: session.caller_hung_up(answered=True))
        self.live.remove(live.info.call_id)
        log.info("call %s: caller left as a transfer was starting", live.info.call_id)

    def end_parked_calls(self) -> int:
        """The controller is stopping, its FastAGI sessions over: a call parked for a
        seat's transfer will come back (transfer_ended) to a controller that does not
        know it, or to none (the glue then queues the caller), and its record would
        never end. End each as handed to the switch. Returns how many."""
        parked = [live for live in self.live.all() if live.parked.is_set()]
        for live in parked:
            self.live.remove(live.info.call_id)
            self._end_parked(live, CUT_BY_STOP)
        return len(parked)

    def _end_parked(self, live: LiveCall, reason: str) -> None:
        # A target still ringing is left to ring (it may yet join caller and seat);
        # its outcome comes after the call's end, and is not reported.
        self._end_held(live, lambda session: session.handed_to_switch(reason))
        log.info("call %s: ended while in a seat's transfer (%s)", live.info.call_id, reason)

    def _end_held(self, live: LiveCall, end: Callable[[CallSession], None]) -> None:
        """End a parked call's record here: the steps held for after the transfer
        never ran."""
        with live.events_lock:
            live.held_events = []
            end(live.session)
            self._send(live.info, live.session.take_events())

    def conclude_transfer(self, live: LiveCall, outcome: str) -> TransferOutcome | None:
        """Report a transfer's end once (the AMI watcher and transfer_ended may both try).

        Claimed and sent under the call's events lock: whoever comes second waits for
        the report to be out, so a call's end is never published before its transfer's.
        A call whose record was ended without the transfer (`end_parked_calls`) gets
        no report after its end."""
        with live.events_lock:
            if live.session.state.done:
                return None
            plan = live.conclude_transfer()
            if plan is None:
                return None
            verdict = transfer_outcome(plan, outcome)
            self._send(live.info, list(verdict.events))
        log.info("call %s: %s transfer to %s: %s", live.info.call_id, plan.method,
                 plan.target.id, outcome)  # fmt: skip
        return verdict

    # -- route: transfer_ended -------------------------------------------------------

    def transfer_ended(self, agi: AgiSession) -> None:
        """The caller is back from a seat's transfer (or left during it): go on with the
        flow (the survey), or, when a one-key target did not answer, to the seats."""
        args = agi.args
        kind = args[0] if args else ""
        status = args[1] if len(args) > 1 else ""
        live = self.live.get(agi.uniqueid)
        if live is None or not live.parked.is_set():
            # (restarted since the transfer began): the glue's preset fallback queues
            # them, as it does when we cannot be reached at all.
            log.warning("call %s: back from a transfer the controller does not know",
                        agi.uniqueid)  # fmt: skip
            return
        session, info = live.session, live.info
        channel = _Channel(agi, session.hotline, info.route, self.settings)
        try:
            if kind == "hangup":
                method = live.transfer.method if live.transfer else ""
                if method == "one_key":
                    self.conclude_transfer(live, _DIAL_OUTCOME.get(status, "caller_left"))
                else:
                    self.conclude_transfer(live, "caller_left")
                session.caller_hung_up(answered=True)  # the survey never started
                return
            if kind == "one_key":
                verdict = self.conclude_transfer(live, _DIAL_OUTCOME.get(status, "failed"))
                if verdict is not None and not verdict.answered:
                    # back to the 12345 seats: the seat who tried is free already
                    session.handed_to_switch("transfer_failed")
                    channel.hand_over()
                    return
            else:
                # The room closed with the caller in it: seat and target have left.
                self.conclude_transfer(live, "noanswer")
            with live.events_lock:
                self._send(info, live.held_events)
                live.held_events = []
            assert live.next_instruction is not None
            self._walk(channel, session, live.next_instruction, info)
        except CallerHungUp:
            if agi.cut:
                session.handed_to_switch(CUT_BY_STOP)
            else:
                session.caller_hung_up(answered=True)
            raise
        except BadSession:
            session.handed_to_switch("bad_session")
            raise
        except Exception:
            log.exception("call %s: controller failed after a transfer", info.call_id)
            session.handed_to_switch("controller_error")
            channel.hand_over()
        finally:
            self.live.remove(info.call_id)
            with live.events_lock:
                self._publish(info, session)


class _Channel:
    """One call's channel: instructions in, results out, the fewest AGI commands."""

    def __init__(
        self, agi: AgiSession, hotline: Hotline, route: Route, settings: AsteriskSettings
    ) -> None:
        self.agi = agi
        self.hotline = hotline
        self.route = route
        self.settings = settings
        self.variables: dict[str, str] = {}
        self.connect_started = 0.0

    def announce(self, glue_fallback: str) -> None:
        """Correct the glue's fallback queue when the call's region is not the trunk's
        (a DID of another region): a failure later must still reach the right seats."""
        seats = self.hotline.directory.regions[self.route.region].seats
        self.variables[var.FALLBACK_QUEUE] = glue_fallback
        self._set({var.FALLBACK_QUEUE: seats})

    def hand_over(self) -> None:
        """Leave the call to the glue, which queues it to FALLBACK_QUEUE."""
        self.announce(self.variables.get(var.FALLBACK_QUEUE, ""))
        self._set({var.RESULT: var.RESULT_FALLBACK})

    def do(self, instruction: Instruction) -> str | ConnectResult | None:
        agi = self.agi
        if isinstance(instruction, AnswerCall):
            if instruction.early_media:
                agi.appexec("Progress")
            else:
                agi.answer()
            return None
        if isinstance(instruction, PlayPrompt):
            try:
                return (
                    agi.stream_file(self.sound(instruction.prompt), instruction.interrupt_digits)
                    or None
                )
            except AGIAppError:
                log.warning("prompt %s not playable; going on", self.sound(instruction.prompt))
                return None
        if isinstance(instruction, CollectDigits):
            keys_s = instruction.max_digits * instruction.timeout
            try:
                with agi.command_timeout(_PROMPT_CAP_S + keys_s, renew=False):
                    return agi.get_data(
                        self.sound(instruction.prompt),
                        instruction.timeout * 1000,
                        instruction.max_digits,
                    )
            except AGIAppError:
                log.warning("prompt %s not playable; no keys", self.sound(instruction.prompt))
                return ""
        assert isinstance(instruction, Connect)
        return self.connect(instruction)

    def connect(self, connect: Connect) -> ConnectResult:
        agi = self.agi
        tags = {"line": self.route.line, "region": self.route.region,
                "mode": self.route.mode.value, "route": connect.flow, **connect.tags}  # fmt: skip
        # The seat's screen pop also gets the call id: what its transfer request names.
        screen = var.tags_value({**tags, "call_id": agi.uniqueid})
        self._set({var.CALL: screen, var.CDR_TAGS: var.tags_value(tags)})
        timeout = connect.timeout
        self.connect_started = time.monotonic()
        target = connect.target
        # Queue and Dial return when the conversation ends, not when the ringing does:
        # however long the ring timeout, the answer may come hours later.
        # A -1 from Queue or Dial is the caller leaving, however late Asterisk says so.
        with agi.command_timeout(_CONVERSATION_CAP), agi.hangup_expected():
            if target.queue:
                agi.appexec(
                    "Queue", f"{target.queue},{self.settings.queue_options},,,{timeout or ''}"
                )
                return self._queue_result(agi.get_full_variable(var.QUEUE_FACTS))
            dial = self.settings.dial_template.format(number=target.number)
            agi.appexec("Dial", f"{dial},{timeout or ''},{self.settings.dial_options}")
            return self._dial_result(agi.get_full_variable(var.DIAL_FACTS))

    def _queue_result(self, facts: str) -> ConnectResult:
        status, abandoned, hold, member = _fields(facts, 4)
        waited = _seconds(hold, time.monotonic() - self.connect_started)
        if status == "TIMEOUT":
            return ConnectResult("noanswer", waited)
        if status in _QUEUE_NO_MEMBERS:
            return ConnectResult("busy", waited)
        if abandoned == "TRUE":
            return ConnectResult("failed", waited)
        return ConnectResult("answered", waited, member or None)

    def _dial_result(self, facts: str) -> ConnectResult:
        status, dialed, answered, peer = _fields(facts, 4)
        total = _seconds(dialed, time.monotonic() - self.connect_started)
        talk = _seconds(answered, 0.0)
        return ConnectResult(
            _DIAL_OUTCOME.get(status, "failed"), max(0.0, total - talk), peer or None
        )

    def after_hangup(self, instruction: Instruction) -> tuple[bool, float]:
        """The caller left: were they talking to a person, and how long had they waited?

        Asterisk still answers variable reads on the dead channel; if it cannot, we
        count the call as abandoned: a needless callback beats a lost caller.
        """
        if not isinstance(instruction, Connect):
            return False, 0.0
        elapsed = time.monotonic() - self.connect_started
        if instruction.target.queue:
            facts = self.agi.variable_after_hangup(var.QUEUE_FACTS)
            if facts is None:
                return False, elapsed
            _, abandoned, hold, _ = _fields(facts, 4)
            answered = abandoned != "TRUE" and hold != ""
            return answered, _seconds(hold, elapsed) if answered else elapsed
        facts = self.agi.variable_after_hangup(var.DIAL_FACTS)
        if facts is None:
            return False, elapsed
        status, dialed, talk, _ = _fields(facts, 4)
        if status == "ANSWER" or _seconds(talk, 0.0) > 0:
            return True, max(0.0, _seconds(dialed, elapsed) - _seconds(talk, 0.0))
        return False, elapsed

    def hang_up(self, instruction: HangUp) -> None:
        self.agi.hangup()

    def sound(self, prompt: str) -> str:
        entry = self.hotline.catalog.prompts.get(prompt)
        name = f"{prompt}-{self.route.line}" if entry and entry.per_line else prompt
        return f"{self.settings.sounds_prefix}/{name}"

    def _set(self, values: dict[str, str]) -> None:
        """Set only what changed, in one command where it can: each AGI command is a
        round trip that costs Asterisk more than the dialplan application it runs."""
        changed = {n: v for n, v in values.items() if self.variables.get(n) != v}
        if len(changed) > 1 and not any(map(_MSET_UNSAFE.search, changed.values())):
            # MSet(a=1,b=2) sets them all; it splits at commas, so only plain values go.
            self.agi.appexec("MSet", ",".join(f"{n}={v}" for n, v in changed.items()))
        else:
            for name, value in changed.items():
                self.agi.set_variable(name, value)
        self.variables.update(changed)


# What MSet's argument parser would split or unquote: such values go one SET VARIABLE each.
_MSET_UNSAFE = re.compile(r'[,"\\\r\n]')


def _fields(facts: str, count: int) -> list[str]:
    return (facts.split("|") + [""] * count)[:count]


def _seconds(text: str, default: float) -> float:
    try:
        return float(text)
    except ValueError:
        return default

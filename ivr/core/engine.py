"""The call engine: walks a call through its flows, one instruction at a time.

A front-end (FastAGI, Twilio) asks for the next instruction, carries it out on the
channel and resumes the session with what happened, and with the time (`now`, epoch
seconds) where it has it. The engine does no I/O and reads no clock; its whole state is
plain data, so a webhook front-end can keep it between
requests. Whatever goes wrong inside a flow, the call ends at the region's 12345 seats:
that rule lives in :meth:`CallSession._fallback` and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ivr.core.dialplan import (
    GRADES,
    Answer,
    Branch,
    Callback,
    Collect,
    Dial,
    Emit,
    Hangup,
    Play,
    Queue,
    SetTags,
    Step,
    Survey,
    Transfer,
)
from ivr.core.directory import Mode
from ivr.core.routing import (
    ABANDONED_FLOW,
    FALLBACK_FLOW,
    Hotline,
    Route,
    Target,
    resolve_target,
)

OUTCOMES = ("answered", "noanswer", "busy", "failed")
MAX_FALLBACKS = 3


# -- instructions: what the front-end must do next ---------------------------------


@dataclass(frozen=True)
class AnswerCall:
    early_media: bool = False


@dataclass(frozen=True)
class PlayPrompt:
    prompt: str
    interrupt_digits: str = ""  # keys that cut it short; resume with the key or None


@dataclass(frozen=True)
class CollectDigits:
    prompt: str
    max_digits: int
    timeout: int  # resume with the keys pressed, "" for none


@dataclass(frozen=True)
class Connect:
    """Put the caller through to a person; resume with a :class:`ConnectResult`."""

    target: Target
    timeout: int | None  # None: until answered or the caller gives up
    via: str  # queue | dial | transfer
    method: str | None = None  # one_key | three_way for a transfer
    tags: dict[str, str] = field(default_factory=dict)
    flow: str = ""  # the flow the call is in: reported with the call as its route


@dataclass(frozen=True)
class HangUp:
    reason: str


Instruction = AnswerCall | PlayPrompt | CollectDigits | Connect | HangUp


@dataclass(frozen=True)
class ConnectResult:
    outcome: str  # answered | noanswer | busy | failed
    wait_s: float = 0.0
    answered_by: str | None = None  # the seat or member that answered, if known

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown connect outcome {self.outcome!r}")


# -- state ---------------------------------------------------------------------------


@dataclass
class SessionState:
    """Everything a call carries between instructions; plain data, JSON-able."""

    route: dict[str, Any]
    flow: str = ""
    step: str = ""
    waiting: str = ""  # the instruction kind the front-end owes us a result for
    visits: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    pending_target: dict[str, Any] | None = None
    landed: dict[str, Any] | None = None
    end: dict[str, str] | None = None
    steps_taken: int = 0
    connects: int = 0
    waited_s: float = 0.0  # time spent waiting for people on connects that did not answer
    # When the first and the latest connect were handed out (epoch seconds; None when
    # the front-end gave no time): a caller's wait runs from the first, prompts between
    # attempts included.
    first_connect_at: float | None = None
    connect_at: float | None = None
    # Times a failure of ours sent the call to the 12345 seats (a missing edge, a
    # broken flow, a front-end giving up); `fallbacks` also lists the flows' own edges.
    failures: int = 0
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        return cls(**data)


def route_to_dict(route: Route) -> dict[str, Any]:
    # By hand, not dataclasses.asdict: this runs for every call and asdict deep-copies.
    return {
        "line": route.line,
        "mode": route.mode.value,
        "region": route.region,
        "region_source": route.region_source,
        "flow": route.flow,
        "known": route.known,
        "facts": dict(route.facts),
        "line_name": route.line_name,
        "department": route.department,
    }


def route_from_dict(data: dict[str, Any]) -> Route:
    return Route(**{**data, "mode": Mode(data["mode"])})


class CallSession:
    """One call's walk through the flows."""

    def __init__(
        self,
        hotline: Hotline,
        state: SessionState,
        route: Route | None = None,
        *,
        now: float | None = None,
    ) -> None:
        """`route`, when given, is `state.route` as a Route already (saves rebuilding it).
        `now`: the time of what the front-end is about to report (epoch seconds)."""
        self.hotline = hotline
        self.state = state
        self.route = route_from_dict(state.route) if route is None else route
        self.events: list[dict[str, Any]] = []
        self.now = now
        self._flows = hotline.flow_index
        self._transition_prompts = hotline.transition_prompts

    # -- front-end API -----------------------------------------------------------

    @classmethod
    def start(
        cls, hotline: Hotline, route: Route, *, now: float | None = None
    ) -> tuple[CallSession, Instruction]:
        session = cls(hotline, SessionState(route=route_to_dict(route)), route, now=now)
        session._event("call_offered", known=route.known, region_source=route.region_source)
        return session, session._goto("@" + route.flow, origin="start")

    def resume(
        self, result: str | ConnectResult | None = None, *, now: float | None = None
    ) -> Instruction:
        """Carry on after the pending instruction with what it gave (at `now`)."""
        if now is not None:
            self.now = now
        state = self.state
        if state.done:
            raise RuntimeError("the call has ended")
        step = self._current()
        if state.waiting == "connect" and not isinstance(result, ConnectResult):
            raise TypeError("a connect resumes with a ConnectResult")
        waiting, state.waiting = state.waiting, ""
        if waiting == "connect":
            assert isinstance(result, ConnectResult)
            return self._connected(step, result)
        if waiting == "last_resort":
            if isinstance(result, ConnectResult) and result.outcome == "answered":
                self._landed(self._target_from_state(), result)
            return self._finish(HangUp("last_resort"))
        if isinstance(step, Play):
            self._prompt_done(step.prompt)
            key = result if isinstance(result, str) else None
            if key and key in step.shortcuts:
                self._event("keys_pressed", keys=key, step=step.id)
                return self._goto(step.shortcuts[key], origin=step.id)
            return self._goto(self._next_of(step), origin=step.id)
        if isinstance(step, Collect):
            self._prompt_done(step.prompt)
            keys = result if isinstance(result, str) else ""
            if keys:
                self._event("keys_pressed", keys=keys, step=step.id)
            return self._goto(step.choices.get(keys, step.otherwise), origin=step.id)
        if isinstance(step, Survey):
            self._prompt_done(step.prompt)
            key = result if isinstance(result, str) else ""
            grade = step.grades.get(key[:1]) if key else None
            if grade:
                self._event("survey_result", grade=grade, score=GRADES[grade], key=key[:1])
            return self._goto(self._next_of(step), origin=step.id)
        # answer: nothing to learn from the result
        return self._goto(self._next_of(step), origin=step.id)

    def caller_hung_up(
        self, answered: bool = False, wait_s: float = 0.0, *, now: float | None = None
    ) -> None:
        """The caller left. If they were waiting for a person, that is an abandoned call:
        while queued or rung, and also between attempts (a callback offer after the
        queue was full or nobody answered), as long as nobody answered and no callback
        was booked."""
        if now is not None:
            self.now = now
        state = self.state
        if state.done:
            return
        connecting = state.waiting in ("connect", "last_resort")
        between_attempts = (
            not connecting
            and state.connects > 0  # a queue that refused at once was still asked
            and (state.flow, state.step) in self.hotline.may_connect  # not told to go
            and state.landed is None
            and (state.end or {}).get("kind") != "callback"
        )
        waited = not answered and (connecting or between_attempts)
        if connecting and answered:
            self._landed(self._target_from_state(), ConnectResult("answered", wait_s))
        state.waiting = ""
        if waited:
            target = self._target_from_state()
            total = self._total_wait(wait_s if connecting else None)
            self._event(
                "abandoned",
                target_kind=target.kind,
                target=target.id,
                wait_s=wait_s,
                total_wait_s=total,
            )
            state.tags["abandoned_wait_s"] = f"{total:.0f}"
            self._run_silent(ABANDONED_FLOW)
        if state.end is None:
            state.end = {"kind": "hangup", "id": "caller_hung_up"}
        self._finish(None)

    def handed_to_switch(self, reason: str) -> None:
        """A front-end gave up on the call (a failure of ours): the switch itself puts
        the caller through to the region's 12345 seats. Record that and end."""
        state = self.state
        if state.done:
            return
        seats = self.hotline.directory.regions[self.route.region].seats
        state.fallbacks.append({"from": state.step or "start", "reason": reason, "to": "@seats"})
        state.failures += 1
        state.end = {"kind": "seats", "id": seats}
        self._finish(None)

    def summary(self) -> dict[str, Any]:
        """Where the call went: the shape `ivr simulate --json` prints."""
        state = self.state
        target = state.landed or state.end or {"kind": "hangup", "id": "in_progress"}
        return {
            "line": self.route.line,
            "mode": self.route.mode.value,
            "region": self.route.region,
            "region_source": self.route.region_source,
            "known": self.route.known,
            "prompts": list(state.prompts),
            "tags": dict(state.tags),
            "target": {k: v for k, v in target.items() if v is not None},
            "fallbacks": list(state.fallbacks),
        }

    def take_events(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events

    # -- walking -----------------------------------------------------------------

    def _current(self) -> Step:
        return self._flows[self.state.flow].steps[self.state.step]

    def _next_of(self, step: Step) -> str | None:
        return step.next or self._flows[self.state.flow].after[step.id]

    def _goto(self, ref: str | None, origin: str) -> Instruction:
        """Follow a reference, running steps that need nothing from the channel."""
        state = self.state
        while True:
            if ref is None:
                return self._fallback("no_edge", origin)
            if ref.startswith("@"):
                flow_id = ref[1:]
                if flow_id not in self._flows:
                    return self._fallback("unknown_flow", origin)
                state.flow, state.step = flow_id, self._flows[flow_id].start
            else:
                state.step = ref
            state.steps_taken += 1
            if state.steps_taken > self.hotline.step_budget:
                return self._fallback("step_budget", origin)
            step = self._current()
            key = f"{state.flow}:{step.id}"
            state.visits[key] = state.visits.get(key, 0) + 1
            if step.max_visits and state.visits[key] > step.max_visits:
                origin, ref = step.id, step.on_exhausted
                if ref is None:
                    return self._fallback("max_visits", step.id)
                continue
            origin = step.id
            outcome = self._enter(step)
            if isinstance(outcome, _Stop):
                return outcome.instruction
            ref = outcome

    def _enter(self, step: Step) -> str | _Stop | None:
        """Run a step: a reference to go on to, or an instruction to hand out."""
        state, route = self.state, self.route
        if isinstance(step, Branch):
            value = route.facts.get(step.on)
            return step.cases.get(value, step.otherwise) if value else step.otherwise
        if isinstance(step, SetTags):
            fields = route.tag_fields()
            state.tags.update({k: v.format_map(fields) for k, v in step.tags.items()})
            return self._next_of(step)
        if isinstance(step, Emit):
            fields = route.tag_fields()
            self._event(step.event, **{k: v.format_map(fields) for k, v in step.fields.items()})
            return self._next_of(step)
        if isinstance(step, Callback):
            self._callback(step.reason)
            return self._next_of(step)
        if isinstance(step, Hangup):
            if state.end is None or state.end.get("kind") != "callback":
                state.end = {"kind": "hangup", "id": step.reason}
            return _Stop(self._finish(HangUp(step.reason)))
        state.waiting = step.kind
        if isinstance(step, Answer):
            return _Stop(AnswerCall(step.early_media))
        if isinstance(step, Play):
            return _Stop(PlayPrompt(step.prompt, "".join(step.shortcuts)))
        if isinstance(step, Collect):
            return _Stop(CollectDigits(step.prompt, step.max_digits, step.timeout))
        if isinstance(step, Survey):
            return _Stop(CollectDigits(step.prompt, 1, step.timeout))
        assert isinstance(step, Queue | Dial | Transfer)
        target = resolve_target(self.hotline.directory, route, step.to)
        if target is None:
            state.waiting = ""
            return _Stop(self._fallback("unresolved", step.to))
        timeout = step.timeout
        if timeout == "answer_timeout":
            timeout = self.hotline.directory.answer_timeout(route.line)
        state.waiting = "connect"
        state.pending_target = _target_dict(target)
        self._connecting()
        self._event("queued", via=step.kind, target_kind=target.kind, target=target.id)
        method = step.method if isinstance(step, Transfer) else None
        return _Stop(Connect(target, timeout, step.kind, method, dict(state.tags), state.flow))

    def _connected(self, step: Step, result: ConnectResult) -> Instruction:
        assert isinstance(step, Queue | Dial | Transfer)
        target = self._target_from_state()
        if result.outcome == "answered":
            self._landed(target, result)
            return self._goto(step.on.answered or self._next_of(step), origin=step.id)
        self.state.waited_s += result.wait_s
        if step.kind != "queue":
            self._event(
                "transfer_failed", kind=target.kind, target=target.id, outcome=result.outcome
            )
        ref = getattr(step.on, result.outcome)
        if ref is None:
            return self._fallback(result.outcome, target.id)
        self.state.fallbacks.append({"from": target.id, "reason": result.outcome, "to": ref})
        return self._goto(ref, origin=step.id)

    def _landed(self, target: Target, result: ConnectResult) -> None:
        self.state.landed = {"kind": target.kind, "id": target.id}
        self.state.pending_target = None
        # total_wait_s: from the first queue to this answer, the 15-second rate's measure
        self._event(
            "answered",
            target_kind=target.kind,
            target=target.id,
            wait_s=result.wait_s,
            total_wait_s=self._total_wait(result.wait_s),
            answered_by=result.answered_by or "",
        )
        if target.kind in ("emergency", "utility", "sub_centre"):
            self._event("transferred", kind=target.kind, target=target.id)

    def _callback(self, reason: str) -> None:
        if self.route.facts.get("caller") == "withheld":
            return  # no number to call back: no task, and no event saying there is one
        region = self.hotline.directory.regions[self.route.region]
        kind = "missed_call_callback_created" if reason == "abandoned" else "callback_requested"
        abandoned_wait = self.state.tags.get("abandoned_wait_s")
        self._event(
            kind,
            reason=reason,
            callback_list=region.callback_list,
            # how long they had waited for a person: a callback desk calls the longest first
            wait_s=float(abandoned_wait) if abandoned_wait else self._total_wait(None),
        )
        self.state.end = {"kind": "callback", "id": region.callback_list}

    def _prompt_done(self, prompt: str) -> None:
        self.state.prompts.append(prompt)
        transition = prompt in self._transition_prompts
        self._event("prompt_played", prompt=prompt, transition=transition)

    # -- the one place a failure of ours turns into the 12345 seats -----------------

    def _fallback(self, reason: str, origin: str) -> Instruction:
        self.state.fallbacks.append({"from": origin, "reason": reason, "to": "@seats"})
        self.state.failures += 1
        ref = self._fallback_ref()
        if ref is None:
            return self._last_resort()
        return self._goto(ref, origin=origin)

    def _fallback_ref(self) -> str | None:
        state = self.state
        entries = sum(1 for f in state.fallbacks if f["to"] == "@seats")
        if state.flow == FALLBACK_FLOW or entries > MAX_FALLBACKS:
            return None
        state.steps_taken = 0  # the fallback flow gets a budget of its own
        return "@" + FALLBACK_FLOW

    def _last_resort(self) -> Instruction:
        """The fallback flow itself failed: queue to the seats with no timeout, then end."""
        region = self.hotline.directory.regions[self.route.region]
        target = Target("seats", region.seats, queue=region.seats)
        self.state.pending_target = _target_dict(target)
        self.state.waiting = "last_resort"
        self._connecting()
        self._event("queued", via="queue", target_kind="seats", target=target.id)
        return Connect(target, None, "queue", None, dict(self.state.tags), self.state.flow)

    # -- helpers -----------------------------------------------------------------

    def _run_silent(self, flow_id: str) -> None:
        """Run a flow for a caller who has gone: only steps that need no channel."""
        if flow_id not in self._flows:
            self._callback("abandoned")
            return
        ref: str | None = "@" + flow_id
        budget = self.hotline.step_budget
        while ref and budget > 0:
            budget -= 1
            if ref.startswith("@"):
                self.state.flow = ref[1:]
                self.state.step = self._flows[self.state.flow].start
            else:
                self.state.step = ref
            step = self._current()
            if isinstance(step, Hangup):
                break
            if not isinstance(step, Branch | SetTags | Emit | Callback):
                break  # `ivr check` refuses media steps here; never act on a dead channel
            nxt = self._enter(step)
            ref = nxt if isinstance(nxt, str) else None

    def _connecting(self) -> None:
        state = self.state
        state.connects += 1
        if self.now is not None:
            state.connect_at = self.now
            if state.first_connect_at is None:
                state.first_connect_at = self.now

    def _total_wait(self, this_attempt: float | None) -> float:
        """How long the caller has waited for a person, from the first queue or dial:
        to the end of `this_attempt`'s wait, or (None) to now, between attempts.
        The prompts between attempts count (an overflow offer is still a wait); the
        connects' own waits alone are the floor, and all there is without times."""
        state = self.state
        waited = state.waited_s + (this_attempt or 0.0)
        first = state.first_connect_at
        if first is None:
            return waited
        if this_attempt is None:
            elapsed = (self.now - first) if self.now is not None else 0.0
        else:
            elapsed = (state.connect_at or first) - first + this_attempt
        return max(waited, elapsed)

    def _target_from_state(self) -> Target:
        return Target(**(self.state.pending_target or {"kind": "seats", "id": "unknown"}))

    def _finish(self, instruction: HangUp | None) -> HangUp:
        state = self.state
        state.done = True
        state.waiting = ""
        target = state.landed or state.end or {}
        self._event(
            "call_ended",
            answered=state.landed is not None,
            target_kind=target.get("kind", ""),
            target=target.get("id", ""),
            # failures of ours only: a flow's own edge for a busy queue is no failure
            fallbacks=state.failures,
            prompts=len(state.prompts),
        )
        return instruction or HangUp("caller_hung_up")

    def _event(self, event_type: str, /, **fields: Any) -> None:
        self.events.append({"type": event_type, **fields})


def _target_dict(target: Target) -> dict[str, Any]:
    return {"kind": target.kind, "id": target.id, "queue": target.queue, "number": target.number}


@dataclass(frozen=True)
class _Stop:
    instruction: Instruction

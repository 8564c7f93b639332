"""Walking a call through the flows without a switch: `ivr simulate` and `ivr test`.

The simulated world is simple and stated: keys are pressed in order, one per prompt
that takes keys (all a collect wants at once); the first queue or dial the call reaches
ends as ``dial_result`` says, and every later one is answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ivr.core.clock import local
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
from ivr.core.routing import Call, Hotline, split_dialed

MAX_INSTRUCTIONS = 500  # far beyond any flow; the engine's own budget stops loops first


@dataclass(frozen=True)
class World:
    keys: str = ""
    dial_result: str = "answered"
    hang_up_at: int | None = None  # the caller hangs up during the Nth instruction


def simulate(hotline: Hotline, call: Call, world: World | None = None) -> dict[str, Any]:
    world = world or World()
    route = hotline.route(call)
    session, instruction = CallSession.start(hotline, route)
    keys = list(world.keys)
    steps: list[dict[str, Any]] = []
    count = 0
    while not isinstance(instruction, HangUp):
        count += 1
        steps.append(describe(instruction))
        if count > MAX_INSTRUCTIONS:
            raise RuntimeError("simulation did not end: the engine's step budget failed")
        if world.hang_up_at is not None and count >= world.hang_up_at:
            waiting = isinstance(instruction, Connect)
            session.caller_hung_up(answered=False, wait_s=30.0 if waiting else 0.0)
            break
        instruction = session.resume(_outcome(instruction, keys, session, world))
    else:
        steps.append(describe(instruction))

    summary = session.summary()
    _, dialed_local = split_dialed(call.dialed)
    notes = []
    if not route.known:
        notes.append(
            f"{dialed_local or call.dialed} is not a known line: routed as a call to "
            "12345, which answers everything non-emergency"
        )
    return {
        "line": dialed_local or call.dialed,
        "routed_as": route.line,
        "flow": route.flow,
        **{k: v for k, v in summary.items() if k != "line"},
        "at": local(call.now).isoformat(),  # as the hotline reads it, whatever was given
        "facts": dict(route.facts),
        "notes": notes,
        "steps": steps,
        "events": [e["type"] for e in session.take_events()],
    }


def _outcome(
    instruction: Instruction, keys: list[str], session: CallSession, world: World
) -> str | ConnectResult | None:
    if isinstance(instruction, PlayPrompt):
        if instruction.interrupt_digits and keys:
            return keys.pop(0)
        return None
    if isinstance(instruction, CollectDigits):
        taken = keys[: instruction.max_digits]
        del keys[: instruction.max_digits]
        return "".join(taken)
    if isinstance(instruction, Connect):
        outcome = world.dial_result if session.state.connects == 1 else "answered"
        return ConnectResult(outcome, wait_s=5.0)
    assert isinstance(instruction, AnswerCall)
    return None


def describe(instruction: Instruction) -> dict[str, Any]:
    if isinstance(instruction, AnswerCall):
        return {"do": "answer", "early_media": instruction.early_media}
    if isinstance(instruction, PlayPrompt):
        return {"do": "play", "prompt": instruction.prompt, "keys": instruction.interrupt_digits}
    if isinstance(instruction, CollectDigits):
        return {"do": "collect", "prompt": instruction.prompt, "max": instruction.max_digits}
    if isinstance(instruction, Connect):
        return {
            "do": instruction.via,
            "kind": instruction.target.kind,
            "id": instruction.target.id,
            "timeout": instruction.timeout,
        }
    return {"do": "hangup", "reason": instruction.reason}


def render_text(result: dict[str, Any]) -> str:
    """The path as an admin reads it."""
    out = [
        f"call to {result['line']} ({result['mode']}, region {result['region']} "
        f"by {result['region_source']}) at {result['at']}",
    ]
    out += [f"  note: {note}" for note in result["notes"]]
    for step in result["steps"]:
        detail = " ".join(f"{k}={v}" for k, v in step.items() if k != "do" and v not in ("", None))
        out.append(f"  -> {step['do']} {detail}".rstrip())
    target = result["target"]
    out.append(f"  lands at: {target['kind']} {target['id']}")
    if result["tags"]:
        out.append("  tags: " + ", ".join(f"{k}={v}" for k, v in result["tags"].items()))
    for fallback in result["fallbacks"]:
        out.append(f"  fallback: {fallback['from']} {fallback['reason']} -> {fallback['to']}")
    return "\n".join(out)

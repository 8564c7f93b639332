"""Transfers a seat makes: one-key to emergency and utility lines, three-way to
sub-centres and kept seats, with what happens when the target does not answer.

The strategies come from ``transfer/strategies.yaml``; this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ivr.core.directory import Directory
from ivr.core.routing import Route, Target, resolve_target

TARGET_KINDS = ("emergency", "utility", "sub_centre", "kept_seats", "seats")


Method = Literal["one_key", "three_way"]
METHODS: tuple[str, ...] = get_args(Method)


class Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method
    ring_timeout: int = Field(ge=5, le=120)
    on_failure: Literal["back_to_seat", "work_order"]
    # Methods a seat may ask for instead of `method`, e.g. a three-party call with 110
    # when it is unclear whose matter it is.
    also_allowed: tuple[Method, ...] = ()


class Strategies(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategies: dict[Literal["emergency", "utility", "sub_centre", "kept_seats", "seats"], Strategy]

    @model_validator(mode="after")
    def _every_kind(self) -> Strategies:
        missing = [kind for kind in TARGET_KINDS if kind not in self.strategies]
        if missing:
            raise ValueError(f"no strategy for {', '.join(missing)}")
        return self


@dataclass(frozen=True)
class TransferPlan:
    target: Target
    method: str  # one_key | three_way
    ring_timeout: int
    on_failure: str  # back_to_seat | work_order


class UnknownTransferTarget(ValueError):
    pass


class MethodNotAllowed(ValueError):
    """The seat asked for a method the strategies do not allow for that target."""


class BadTransferRequest(ValueError):
    """The seat's request names something that cannot be right (a seat call that is
    not a call id): refused before anything moves."""


class CallNotFound(LookupError):
    """No call in progress has that id (it ended, or another controller carries it)."""


class TransferRefused(RuntimeError):
    """The call cannot be transferred now (no seat on it, a transfer under way...)."""


@dataclass(frozen=True)
class TransferOutcome:
    """What a finished transfer attempt means for the caller and for the call record."""

    answered: bool
    caller_with: str  # target | seat (three-way: still in the room) | seats (queued again)
    work_order: bool  # a work order (派发工单) goes to the target instead
    events: tuple[dict[str, Any], ...]


def transfer_outcome(plan: TransferPlan, outcome: str) -> TransferOutcome:
    """The one rule for a transfer's end. ``outcome``: answered, noanswer, busy, failed.

    A three-way caller whose target does not answer is still talking to the seat who
    tried; a one-key caller has left that seat, so they go back to the 12345 seats.
    """
    target = plan.target
    if outcome == "answered":
        event = {"type": "transferred", "kind": target.kind, "target": target.id,
                 "method": plan.method}  # fmt: skip
        return TransferOutcome(True, "target", False, (event,))
    work_order = plan.on_failure == "work_order"
    failed = {"type": "transfer_failed", "kind": target.kind, "target": target.id,
              "outcome": outcome, "method": plan.method, "work_order": work_order}  # fmt: skip
    caller_with = "seat" if plan.method == "three_way" else "seats"
    return TransferOutcome(False, caller_with, work_order, (failed,))


def split_at_answer(
    events: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seat's transfer takes the call while its connect is still pending: the
    person's answer is recorded then, but the steps after it (the survey) happen only
    once the transfer ends. Returns (the events up to the answer, the rest)."""
    cut = next((i + 1 for i, e in enumerate(events) if e["type"] == "answered"), 0)
    return events[:cut], events[cut:]


def drop_repeated_answer(events: list[dict[str, Any]]) -> None:
    """When the flow goes on after the transfer, the engine reports the answer again;
    it went out when the transfer began, so the first `answered` is removed here."""
    for i, event in enumerate(events):
        if event["type"] == "answered":
            del events[i]
            return


def plan_transfer(
    directory: Directory,
    strategies: Strategies,
    route: Route,
    target_ref: str,
    method: str | None = None,
) -> TransferPlan:
    """What a seat's transfer request (e.g. "emergency:110", "sub_centre:12366") does.

    The strategies name the method for each kind of target; a seat may ask for another
    only where they allow it (``also_allowed``)."""
    target = resolve_target(directory, route, target_ref)
    # A seat may type any queue name; `ivr check` vouches only for the dialplans' own.
    if target is None or (target.queue and target.queue not in directory.queues()):
        raise UnknownTransferTarget(f"{target_ref!r} names nobody in {route.region}")
    strategy = strategies.strategies[target.kind]  # type: ignore[index]
    chosen = method or strategy.method
    if chosen != strategy.method and chosen not in strategy.also_allowed:
        allowed = ", ".join((strategy.method, *strategy.also_allowed))
        raise MethodNotAllowed(f"{chosen!r} is not allowed for {target.kind} targets ({allowed})")
    return TransferPlan(target, chosen, strategy.ring_timeout, strategy.on_failure)

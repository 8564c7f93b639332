"""The dialplan model: call flows as admins write them in ``dialplans/*.yaml``.

A flow is a list of named steps. A step goes on to the step after it unless it says
``next``; a reference is a step id of the same flow or ``@flow`` for another flow's
start. The same flow drives Asterisk and Twilio; nothing here knows either.
The JSON Schema shipped beside the dialplans is generated from these classes.
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, model_validator

StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", description="a step's name")]
FlowId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", description="a flow's name")]
StepRef = Annotated[
    str,
    Field(
        pattern=r"^@?[a-z][a-z0-9_]*$",
        description="a step of this flow, or @flow for the start of another flow",
    ),
]
PromptId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", description="a prompt catalog id")]
# One key a caller can press and we are told of: '#' ends GET DATA's and <Gather>'s
# input, and never comes back as a key.
Digit = Annotated[str, Field(pattern=r"^[0-9*]$")]
TargetRef = Annotated[
    str,
    Field(
        pattern=(
            r"^(seats|enterprise_seat|dialect_seat|(kept_seats|sub_centre)(:[0-9]{5})?"
            r"|emergency(:(110|119|120|122))?|utility:(power|water|gas)|queue:[a-z0-9][a-z0-9_-]*)$"
        ),
        description=(
            "who to reach: seats (the region's 12345 seats), enterprise_seat, dialect_seat, "
            "kept_seats or sub_centre (of the dialed line, or kept_seats:12315, sub_centre:12366), "
            "emergency (the dialed emergency line) or emergency:110|119|120|122, "
            "utility:power|water|gas, or queue:NAME"
        ),
    ),
]
# A ring time in seconds, "answer_timeout" for the dialed line's configured N seconds,
# or null to wait until someone answers or the caller gives up.
# (strict: YAML's `true` is not a ring time of 1 s)
Timeout = Annotated[int, Field(ge=1, le=3600, strict=True)] | Literal["answer_timeout"] | None

# Facts a branch may look at, with the values each can take; all are decided by the
# routing core from the directory and the time of the call.
FACTS: dict[str, tuple[str, ...]] = {
    "phase": ("before_retirement", "transition", "after_transition"),
    "after_window": ("forward", "announce_and_hangup"),
    "seats": ("kept", "cancelled"),
    # withheld: no number to call back (a flow should not offer a callback)
    "caller": ("known", "withheld"),
}
Fact = Literal["phase", "after_window", "seats", "caller"]

# What a tag value may quote: {line} and friends are filled in per call.
TAG_FIELDS = ("line", "line_name", "department", "region", "mode")


def template_problem(text: str, known: tuple[str, ...]) -> str | None:
    """Why `text` cannot be filled in with str.format_map on every call, or None.

    Only plain placeholders of known fields: a format spec, a conversion, an index or
    an attribute could fail on some line's values (an empty department) and fail the
    call; a stray brace fails every call."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"{text!r}: {exc} (write {{{{ and }}}} for a brace)"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name:
            return f"{text!r}: a placeholder needs a name, e.g. {{line}}"
        if spec or conversion or not name.isidentifier():
            return f"{text!r}: only plain placeholders such as {{line}} are filled in"
        if name not in known:
            return f"{text!r}: unknown placeholder {{{name}}} (known: {', '.join(known)})"
    return None


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StepId
    next: StepRef | None = Field(
        default=None, description="where to go on; default: the step after this one"
    )
    max_visits: int | None = Field(
        default=None,
        ge=1,
        le=20,
        description="how often a call may enter this step; then it goes to on_exhausted",
    )
    on_exhausted: StepRef | None = None


class Outcomes(BaseModel):
    """Where a queue, dial or transfer goes on each result.

    ``answered`` is taken when a person answered and the person's side ended first,
    with the caller still on the line (so the survey can follow). An outcome with no
    edge sends the call to the fallback flow: the region's 12345 seats.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    answered: StepRef | None = None
    noanswer: StepRef | None = None
    busy: StepRef | None = None
    failed: StepRef | None = None


class Answer(_Step):
    kind: Literal["answer"]
    early_media: bool = Field(
        default=False, description="play what follows before answering (no charge to caller)"
    )


class Play(_Step):
    kind: Literal["play"]
    prompt: PromptId
    shortcuts: dict[Digit, StepRef] = Field(
        default_factory=dict, description="keys that cut the prompt short and go elsewhere"
    )


class Collect(_Step):
    kind: Literal["collect"]
    prompt: PromptId
    max_digits: int = Field(default=1, ge=1, le=20, strict=True)
    timeout: int = Field(
        default=5, ge=1, le=60, strict=True, description="seconds to wait for keys"
    )
    choices: dict[str, StepRef] = Field(description="keys pressed -> step")
    otherwise: StepRef = Field(description="no key, or keys that are no choice")


class SetTags(_Step):
    kind: Literal["set"]
    tags: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], str]


class Branch(_Step):
    kind: Literal["branch"]
    on: Fact
    cases: dict[str, StepRef]
    otherwise: StepRef | None = None


class Queue(_Step):
    kind: Literal["queue"]
    to: TargetRef
    timeout: Timeout = None
    on: Outcomes = Field(default_factory=Outcomes)


class Dial(_Step):
    kind: Literal["dial"]
    to: TargetRef
    timeout: Timeout = 30
    on: Outcomes = Field(default_factory=Outcomes)


class Transfer(_Step):
    """A seat passes the caller on: one-key (blind) or three-way (caller, seat, target)."""

    kind: Literal["transfer"]
    to: TargetRef
    method: Literal["one_key", "three_way"]
    timeout: Timeout = "answer_timeout"
    on: Outcomes = Field(default_factory=Outcomes)


# The five "好差评" grades, best first, and the score each counts for.
GRADES = {"非常满意": 5, "满意": 4, "基本满意": 3, "不满意": 2, "非常不满意": 1}


class Survey(_Step):
    """The post-call "好差评" evaluation: one key for one of the five grades."""

    kind: Literal["survey"]
    prompt: PromptId
    timeout: int = Field(default=8, ge=1, le=60, strict=True)
    grades: dict[Digit, Literal["非常满意", "满意", "基本满意", "不满意", "非常不满意"]]

    @model_validator(mode="after")
    def _all_five_grades(self) -> Survey:
        missing = set(GRADES) - set(self.grades.values())
        if missing or len(self.grades) != len(GRADES):
            raise ValueError(f"a survey offers each of the five grades once: {', '.join(GRADES)}")
        return self


class Callback(_Step):
    kind: Literal["callback"]
    reason: Literal["abandoned", "requested", "overflow"]


class Emit(_Step):
    kind: Literal["emit"]
    event: Annotated[str, Field(pattern=r"^[a-z][a-z_]*$")]
    fields: dict[str, str] = Field(default_factory=dict)


class Hangup(_Step):
    kind: Literal["hangup"]
    reason: str = Field(description="an explicit, configured end: recorded with the call")


Step = Annotated[
    Answer
    | Play
    | Collect
    | Survey
    | SetTags
    | Branch
    | Queue
    | Dial
    | Transfer
    | Callback
    | Emit
    | Hangup,
    Field(discriminator="kind"),
]

TERMINAL_KINDS = frozenset({"hangup"})
PERSON_KINDS = frozenset({"queue", "dial", "transfer"})
# Steps that need the caller on the line: not allowed in a flow with media: false.
MEDIA_KINDS = frozenset({"answer", "play", "collect", "survey", *PERSON_KINDS})


class Flow(BaseModel):
    """One ``dialplans/NAME.yaml`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="12345 dialplan flow")

    flow: FlowId = Field(description="must equal the file's name without .yaml")
    title: str
    media: bool = Field(
        default=True,
        description="false for flows that run after the caller has gone (no prompts, no keys)",
    )
    steps: list[Step] = Field(min_length=1)

    @property
    def start(self) -> str:
        return self.steps[0].id

    # Looked up on every step of every call: indexed once when the flow is loaded.
    _by_id: dict[str, Step] = PrivateAttr(default_factory=dict)
    _after: dict[str, str | None] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        ids = [s.id for s in self.steps]
        for step in reversed(self.steps):  # the first of a duplicated id wins, as before
            self._by_id[step.id] = step
        for index in reversed(range(len(ids))):
            self._after[ids[index]] = ids[index + 1] if index + 1 < len(ids) else None

    def step(self, step_id: str) -> Step:
        return self._by_id[step_id]

    def following(self, step_id: str) -> str | None:
        """The step written after ``step_id``: where a step without ``next`` goes."""
        return self._after[step_id]


def edges(step: Step, following: str | None) -> list[str]:
    """Every reference out of a step (unresolved), in the order the step may take them."""
    out: list[str] = []
    if isinstance(step, Play):
        out += step.shortcuts.values()
    if isinstance(step, Collect):
        out += [*step.choices.values(), step.otherwise]
    if isinstance(step, Branch):
        out += step.cases.values()
        if step.otherwise:
            out.append(step.otherwise)
    if isinstance(step, Queue | Dial | Transfer):
        out += [ref for ref in step.on.model_dump().values() if ref]
    if step.on_exhausted:
        out.append(step.on_exhausted)
    if goes_on(step):
        nxt = step.next or following
        if nxt:
            out.append(nxt)
    return out


Node = tuple[str, str]  # (flow id, step id)


def reach_backwards(graph: dict[Node, list[Node]], targets: set[Node]) -> set[Node]:
    """Every node of `graph` (node -> the nodes it leads to) from which some target
    can be reached, the targets included."""
    into: dict[Node, list[Node]] = {}
    for node, outs in graph.items():
        for out in outs:
            into.setdefault(out, []).append(node)
    seen, todo = set(targets), list(targets)
    while todo:
        for before in into.get(todo.pop(), []):
            if before not in seen:
                seen.add(before)
                todo.append(before)
    return seen


def goes_on(step: Step) -> bool:
    """Does the step carry on to ``next`` (or the step written after it) at all?"""
    if step.kind in TERMINAL_KINDS or isinstance(step, Collect | Branch):
        return False
    if isinstance(step, Queue | Dial | Transfer):
        return step.on.answered is None  # ``next`` is where an answered call goes on
    return True


def json_schema() -> dict:
    """The dialplan file's JSON Schema (draft 2020-12, as pydantic writes it)."""
    return TypeAdapter(Flow).json_schema()

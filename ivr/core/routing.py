"""Routing decisions: which line a call is for, in which region, and who a target names.

The rules of the document about *where* a call goes live here, each in one function:
- any number we do not know is a call to 12345, which answers everything non-emergency;
- the region comes from the trunk, then the DID, then the area code (Pingtan shares
  0591 with Fuzhou, so the area code alone cannot always tell);
- a retired line's phase is decided by its absolute dates in local time;
- a dual-number line's seats are kept or cancelled per region.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

from ivr.core.dialplan import PERSON_KINDS, Flow, Step, edges, reach_backwards
from ivr.core.directory import MAIN_NUMBER, Directory, Mode, Seats
from ivr.core.prompts import Catalog

if TYPE_CHECKING:
    from ivr.core.transfer import Strategies

EMERGENCY_NUMBERS = ("110", "119", "120", "122")

# Which flow runs for each mode, and the two flows the engine itself enters.
FLOW_FOR_MODE = {
    Mode.MAIN: "main",
    Mode.WHOLE_MERGE: "retired_line",
    Mode.DUAL_NUMBER: "dual_line",
    Mode.SUB_CENTRE: "sub_centre_line",
    Mode.EMERGENCY: "emergency",
}
FALLBACK_FLOW = "seats"  # any failure of ours ends here: the region's 12345 seats
ABANDONED_FLOW = "abandoned"  # the caller hung up while waiting for a person
REQUIRED_FLOWS = (*FLOW_FOR_MODE.values(), FALLBACK_FLOW, ABANDONED_FLOW)


@dataclass(frozen=True)
class Call:
    """What the switch tells us about a new call; ``now`` is the caller's clock, aware."""

    dialed: str
    now: datetime
    caller: str | None = None
    trunk: str | None = None
    region: str | None = None  # set when the front-end already knows it
    call_id: str = ""


@dataclass(frozen=True)
class Route:
    line: str  # the service number the caller meant: 12345, 12358, 110…
    mode: Mode
    region: str
    region_source: str  # given | trunk | did | area_code | default
    flow: str
    known: bool  # False: an unknown number, treated as a call to 12345
    facts: dict[str, str] = field(default_factory=dict)
    line_name: str = "12345政务服务便民热线"
    department: str = ""

    def tag_fields(self) -> dict[str, str]:
        return {
            "line": self.line,
            "line_name": self.line_name,
            "department": self.department,
            "region": self.region,
            "mode": self.mode.value,
        }


@dataclass(frozen=True)
class Target:
    """Someone a call can be put through to."""

    kind: str  # seats | kept_seats | sub_centre | emergency | utility
    id: str  # a queue name, or the target's id (110, power, fuzhou-12366)
    queue: str | None = None  # set when reached through an ACD queue
    number: str | None = None  # set when reached by dialing out


class FlowIndex(NamedTuple):
    """One flow's steps as plain lookups (see `Hotline.flow_index`)."""

    start: str
    steps: dict[str, Step]  # by id
    after: dict[str, str | None]  # the step written after each: where one without next goes


@dataclass(frozen=True)
class Hotline:
    """The loaded configuration: directory, flows and prompts. Immutable; swapped whole."""

    directory: Directory
    flows: dict[str, Flow]
    catalog: Catalog
    transfers: Strategies
    step_budget: int = 64

    def route(self, call: Call) -> Route:
        return route_call(self.directory, call)

    # The engine asks these on every step of every call. Read through the pydantic
    # models, each costs microseconds (private attributes go through __getattr__), so
    # they are read out once per Hotline, which never changes.

    @cached_property
    def flow_index(self) -> dict[str, FlowIndex]:
        return {
            flow_id: FlowIndex(
                flow.start,
                {step.id: flow.step(step.id) for step in flow.steps},
                {step.id: flow.following(step.id) for step in flow.steps},
            )
            for flow_id, flow in self.flows.items()
        }

    @cached_property
    def transition_prompts(self) -> frozenset[str]:
        return self.catalog.transition_ids()

    @cached_property
    def may_connect(self) -> frozenset[tuple[str, str]]:
        """(flow, step) from which the flows can still put the caller through to a
        person: a caller who leaves there was waiting for one. One heading only for a
        hang-up (a "no seat, call later" notice) was not."""
        graph = {
            (flow_id, step.id): [
                (ref[1:], self.flows[ref[1:]].start) if ref.startswith("@") else (flow_id, ref)
                for ref in edges(step, flow.following(step.id))
                if not ref.startswith("@") or ref[1:] in self.flows
            ]
            for flow_id, flow in self.flows.items()
            for step in flow.steps
        }
        connecting = {n for n in graph if self.flows[n[0]].step(n[1]).kind in PERSON_KINDS}
        return frozenset(reach_backwards(graph, connecting))


_NON_DIGITS = re.compile(r"[^0-9]")
_HAS_DIGIT = re.compile(r"[0-9]")


def split_dialed(dialed: str) -> tuple[str | None, str]:
    """Split a dialed number into (area code, local part).

    +86 591 12345, 0086…, 059112345 and 12345 all come in; a Fujian area code is
    four digits (059x).
    """
    digits = _NON_DIGITS.sub("", dialed)
    national = None
    if dialed.strip().startswith("+86"):
        national = digits[2:]
    elif digits.startswith("0086"):
        national = digits[4:]
    if national is not None:
        # After the country code: a short or mobile number starts with 1 and has no
        # area code; a geographic one drops its trunk 0 (some write it anyway).
        national = national.removeprefix("0")
        digits = national if national.startswith("1") else "0" + national
    if digits.startswith("0") and len(digits) > 4:
        return digits[:4], digits[4:]
    return None, digits


def decide_region(
    directory: Directory, call: Call, area_code: str | None, number: str = ""
) -> tuple[str, str]:
    """The region whose 12345 centre takes the call, and what decided it.

    The number-to-region table is looked up with the number as dialed, as digits, and
    in its national form (059123112345), which +86…, 0086… and +86 0… all come to."""
    if call.region and call.region in directory.regions:
        return call.region, "given"
    if call.trunk and call.trunk in directory.trunks:
        return directory.trunks[call.trunk].region, "trunk"
    full = _NON_DIGITS.sub("", call.dialed)
    national = f"{area_code or ''}{number}"
    for candidate in (
        call.dialed,
        full,
        national,
        f"0{full[2:]}" if full.startswith("86") else None,
    ):
        if candidate and candidate in directory.dids:
            return directory.dids[candidate], "did"
    if area_code:
        region = directory.region_for_area_code(area_code)
        if region:
            return region, "area_code"
    return directory.defaults.default_region, "default"


def unrouted(directory: Directory, region: str | None, trunk: str | None) -> Route:
    """Where a call goes when routing it failed (a failure of ours): the 12345 seats
    of the region it was given or came in on, else the default region's."""
    if not (region and region in directory.regions):
        known_trunk = trunk and trunk in directory.trunks
        region = directory.trunks[trunk].region if known_trunk else None  # type: ignore[index]
    return Route(
        MAIN_NUMBER,
        Mode.MAIN,
        region or directory.defaults.default_region,
        "default",
        FLOW_FOR_MODE[Mode.MAIN],
        known=False,
    )


def route_call(directory: Directory, call: Call) -> Route:
    area_code, number = split_dialed(call.dialed)
    region, source = decide_region(directory, call, area_code, number)
    # A number without digits ("anonymous", nothing) cannot be called back.
    withheld = not (call.caller and _HAS_DIGIT.search(call.caller))
    facts: dict[str, str] = {"caller": "withheld" if withheld else "known"}

    if number in EMERGENCY_NUMBERS:
        return Route(
            number,
            Mode.EMERGENCY,
            region,
            source,
            FLOW_FOR_MODE[Mode.EMERGENCY],
            True,
            facts,
            line_name=f"{number} 紧急热线",
        )
    line = directory.line(number)
    if number == MAIN_NUMBER or line is None:
        return Route(
            MAIN_NUMBER,
            Mode.MAIN,
            region,
            source,
            FLOW_FOR_MODE[Mode.MAIN],
            # a DID is a region's own number for its 12345 centre
            known=number == MAIN_NUMBER or source == "did",
            facts=facts,
        )

    if line.mode is Mode.WHOLE_MERGE:
        window = directory.retirement(number, region)
        facts["phase"] = window.phase(call.now).value
        facts["after_window"] = window.after_window.value
    elif line.mode is Mode.DUAL_NUMBER:
        seats = directory.seats_of(number, region) or Seats.CANCELLED
        facts["seats"] = seats.value
    return Route(
        number,
        line.mode,
        region,
        source,
        FLOW_FOR_MODE[line.mode],
        True,
        facts,
        line_name=line.name,
        department=line.department,
    )


def resolve_target(directory: Directory, route: Route, ref: str) -> Target | None:
    """What a dialplan's ``to:`` names for this call; None when it names nobody here."""
    region = directory.regions[route.region]
    kind, _, arg = ref.partition(":")
    if kind == "seats":
        return Target("seats", region.seats, queue=region.seats)
    if kind == "enterprise_seat":
        return Target("seats", region.enterprise_seat, queue=region.enterprise_seat)
    if kind == "dialect_seat":
        if not region.dialect_seats:
            return None
        queue = region.dialect_seats[0].queue
        return Target("seats", queue, queue=queue)
    if kind == "queue":
        return Target("seats", arg, queue=arg) if arg else None
    if kind == "kept_seats":
        # kept_seats:12315 names another line's seats: a seat's transfer link to them.
        line = directory.line(arg or route.line)
        if line is None or line.mode is not Mode.DUAL_NUMBER:
            return None
        if directory.seats_of(arg or route.line, route.region) is not Seats.KEPT:
            return None
        queue = directory.kept_seats_queue(arg or route.line, route.region)
        return Target("kept_seats", queue, queue=queue)
    if kind == "sub_centre":
        line = directory.line(arg or route.line)
        if line is None or line.mode is not Mode.SUB_CENTRE:
            return None
        number = directory.sub_centre_number(arg or route.line, route.region)
        return Target("sub_centre", f"{route.region}-{arg or route.line}", number=number)
    if kind == "emergency":
        service = arg or (route.line if route.mode is Mode.EMERGENCY else "")
        if service not in region.emergency:
            return None
        return Target("emergency", service, number=region.emergency[service])  # type: ignore[index]
    if kind == "utility":
        if arg not in region.utilities:
            return None
        return Target("utility", arg, number=region.utilities[arg])
    return None

"""`ivr diff OLD NEW`: what a configuration change does to calls, before it goes live.

Both folders take the same calls: every number the hotline answers (12345, each legacy
line, the emergency numbers) in every region, and every DID. Each call is simulated
on days that matter to the retired lines' windows (the day before each window, its
first and last day, the day after) and on the day given, in three worlds: a person
answers at once; nobody answers the first queue or dial (which takes the fallback
edges, e.g. kept seats that do not answer); the same for a caller whose number is
withheld. Where the two folders route a call differently, the difference is printed,
with the days it holds on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from ivr.core.clock import SHANGHAI
from ivr.core.directory import MAIN_NUMBER, Mode
from ivr.core.routing import EMERGENCY_NUMBERS, Call, Hotline
from ivr.regression import SAMPLE_CALLER
from ivr.simulate import World, simulate

# What an admin needs to see changed; steps and notes follow from these.
COMPARED = ("region", "mode", "flow", "facts", "prompts", "tags", "target", "fallbacks")
# (what the switch does, the caller's number: None for a withheld one)
WORLDS: dict[str, tuple[World, str | None]] = {
    "answered": (World(), SAMPLE_CALLER),
    "first queue unanswered": (World(dial_result="noanswer"), SAMPLE_CALLER),
    "withheld number, first queue unanswered": (World(dial_result="noanswer"), None),
}
# Calls are simulated at 10:00 local on each day.
AT = time(10, 0)


@dataclass(frozen=True)
class Difference:
    number: str
    region: str  # the region the call was given, or "DID" for a DID
    world: str
    field: str
    old: Any
    new: Any
    days: tuple[date, ...]

    @property
    def call(self) -> str:
        return (
            f"{self.number} as a DID"
            if self.region == "DID"
            else (f"{self.number} in {self.region}")
        )

    def __str__(self) -> str:
        return (
            f"{self.world}, {_days(self.days)}: "
            f"{self.field}: {_show(self.old)} -> {_show(self.new)}"
        )


def report(found: list[Difference]) -> str:
    """The differences call by call, for a person to read."""
    lines: list[str] = []
    calls = sorted({d.call for d in found})
    for call in calls:
        lines.append(call)
        lines += [f"  {d}" for d in found if d.call == call]
    lines.append(f"{len(calls)} call(s) would go otherwise")
    return "\n".join(lines)


def differences(old: Hotline, new: Hotline, today: date) -> list[Difference]:
    """Every way `new` routes a call otherwise than `old` does."""
    window_days = sorted(_days_that_matter(old, today) | _days_that_matter(new, today))
    retired = _retired_lines(old) | _retired_lines(new)
    # (call, world, field, the two values as text) -> the two values and the days
    found: dict[tuple[str, str, str, str, str, str], tuple[Any, Any, list[date]]] = {}
    for number, region in _calls(old, new):
        # only a retired line's calls depend on the day
        days = window_days if number in retired else [today]
        for world_name, (world, caller) in WORLDS.items():
            for day in days:
                when = datetime.combine(day, AT, SHANGHAI)
                before = _outcome(old, number, region, when, world, caller)
                after = _outcome(new, number, region, when, world, caller)
                for name in COMPARED:
                    was, now = before.get(name), after.get(name)
                    if was != now:
                        key = (number, region, world_name, name, repr(was), repr(now))
                        found.setdefault(key, (was, now, []))[2].append(day)
    return [
        Difference(number, region, world_name, name, was, now, tuple(on_days))
        for (number, region, world_name, name, _, _), (was, now, on_days) in found.items()
    ]


def _calls(old: Hotline, new: Hotline) -> Iterator[tuple[str, str]]:
    """(number, region) for every call both folders should answer; region "DID" for a
    DID, which decides the region itself."""
    regions = sorted(set(old.directory.regions) | set(new.directory.regions))
    numbers = sorted(set(old.directory.lines) | set(new.directory.lines))
    for number in (MAIN_NUMBER, *numbers, *EMERGENCY_NUMBERS):
        for region in regions:
            yield number, region
    for did in sorted(set(old.directory.dids) | set(new.directory.dids)):
        yield did, "DID"


def _outcome(
    hotline: Hotline, number: str, region: str, when: datetime, world: World, caller: str | None
) -> dict[str, Any]:
    if region != "DID" and region not in hotline.directory.regions:
        return {"region": f"(no region {region})"}
    call = Call(number, when, caller=caller,
                region=None if region == "DID" else region, call_id="diff")  # fmt: skip
    result = simulate(hotline, call, world)
    return {**result, "fallbacks": [f["reason"] for f in result["fallbacks"]]}


def _retired_lines(hotline: Hotline) -> set[str]:
    return {n for n, line in hotline.directory.lines.items() if line.mode is Mode.WHOLE_MERGE}


def _days_that_matter(hotline: Hotline, today: date) -> set[date]:
    directory = hotline.directory
    days = {today}
    for number in _retired_lines(hotline):
        for region in directory.regions:
            window = directory.retirement(number, region)
            days |= {
                window.retired_on - timedelta(days=1),
                window.retired_on,
                window.prompt_until,
                window.prompt_until + timedelta(days=1),
            }
    return days


def _days(days: tuple[date, ...]) -> str:
    if len(days) == 1:
        return f"on {days[0]}"
    if len(days) <= 6:
        return "on " + ", ".join(str(d) for d in days)
    return f"on {len(days)} of the days compared, {days[0]} to {days[-1]}"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)

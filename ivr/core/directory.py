"""The hotline directory: regions, trunks and the 32 legacy lines, as the document has them.

Each rule of 闽政办〔2021〕57号 about *which* line is folded in *how* lives here:
the three modes (二(一)), the transition prompt window of a retired line (二(二)2),
kept and cancelled seats of a dual-number line, and a sub-centre's own seats.
Only data and pure lookups: no files, no clock (``now`` is always passed in).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from ivr.core.clock import local_date

MAIN_NUMBER = "12345"

RegionId = Annotated[str, Field(pattern=r"^[a-z]+$", description="lower-case pinyin region id")]
QueueId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="an ACD queue name")]
Number = Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$", description="a dialable number")]


class Strict(BaseModel):
    """Every config object refuses unknown keys: a typo must not silently do nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Mode(StrEnum):
    """How a dialed line is handled: 12345 itself, one of the three merge modes, or emergency."""

    MAIN = "main"
    WHOLE_MERGE = "whole_merge"  # 整体并入: number retired, calls to 12345 seats
    DUAL_NUMBER = "dual_number"  # 双号并行: number kept, seats kept or cancelled
    SUB_CENTRE = "sub_centre"  # 设分中心: number and seats kept, 12345 sub-centre sign
    EMERGENCY = "emergency"  # 110/119/120/122: never merged, only passed on


class Seats(StrEnum):
    """Of a dual-number line in one region: 保留座席 or 取消座席."""

    KEPT = "kept"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    """Where a retired line stands on a given day."""

    BEFORE = "before_retirement"
    TRANSITION = "transition"  # the 3-month transition prompt plays
    AFTER = "after_transition"


class AfterWindow(StrEnum):
    """What a retired line does once its transition prompt window has closed."""

    FORWARD = "forward"  # a short notice, then 12345 seats
    ANNOUNCE_AND_HANGUP = "announce_and_hangup"


class Source(StrEnum):
    """How sure the public record is about a line's entry."""

    CONFIRMED = "confirmed"
    SECONDARY = "secondary"
    ASSUMPTION = "assumption"


def _no_time(value: object) -> object:
    # YAML reads 2021-12-01T00:00:00+14:00 as a moment (quoted, as a string that
    # pydantic would cut to its date); a window is whole local days.
    if isinstance(value, datetime) or (
        isinstance(value, str) and not _PLAIN_DATE.fullmatch(value.strip())
    ):
        raise ValueError("a date only (2022-01-01), without a time or zone")
    return value


_PLAIN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2100, 12, 31)


def _in_service_life(value: date) -> date:
    # Year 9999 is a typo, and date arithmetic overflows on it.
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"{value}: a date from {FIRST_DAY} to {LAST_DAY}")
    return value


Day = Annotated[date, BeforeValidator(_no_time), AfterValidator(_in_service_life)]


class Retirement(Strict):
    """Absolute dates, local time: a schedule without a year would come back every year.

    The prompt plays from 00:00 on ``retired_on`` up to 24:00 on ``prompt_until``.
    """

    retired_on: Day
    prompt_until: Day
    after_window: AfterWindow = AfterWindow.FORWARD

    @model_validator(mode="after")
    def _window_in_order(self) -> Retirement:
        if self.prompt_until < self.retired_on:
            raise ValueError(
                f"prompt_until {self.prompt_until} is before retired_on {self.retired_on}"
            )
        return self

    def phase(self, now: datetime) -> Phase:
        # On the local calendar: from 00:00 on retired_on is day retired_on, up to
        # 24:00 on prompt_until is day prompt_until (Asia/Shanghai keeps no summer time,
        # so local dates and local midnights order alike; comparing dates is cheaper).
        day = local_date(now)
        if day < self.retired_on:
            return Phase.BEFORE
        if day <= self.prompt_until:
            return Phase.TRANSITION
        return Phase.AFTER

    def layered(self, *overrides: RetirementOverride | None) -> tuple[date, date, AfterWindow]:
        """(retired_on, prompt_until, after_window) with each override laid over this
        window, later ones winning; unchecked (`ivr check` reports them out of order)."""
        start, end, after = self.retired_on, self.prompt_until, self.after_window
        for o in overrides:
            if o is not None:
                start, end = o.retired_on or start, o.prompt_until or end
                after = o.after_window or after
        return start, end, after

    def merged(self, *overrides: RetirementOverride | None) -> Retirement:
        """The window in force. Only the result is checked: a line may move one date
        out of order with the defaults as long as its region's override puts the
        window right again."""
        if not any(overrides):
            return self
        start, end, after = self.layered(*overrides)
        return Retirement(retired_on=start, prompt_until=end, after_window=after)


class RetirementOverride(Strict):
    retired_on: Day | None = None
    prompt_until: Day | None = None
    after_window: AfterWindow | None = None


class DialectSeat(Strict):
    dialect: str = Field(description="e.g. minnanhua (闽南话), fuzhouhua (福州话)")
    queue: QueueId


class Region(Strict):
    """One of the nine 设区市 or 平潭综合实验区, each running its own 12345 centre."""

    name: str
    area_code: str = Field(pattern=r"^0[0-9]{2,3}$")
    seats: QueueId = Field(description="the region's 12345 seats")
    enterprise_seat: QueueId = Field(description="涉企服务专席")
    dialect_seats: list[DialectSeat] = Field(default_factory=list)
    emergency: dict[Literal["110", "119", "120", "122"], Number]
    utilities: dict[Literal["power", "water", "gas"], Number]
    callback_list: QueueId = Field(description="where missed-call callback tasks go")
    assumption: str | None = Field(
        default=None, description="what in this entry the public record does not confirm"
    )

    @model_validator(mode="after")
    def _all_emergency_lines(self) -> Region:
        missing = {"110", "119", "120", "122"} - set(self.emergency)
        if missing:
            raise ValueError(f"emergency targets missing: {', '.join(sorted(missing))}")
        missing = {"power", "water", "gas"} - set(self.utilities)
        if missing:
            raise ValueError(f"utility lines missing: {', '.join(sorted(missing))}")
        return self


class LineInRegion(Strict):
    """What differs for one legacy line in one region."""

    retirement: RetirementOverride | None = None
    seats: Seats | None = None
    kept_seats: QueueId | None = None
    sub_centre: Number | None = None


class LegacyLine(Strict):
    """One of the 32 lines of the national list, with how Fujian folds it in."""

    name: str
    department: str
    national_mode: Literal[Mode.WHOLE_MERGE, Mode.DUAL_NUMBER, Mode.SUB_CENTRE]
    mode: Literal[Mode.WHOLE_MERGE, Mode.DUAL_NUMBER, Mode.SUB_CENTRE]
    source: Source
    note: str | None = None
    retirement: RetirementOverride | None = None
    seats: Seats | None = Field(default=None, description="default for regions not listed")
    answer_timeout: int | None = Field(
        default=None,
        ge=5,
        le=120,
        description="seconds the kept seats or sub-centre ring before 12345 seats take over",
    )
    regions: dict[RegionId, LineInRegion] = Field(default_factory=dict)


class Trunk(Strict):
    region: RegionId
    note: str | None = None


class Defaults(Strict):
    retirement: Retirement
    answer_timeout: int = Field(default=20, ge=5, le=120)
    default_region: RegionId
    step_budget: int = Field(
        default=64, ge=8, le=1000, description="steps a call may take before it goes to seats"
    )


class Directory(Strict):
    """Everything the routing core needs to know about the province, loaded once."""

    defaults: Defaults
    regions: dict[RegionId, Region]
    trunks: dict[str, Trunk] = Field(default_factory=dict)
    dids: dict[Number, RegionId] = Field(
        default_factory=dict, description="full dialed numbers that name their region"
    )
    primary_region_for_area_code: dict[str, RegionId] = Field(
        default_factory=dict,
        description="which region an area code means when several regions share it",
    )
    lines: dict[Number, LegacyLine]

    # -- lookups -----------------------------------------------------------------

    def line(self, number: str) -> LegacyLine | None:
        return self.lines.get(number)

    def region_for_area_code(self, area_code: str) -> str | None:
        if area_code in self.primary_region_for_area_code:
            return self.primary_region_for_area_code[area_code]
        sharing = [rid for rid, region in self.regions.items() if region.area_code == area_code]
        return sharing[0] if len(sharing) == 1 else None

    def retirement(self, number: str, region: str) -> Retirement:
        """The window in force for a retired line in a region: defaults < line < region.

        Merged once per line and region: merging builds (and validates) pydantic
        models, and every call to a retired line asks. Only the dates are kept, never
        a phase, which depends on the time of each call."""
        line = self.lines[number]
        cached = self._windows.get((number, region))
        if cached is not None and cached[0] is line and cached[1] is self.defaults:
            return cached[2]
        in_region = line.regions.get(region)
        window = self.defaults.retirement.merged(
            line.retirement, in_region.retirement if in_region else None
        )
        if region in self.regions:  # bounded: only the directory's own keys
            self._windows[(number, region)] = (line, self.defaults, window)
        return window

    @cached_property
    def _windows(self) -> dict[tuple[str, str], tuple[LegacyLine, Defaults, Retirement]]:
        # (line, region) -> the objects the window was merged from, and the window.
        # The objects guard against a copy of this directory with other lines.
        return {}

    def seats_of(self, number: str, region: str) -> Seats | None:
        line = self.lines[number]
        in_region = line.regions.get(region)
        if in_region and in_region.seats:
            return in_region.seats
        return line.seats

    def kept_seats_queue(self, number: str, region: str) -> str:
        in_region = self.lines[number].regions.get(region)
        if in_region and in_region.kept_seats:
            return in_region.kept_seats
        return f"{region}-{number}"

    def sub_centre_number(self, number: str, region: str) -> str:
        """A sub-centre is reached on its own number through the region's trunk."""
        in_region = self.lines[number].regions.get(region)
        if in_region and in_region.sub_centre:
            return in_region.sub_centre
        return f"{self.regions[region].area_code}{number}"

    def answer_timeout(self, number: str) -> int:
        line = self.lines.get(number)
        if line and line.answer_timeout:
            return line.answer_timeout
        return self.defaults.answer_timeout

    def queues(self) -> set[str]:
        """Every queue the directory routes to: what Asterisk's queues.conf must define."""
        known: set[str] = set()
        for region_id, region in self.regions.items():
            known |= {region.seats, region.enterprise_seat, region.callback_list}
            known |= {seat.queue for seat in region.dialect_seats}
            for number, line in self.lines.items():
                if line.mode is Mode.DUAL_NUMBER and self.seats_of(number, region_id) is Seats.KEPT:
                    known.add(self.kept_seats_queue(number, region_id))
        return known

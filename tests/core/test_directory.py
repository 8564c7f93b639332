"""The directory's rules: retirement windows in local time, seats per region, regions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from ivr.core.clock import SHANGHAI, start_of_day
from ivr.core.directory import (
    AfterWindow,
    Mode,
    Phase,
    Retirement,
    RetirementOverride,
    Seats,
)
from ivr.core.routing import Call, Hotline

WINDOW = Retirement(retired_on=date(2021, 12, 1), prompt_until=date(2022, 2, 28))


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("moment", "phase"),
    [
        (at(2021, 11, 30, 23, 59, 59), Phase.BEFORE),
        (at(2021, 12, 1, 0, 0, 0), Phase.TRANSITION),
        (at(2022, 2, 28, 23, 59, 59), Phase.TRANSITION),
        (at(2022, 3, 1, 0, 0, 0), Phase.AFTER),
        (at(2031, 1, 15), Phase.AFTER),  # no yearly recurrence: the dates are absolute
    ],
)
def test_transition_window_edges_are_local_midnights(moment: datetime, phase: Phase) -> None:
    assert WINDOW.phase(moment) is phase


def test_window_is_judged_in_shanghai_time_whatever_zone_now_is_in() -> None:
    last_second = datetime(2022, 2, 28, 15, 59, 59, tzinfo=UTC)
    assert WINDOW.phase(last_second) is Phase.TRANSITION
    assert WINDOW.phase(last_second + timedelta(seconds=1)) is Phase.AFTER


def test_naive_now_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        WINDOW.phase(datetime(2022, 1, 1))


def test_window_out_of_order_is_refused() -> None:
    with pytest.raises(ValidationError, match="before retired_on"):
        Retirement(retired_on=date(2022, 3, 1), prompt_until=date(2022, 2, 28))


def test_fujian_folds_in_18_whole_merge_9_dual_5_sub_centres(hotline: Hotline) -> None:
    modes = [line.mode for line in hotline.directory.lines.values()]
    assert len(modes) == 32
    assert modes.count(Mode.WHOLE_MERGE) == 18
    assert modes.count(Mode.DUAL_NUMBER) == 9
    assert modes.count(Mode.SUB_CENTRE) == 5


def test_fujian_whole_merges_five_national_dual_lines(hotline: Hotline) -> None:
    for number in ("12333", "12319", "12318", "12350", "12393"):
        line = hotline.directory.lines[number]
        assert (line.national_mode, line.mode) == (Mode.DUAL_NUMBER, Mode.WHOLE_MERGE)


def test_national_split_is_13_14_5(hotline: Hotline) -> None:
    national = [line.national_mode for line in hotline.directory.lines.values()]
    assert (
        national.count(Mode.WHOLE_MERGE),
        national.count(Mode.DUAL_NUMBER),
        national.count(Mode.SUB_CENTRE),
    ) == (13, 14, 5)


def test_region_override_of_retirement_beats_line_and_default(hotline: Hotline) -> None:
    directory = hotline.directory
    xiamen = directory.retirement("12365", "xiamen")
    fuzhou = directory.retirement("12365", "fuzhou")
    assert (xiamen.retired_on, xiamen.prompt_until) == (date(2021, 11, 15), date(2022, 2, 14))
    assert (fuzhou.retired_on, fuzhou.prompt_until) == (date(2021, 12, 1), date(2022, 2, 28))
    assert directory.retirement("12336", "fuzhou").after_window is AfterWindow.ANNOUNCE_AND_HANGUP
    assert directory.retirement("12358", "fuzhou").after_window is AfterWindow.FORWARD


def test_seats_per_region_with_line_default(hotline: Hotline) -> None:
    directory = hotline.directory
    assert directory.seats_of("12348", "xiamen") is Seats.KEPT
    assert directory.seats_of("12348", "ningde") is Seats.CANCELLED
    assert directory.seats_of("12329", "pingtan") is Seats.CANCELLED
    assert directory.seats_of("12329", "fuzhou") is Seats.KEPT
    assert directory.kept_seats_queue("12328", "fuzhou") == "fuzhou-transport"
    assert directory.kept_seats_queue("12328", "xiamen") == "xiamen-12328"


def test_every_region_has_seats_enterprise_emergency_and_utilities(hotline: Hotline) -> None:
    regions = hotline.directory.regions
    assert sorted(regions) == sorted(
        [
            "fuzhou",
            "xiamen",
            "ningde",
            "putian",
            "quanzhou",
            "zhangzhou",
            "longyan",
            "sanming",
            "nanping",
            "pingtan",
        ]
    )
    for region in regions.values():
        assert set(region.emergency) == {"110", "119", "120", "122"}
        assert set(region.utilities) == {"power", "water", "gas"}
        assert region.seats != region.enterprise_seat


def test_shared_area_code_needs_the_primary_region(hotline: Hotline) -> None:
    directory = hotline.directory
    assert directory.regions["pingtan"].area_code == directory.regions["fuzhou"].area_code
    assert directory.region_for_area_code("0591") == "fuzhou"
    assert directory.region_for_area_code("0592") == "xiamen"
    assert directory.region_for_area_code("010") is None


def test_queues_include_kept_seats_only_where_kept(hotline: Hotline) -> None:
    queues = hotline.directory.queues()
    assert {"fuzhou-12345", "fuzhou-enterprise", "xiamen-minnanhua", "fuzhou-transport"} <= queues
    assert "xiamen-12369" in queues  # kept in Xiamen
    assert "fuzhou-12369" not in queues  # cancelled in Fuzhou


# -- the phase on local dates, and windows merged once per line and region -------------

XIAMEN_12365 = Retirement(retired_on=date(2021, 11, 15), prompt_until=date(2022, 2, 14))
ZONES = [SHANGHAI, UTC, ZoneInfo("America/New_York"), timezone(timedelta(hours=14))]


def phase_by_midnights(window: Retirement, now: datetime) -> Phase:
    """The rule as written: from local midnight opening retired_on to the one closing
    prompt_until, compared as instants."""
    if now < start_of_day(window.retired_on):
        return Phase.BEFORE
    if now < start_of_day(window.prompt_until + timedelta(days=1)):
        return Phase.TRANSITION
    return Phase.AFTER


@given(
    st.datetimes(
        min_value=datetime(2021, 11, 1),
        max_value=datetime(2022, 3, 15),
        timezones=st.sampled_from(ZONES),
    )
)
@example(start_of_day(date(2021, 12, 1)) - timedelta(microseconds=1))
@example(start_of_day(date(2021, 12, 1)).astimezone(UTC))
@example(start_of_day(date(2022, 3, 1)).astimezone(ZONES[2]) - timedelta(microseconds=1))
@example(start_of_day(date(2022, 3, 1)).astimezone(ZONES[3]))
@example(start_of_day(date(2022, 2, 15)).astimezone(UTC) - timedelta(microseconds=1))
def test_phase_by_local_date_is_phase_by_local_midnights(now: datetime) -> None:
    for window in (WINDOW, XIAMEN_12365):
        assert window.phase(now) is phase_by_midnights(window, now)


def last_instant_before(day: date) -> datetime:
    return start_of_day(day) - timedelta(microseconds=1)


# 12365's window is 2021-11-15..2022-02-14 in Xiamen and the default elsewhere.
EDGE_PHASES = [  # (moment, Xiamen's phase, Fuzhou's phase)
    (last_instant_before(date(2021, 11, 15)), "before_retirement", "before_retirement"),
    (start_of_day(date(2021, 11, 15)), "transition", "before_retirement"),
    (last_instant_before(date(2021, 12, 1)), "transition", "before_retirement"),
    (start_of_day(date(2021, 12, 1)), "transition", "transition"),
    (last_instant_before(date(2022, 2, 15)), "transition", "transition"),
    (start_of_day(date(2022, 2, 15)), "after_transition", "transition"),
    (last_instant_before(date(2022, 3, 1)), "after_transition", "transition"),
    (start_of_day(date(2022, 3, 1)), "after_transition", "after_transition"),
]


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_cached_windows_never_carry_a_phase_across_an_edge(hotline: Hotline, order: str) -> None:
    # One directory, its window cache warm from the first call on: every call on
    # either side of every edge, in both regions, still gets its own phase.
    edges = EDGE_PHASES if order == "forward" else EDGE_PHASES[::-1]
    for moment, xiamen, fuzhou in edges:
        for region, expected in (("xiamen", xiamen), ("fuzhou", fuzhou)):
            route = hotline.route(Call("12365", moment, region=region))
            assert route.facts["phase"] == expected, (moment, region)


def test_a_copy_with_other_dates_does_not_reuse_the_cached_windows(hotline: Hotline) -> None:
    directory = hotline.directory
    assert directory.retirement("12365", "fuzhou").retired_on == date(2021, 12, 1)  # cached
    later = RetirementOverride(retired_on=date(2023, 1, 1), prompt_until=date(2023, 3, 31))
    line = directory.lines["12365"].model_copy(update={"retirement": later})
    copy = directory.model_copy(update={"lines": {**directory.lines, "12365": line}})
    window = copy.retirement("12365", "fuzhou")
    assert (window.retired_on, window.prompt_until) == (date(2023, 1, 1), date(2023, 3, 31))
    assert directory.retirement("12365", "fuzhou").retired_on == date(2021, 12, 1)


def test_only_the_window_in_force_is_checked_not_each_layer(hotline: Hotline) -> None:
    # The line moves its end before the default start; the region moves the start back
    # in front of it. The line's window alone would be out of order; the region's is not.
    directory = hotline.directory
    early_end = RetirementOverride(prompt_until=date(2021, 11, 1))
    original = directory.lines["12365"]
    xiamen = original.regions["xiamen"].model_copy(
        update={"retirement": RetirementOverride(retired_on=date(2021, 8, 1))}
    )
    line = original.model_copy(
        update={"retirement": early_end, "regions": {**original.regions, "xiamen": xiamen}}
    )
    copy = directory.model_copy(update={"lines": {**directory.lines, "12365": line}})
    window = copy.retirement("12365", "xiamen")
    assert (window.retired_on, window.prompt_until) == (date(2021, 8, 1), date(2021, 11, 1))
    with pytest.raises(ValidationError, match="prompt_until 2021-11-01 is before retired_on"):
        copy.retirement("12365", "fuzhou")

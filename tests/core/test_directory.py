"""The directory's rules: retirement windows in local time, seats per region, regions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from ivr.core.clock import SHANGHAI
from ivr.core.directory import AfterWindow, Mode, Phase, Retirement, Seats
from ivr.core.routing import Hotline

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

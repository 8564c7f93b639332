"""Which line, region and mode a call is for."""

from __future__ import annotations

from datetime import datetime

import pytest

from ivr.core.clock import SHANGHAI
from ivr.core.directory import Mode
from ivr.core.routing import Call, Hotline, resolve_target, split_dialed, unrouted

NOON = datetime(2024, 6, 1, 12, 0, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("dialed", "expected"),
    [
        ("12345", (None, "12345")),
        ("059112345", ("0591", "12345")),
        ("+86 591 12345", ("0591", "12345")),
        ("008659212358", ("0592", "12358")),
        ("0595-12366", ("0595", "12366")),
        # international form of a short or mobile number: no area code to find
        ("+8612345", (None, "12345")),
        ("+86110", (None, "110")),
        ("008612366", (None, "12366")),
        # the trunk 0 written after the country code
        ("+86 0592 12366", ("0592", "12366")),
        ("110", (None, "110")),
    ],
)
def test_split_dialed(dialed: str, expected: tuple) -> None:
    assert split_dialed(dialed) == expected


def test_region_is_decided_by_given_then_trunk_then_did_then_area_code(hotline: Hotline) -> None:
    route = hotline.route
    assert route(Call("059212345", NOON, trunk="quanzhou-ct", region="ningde")).region == "ningde"
    by_trunk = route(Call("059212345", NOON, trunk="quanzhou-ct"))
    assert (by_trunk.region, by_trunk.region_source) == ("quanzhou", "trunk")
    by_did = route(Call("059123112345", NOON))
    assert (by_did.region, by_did.region_source) == ("pingtan", "did")
    by_code = route(Call("059212345", NOON))
    assert (by_code.region, by_code.region_source) == ("xiamen", "area_code")
    fallback = route(Call("12345", NOON))
    assert (fallback.region, fallback.region_source) == ("fuzhou", "default")


@pytest.mark.parametrize(
    "dialed", ["059123112345", "+8659123112345", "008659123112345", "+86 0591 2311 2345",
               "8659123112345"],
)  # fmt: skip
def test_a_did_is_found_however_the_carrier_writes_it(hotline: Hotline, dialed: str) -> None:
    # Pingtan's DID shares 0591 with Fuzhou: missed in the table, it went to Fuzhou.
    by_did = hotline.route(Call(dialed, NOON))
    assert (by_did.region, by_did.region_source) == ("pingtan", "did")
    assert by_did.line == "12345" and by_did.known  # not "an unknown number"


def test_pingtan_and_fuzhou_share_0591_and_the_trunk_tells_them_apart(hotline: Hotline) -> None:
    assert hotline.route(Call("059112345", NOON, trunk="pingtan-ct")).region == "pingtan"
    assert hotline.route(Call("059112345", NOON, trunk="fuzhou-ct")).region == "fuzhou"
    assert hotline.route(Call("059112345", NOON)).region == "fuzhou"


def test_unknown_trunk_is_ignored_not_trusted(hotline: Hotline) -> None:
    assert hotline.route(Call("059812345", NOON, trunk="nowhere")).region == "sanming"


@pytest.mark.parametrize(
    ("dialed", "mode", "flow"),
    [
        ("12345", Mode.MAIN, "main"),
        ("12358", Mode.WHOLE_MERGE, "retired_line"),
        ("12315", Mode.DUAL_NUMBER, "dual_line"),
        ("12366", Mode.SUB_CENTRE, "sub_centre_line"),
        ("119", Mode.EMERGENCY, "emergency"),
    ],
)
def test_mode_and_flow(hotline: Hotline, dialed: str, mode: Mode, flow: str) -> None:
    route = hotline.route(Call(dialed, NOON, region="xiamen"))
    assert (route.mode, route.flow, route.line) == (mode, flow, dialed)


def test_unknown_number_is_a_call_to_12345(hotline: Hotline) -> None:
    route = hotline.route(Call("95555", NOON))
    assert (route.mode, route.line, route.known) == (Mode.MAIN, "12345", False)


def test_retired_line_facts_follow_the_clock(hotline: Hotline) -> None:
    inside = hotline.route(Call("12358", datetime(2022, 1, 1, tzinfo=SHANGHAI)))
    after = hotline.route(Call("12336", datetime(2022, 3, 1, tzinfo=SHANGHAI)))
    assert inside.facts == {"phase": "transition", "after_window": "forward",
                            "caller": "withheld"}  # fmt: skip
    assert after.facts == {"phase": "after_transition", "after_window": "announce_and_hangup",
                           "caller": "withheld"}  # fmt: skip


def test_dual_line_seats_fact_per_region(hotline: Hotline) -> None:
    fuzhou = hotline.route(Call("12348", NOON, region="fuzhou", caller="13912345678"))
    assert fuzhou.facts == {"seats": "kept", "caller": "known"}
    longyan = hotline.route(Call("12348", NOON, region="longyan", caller="13912345678"))
    assert longyan.facts == {"seats": "cancelled", "caller": "known"}


def test_targets_resolve_per_region(hotline: Hotline) -> None:
    directory = hotline.directory
    main_xm = hotline.route(Call("12345", NOON, region="xiamen"))
    assert resolve_target(directory, main_xm, "seats").queue == "xiamen-12345"
    assert resolve_target(directory, main_xm, "dialect_seat").queue == "xiamen-minnanhua"
    assert resolve_target(directory, main_xm, "emergency:110").number == "110"
    assert resolve_target(directory, main_xm, "utility:power").number == "95598"
    # a seat's links: to a sub-centre and to kept seats of another line
    tax = resolve_target(directory, main_xm, "sub_centre:12366")
    assert (tax.kind, tax.id, tax.number) == ("sub_centre", "xiamen-12366", "059212366")
    assert resolve_target(directory, main_xm, "kept_seats:12315").queue == "xiamen-12315"
    # kept seats that were cancelled in this region name nobody
    assert resolve_target(directory, main_xm, "kept_seats:12316") is None
    sanming = hotline.route(Call("12345", NOON, region="sanming"))
    assert resolve_target(directory, sanming, "dialect_seat") is None
    assert resolve_target(directory, main_xm, "kept_seats") is None  # 12345 has none


def test_a_call_routing_failed_on_goes_to_the_seats_of_its_region_or_the_default(
    hotline: Hotline,
) -> None:
    directory = hotline.directory
    assert unrouted(directory, "xiamen", "fuzhou-ct").region == "xiamen"  # given
    assert unrouted(directory, None, "fuzhou-ct").region == "fuzhou"  # its trunk's
    assert unrouted(directory, "nowhere", "no-trunk").region == directory.defaults.default_region
    route = unrouted(directory, None, None)
    assert (route.line, route.mode.value, route.known) == ("12345", "main", False)


@pytest.mark.parametrize(
    ("caller", "fact"),
    [("13912345678", "known"), ("+86 591 8765 4321", "known"), (None, "withheld"),
     ("", "withheld"), ("anonymous", "withheld")],
)  # fmt: skip
def test_a_caller_without_a_number_is_withheld(
    hotline: Hotline, caller: str | None, fact: str
) -> None:
    for dialed in ("12345", "110", "12358"):
        assert hotline.route(Call(dialed, NOON, caller=caller)).facts["caller"] == fact

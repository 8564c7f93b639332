"""A seat's transfers, as the routing core plans them and decides their end."""

from __future__ import annotations

from datetime import datetime

import pytest

from ivr.core.clock import SHANGHAI
from ivr.core.routing import Call, Hotline
from ivr.core.transfer import (
    MethodNotAllowed,
    TransferPlan,
    UnknownTransferTarget,
    plan_transfer,
    transfer_outcome,
)

NOW = datetime(2022, 1, 10, 10, 0, tzinfo=SHANGHAI)


def route_of(hotline: Hotline, dialed: str = "12345", region: str = "fuzhou"):
    return hotline.route(Call(dialed=dialed, now=NOW, region=region, call_id="c1"))


def plan(hotline: Hotline, ref: str, region: str = "fuzhou", dialed: str = "12345") -> TransferPlan:
    return plan_transfer(
        hotline.directory, hotline.transfers, route_of(hotline, dialed, region), ref
    )


@pytest.mark.parametrize(
    ("ref", "method", "ring", "on_failure", "target_id"),
    [
        ("emergency:110", "one_key", 30, "back_to_seat", "110"),
        ("utility:power", "one_key", 30, "back_to_seat", "power"),
        ("sub_centre:12366", "three_way", 25, "work_order", "fuzhou-12366"),
        ("kept_seats:12315", "three_way", 20, "back_to_seat", "fuzhou-12315"),
        ("seats", "three_way", 30, "back_to_seat", "fuzhou-12345"),
    ],
)
def test_each_kind_of_target_gets_its_strategy(
    hotline: Hotline, ref: str, method: str, ring: int, on_failure: str, target_id: str
) -> None:
    planned = plan(hotline, ref)
    assert (planned.method, planned.ring_timeout, planned.on_failure) == (method, ring, on_failure)
    assert planned.target.id == target_id


def test_unclear_ownership_with_110_may_be_a_three_party_call(hotline: Hotline) -> None:
    # 12345–110 linkage: clearly 110's goes one-key; unclear, the seat asks for a
    # three-party call (caller, 12345, 110).
    route = route_of(hotline)
    directory, strategies = hotline.directory, hotline.transfers
    three = plan_transfer(directory, strategies, route, "emergency:110", "three_way")
    assert (three.method, three.target.number, three.on_failure) == (
        "three_way", "110", "back_to_seat",
    )  # fmt: skip
    assert plan_transfer(directory, strategies, route, "emergency:110", "one_key").method == (
        "one_key"
    )
    # a utility line has no such choice, nor does a sub-centre go one-key
    with pytest.raises(MethodNotAllowed, match="not allowed for utility targets"):
        plan_transfer(directory, strategies, route, "utility:power", "three_way")
    with pytest.raises(MethodNotAllowed):
        plan_transfer(directory, strategies, route, "sub_centre:12366", "one_key")


def test_a_queue_the_directory_knows_may_be_named(hotline: Hotline) -> None:
    planned = plan(hotline, "queue:fuzhou-enterprise")
    assert (planned.target.queue, planned.method) == ("fuzhou-enterprise", "three_way")


def test_the_link_from_kept_seats_back_to_12345_seats(hotline: Hotline) -> None:
    # a kept-seat call of 12315 in Putian is transferred back to Putian's 12345 seats
    planned = plan(hotline, "seats", region="putian", dialed="12315")
    assert planned.target.queue == "putian-12345" and planned.method == "three_way"


def test_sub_centre_is_reached_at_the_region_area_code(hotline: Hotline) -> None:
    assert plan(hotline, "sub_centre:12366", region="ningde").target.number == "059312366"


@pytest.mark.parametrize(
    "ref",
    [
        "sub_centre:99999",
        "kept_seats:12316",
        "nobody",
        "queue:",
        "queue:fuzhou-nobody",
        "utility:phone",
        "utility",
    ],
)
def test_a_target_naming_nobody_is_refused(hotline: Hotline, ref: str) -> None:
    with pytest.raises(UnknownTransferTarget):
        plan(hotline, ref)


def test_answered_transfer_is_one_transferred_event(hotline: Hotline) -> None:
    verdict = transfer_outcome(plan(hotline, "emergency:110"), "answered")
    assert verdict.answered and verdict.caller_with == "target" and not verdict.work_order
    assert verdict.events == (
        {"type": "transferred", "kind": "emergency", "target": "110", "method": "one_key"},
    )


def test_unanswered_three_way_keeps_the_caller_with_the_seat(hotline: Hotline) -> None:
    plan = plan_transfer(
        hotline.directory, hotline.transfers, route_of(hotline), "kept_seats:12315"
    )
    verdict = transfer_outcome(plan, "noanswer")
    assert not verdict.answered and verdict.caller_with == "seat" and not verdict.work_order
    (event,) = verdict.events
    assert event["type"] == "transfer_failed" and event["outcome"] == "noanswer"


def test_unanswered_sub_centre_raises_a_work_order(hotline: Hotline) -> None:
    plan = plan_transfer(
        hotline.directory, hotline.transfers, route_of(hotline), "sub_centre:12366"
    )
    verdict = transfer_outcome(plan, "busy")
    assert verdict.work_order and verdict.events[0]["work_order"] is True


def test_unanswered_one_key_sends_the_caller_back_to_the_seats(hotline: Hotline) -> None:
    # the seat was freed when the caller left: "back to seat" means the 12345 queue
    assert transfer_outcome(plan(hotline, "utility:water"), "noanswer").caller_with == "seats"

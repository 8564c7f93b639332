"""The webhook's cheaper state snapshot gives what SessionState.to_dict() made."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import ivr.twilio.webhooks as webhooks
from ivr.core.clock import SHANGHAI
from ivr.core.engine import CallSession, SessionState
from ivr.core.routing import Call, Hotline
from ivr.twilio.webhooks import state_copy

NOW = datetime(2024, 6, 1, 10, 0, tzinfo=SHANGHAI)


# -- the state snapshot ----------------------------------------------------------------


def test_the_state_copy_is_to_dict_and_shares_nothing_that_changes(hotline: Hotline) -> None:
    route = hotline.route(Call("12345", NOW, "+8613912340000", None, "fuzhou", "CA1"))
    session, _ = CallSession.start(hotline, route)
    session.resume(None)
    state = session.state
    state.pending_target = {"id": "t", "nested": {"list": [1, 2.5, None, True]}}
    state.fallbacks.append({"reason": "busy"})
    copy = state_copy(state)
    assert copy == state.to_dict()
    assert set(copy) == {f.name for f in dataclasses.fields(SessionState)}
    state.visits["x"] = 9
    state.prompts.append("another")
    state.fallbacks[0]["reason"] = "changed"
    state.pending_target["nested"]["list"].append(3)
    state.route["facts"]["new"] = "fact"
    assert copy != state.to_dict()
    assert "x" not in copy["visits"] and "another" not in copy["prompts"]
    assert copy["fallbacks"] == [{"reason": "busy"}]
    assert copy["pending_target"]["nested"]["list"] == [1, 2.5, None, True]
    assert "new" not in copy["route"]["facts"]
    assert SessionState.from_dict(copy) != state


def test_values_of_other_kinds_are_deep_copied() -> None:
    value = {"a": ({"t": [1]},), "s": {1, 2}}
    copied = webhooks._plain_copy(value)
    assert copied == value
    assert copied["a"][0] is not value["a"][0] and copied["s"] is not value["s"]

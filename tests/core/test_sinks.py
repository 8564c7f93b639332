"""The sinks both front-ends hand events to."""

from __future__ import annotations

from types import SimpleNamespace

from ivr.events import FanOut, NoEvents


class Broken:
    def call_events(self, call, events) -> None:
        raise RuntimeError("a sink's bug")


class Keep:
    def __init__(self) -> None:
        self.got: list = []

    def call_events(self, call, events) -> None:
        self.got += events


def test_one_failing_sink_never_stops_the_others() -> None:
    kept = Keep()
    FanOut([Broken(), NoEvents(), kept]).call_events(
        SimpleNamespace(call_id="c1"), [{"type": "call_offered"}]
    )
    assert kept.got == [{"type": "call_offered"}]

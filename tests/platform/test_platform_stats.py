"""`ivr stats` reads the real stream and prints the indicators of what was published."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from platform_support import PLATFORM_PASSWORD, RedisServer, wait_for

from ivr.cli import main
from ivr.events import CallInfo, EventRecorder
from ivr.platform.acl import PLATFORM_USER

START = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)  # 10:00 in Fuzhou


def publish_call(publish, n: int, wait: float | None, survey: int | None = None) -> None:
    call = CallInfo(f"1717380000.{n}", "xiamen", "12345", "main", f"1391234{n:04d}")
    rec = EventRecorder(call, publish)
    t = START + timedelta(minutes=n)
    rec.record("call_offered", t, known=True)
    rec.record("queued", t, target_kind="seats", target="xiamen-12345")
    if wait is None:
        rec.record("abandoned", t, wait_s=25.0)
    else:
        rec.record(
            "answered",
            t,
            target_kind="seats",
            target="xiamen-12345",
            wait_s=wait,
            total_wait_s=wait,
        )
        if survey:
            rec.record("survey_result", t, grade=survey)
    rec.record(
        "call_ended",
        t,
        duration_s=60.0,
        answered=wait is not None,
        target_kind="seats",
        target="xiamen-12345",
        fallbacks=0,
    )


def test_stats_from_the_stream(
    make_publisher, server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    publisher = make_publisher()
    for n, (wait, survey) in enumerate([(3.0, 5), (12.0, 4), (30.0, None), (None, None)]):
        publish_call(publisher.publish, n, wait, survey)
    assert publisher.flush(5)
    url = server.url(PLATFORM_USER, PLATFORM_PASSWORD)  # the read-only platform user suffices
    assert wait_for(lambda: main(["stats", "--redis", url, "--json", "--region", "xiamen"]) == 0)
    rows = json.loads(capsys.readouterr().out)
    (row,) = rows
    assert (row["region"], row["line"], row["hour"]) == ("xiamen", "12345", "2024-06-03 10:00")
    assert row["offered"] == 4 and row["asked_for_person"] == 4
    assert row["answered_by_person"] == 3
    assert row["answer_rate_15s"] == 0.5
    assert row["connection_rate"] == 0.75
    assert row["abandonment_rate"] == 0.25
    assert row["wait_mean_s"] == 15.0 and row["wait_p90_s"] == 30.0
    assert row["survey"]["非常满意"] == 1 and row["survey"]["满意"] == 1


def test_stats_says_when_redis_cannot_be_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--redis", "redis://127.0.0.1:1/0"]) == 1
    assert "cannot read the event streams" in capsys.readouterr().err

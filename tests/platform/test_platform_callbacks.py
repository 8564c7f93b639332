"""Missed-call callback tasks: created once per call, each worked by one agent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis
from platform_support import START, call_info, simulate_call

from ivr.events import EventRecorder, callback_task_id
from ivr.platform.callbacks import (
    CallbackTask,
    ack_task,
    claim_stale_tasks,
    claim_tasks,
    owns_task,
    pending_count,
    task_fields,
    wants_callback,
)
from ivr.platform.layout import callbacks_stream
from ivr.platform.publisher import Publisher

MakePublisher = Callable[..., Publisher]


def test_a_task_carries_the_callers_whole_wait() -> None:
    # 60 s unanswered, then gone during the callback offer: this attempt's wait is 0,
    # but a desk calling the longest waits first must see 60.
    rec = EventRecorder(call_info(1))
    rec.record("call_offered", START)
    event = rec.record("abandoned", START, wait_s=0.0, total_wait_s=60.0, target_kind="seats")
    assert wants_callback(event)
    assert task_fields(event)["wait_s"] == "60.000"


def test_one_task_per_missed_call_with_the_full_number(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher()
    abandoned = simulate_call(call_info(1), pub.publish, outcome="abandoned")
    requested = simulate_call(call_info(2), pub.publish, outcome="callback")
    simulate_call(call_info(3), pub.publish, outcome="answered")
    simulate_call(call_info(4, caller=""), pub.publish, outcome="abandoned")  # withheld
    assert pub.flush(5)

    tasks = claim_tasks(platform, "desk-1", count=10)
    assert [t.task_id for t in tasks] == [callback_task_id("1717378200.1"),
                                          callback_task_id("1717378200.2")]  # fmt: skip
    first, second = tasks
    assert (first.number, first.reason, first.wait_s) == ("13912340001", "abandoned", 40.0)
    assert (first.line, first.region, first.mode) == ("12358", "xiamen", "whole_merge")
    # The task is made from the first trigger, `abandoned`, not the later event.
    assert first.ts_utc == abandoned[4].ts_utc
    assert (second.reason, second.callback_list) == ("requested", "quanzhou-callbacks")
    assert second.ts_local == requested[4].ts_local
    assert "13912340001" not in repr(first) and "139****0001" in repr(first)


def test_two_agents_never_get_the_same_task(
    make_publisher: MakePublisher, platform: redis.Redis, server: object
) -> None:
    pub = make_publisher()
    for n in range(40):
        simulate_call(call_info(n), pub.publish, outcome="abandoned")
    assert pub.flush(5)

    got: dict[str, list[CallbackTask]] = {"desk-a": [], "desk-b": []}
    start = threading.Barrier(2)

    def agent(name: str) -> None:
        client = platform.connection_pool  # one connection each, same rights
        r = redis.Redis(connection_pool=type(client)(**client.connection_kwargs))
        start.wait()
        while tasks := claim_tasks(r, name, count=3):
            for task in tasks:
                got[name].append(task)
                assert ack_task(r, task, name)

    threads = [threading.Thread(target=agent, args=(name,)) for name in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    a = {t.task_id for t in got["desk-a"]}
    b = {t.task_id for t in got["desk-b"]}
    assert a and b, "both agents should have worked"
    assert not a & b
    assert a | b == {callback_task_id(call_info(n).call_id) for n in range(40)}
    assert len(got["desk-a"]) + len(got["desk-b"]) == 40
    assert pending_count(platform) == 0
    assert platform.xlen(callbacks_stream()) == 0  # done tasks take the number with them


def test_a_stale_task_moves_to_another_agent_once(
    make_publisher: MakePublisher, platform: redis.Redis
) -> None:
    pub = make_publisher()
    simulate_call(call_info(7), pub.publish, outcome="abandoned")
    assert pub.flush(5)

    [task] = claim_tasks(platform, "desk-a")
    assert claim_tasks(platform, "desk-b") == []
    assert claim_stale_tasks(platform, "desk-b", min_idle_ms=200) == []  # not stale yet
    time.sleep(0.25)  # desk-a went to lunch
    [taken] = claim_stale_tasks(platform, "desk-b", min_idle_ms=200)
    assert taken.task_id == task.task_id and taken.number == task.number
    assert owns_task(platform, taken, "desk-b")
    assert not owns_task(platform, task, "desk-a")
    assert ack_task(platform, task, "desk-a") is False  # too late: not yours any more
    assert pending_count(platform) == 1
    assert ack_task(platform, taken, "desk-b") is True
    assert pending_count(platform) == 0
    assert claim_stale_tasks(platform, "desk-c", min_idle_ms=0) == []

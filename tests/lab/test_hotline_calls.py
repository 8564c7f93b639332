"""Real SIP calls through the real Asterisk, the shipped glue and the controller.

Each call is checked by what the answering SIPp received and by Asterisk's CDR.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from ivr.agi.manager import AmiLink, AmiSettings
from ivr.lab.hotline import LAB_SEAT_TOKEN, HotlineLab
from ivr.lab.lab import Lab, LabMark, PendingCall
from ivr.paths import bundled_root
from ivr.platform.reader import as_record, iter_events

pytestmark = pytest.mark.asterisk

INSIDE_WINDOW = "2022-01-10T10:00:00"
AFTER_WINDOW = "2022-03-02T10:00:00"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of the tests' own for the lab controller's events."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("the tests' redis-server did not start")
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def hotline_lab(lab_root: Path, redis_url: str) -> Iterator[HotlineLab]:
    hl = HotlineLab.create(
        bundled_root(), lab_root, name="hotline-pytest", pretend_now=INSIDE_WINDOW,
        redis_url=redis_url,
    )  # fmt: skip
    hl.up()
    yield hl
    hl.down()


def events_of_last_call(redis_url: str, region: str) -> list[dict[str, object]]:
    """The event records of the newest call on a region's stream."""
    records = [as_record(e) for e in iter_events(redis.Redis.from_url(redis_url), region)]
    last = records[-1]["call_id"]
    return [r for r in records if r["call_id"] == last]


@pytest.fixture
def lab(hotline_lab: HotlineLab) -> Lab:
    if not hotline_lab.controller_pid():  # a test may have stopped it
        hotline_lab.start_controller()
    return hotline_lab.lab()


def cdr_for(lab: Lab, mark: LabMark, dst: str) -> dict[str, str]:
    """The CDR of the caller's own channel (not the Local/outbound legs)."""
    rows = lab.wait_for_cdrs(
        lambda r: r["dst"] == dst and r["dcontext"] == "ivr-controller", since=mark
    )
    bridged = [r for r in rows if r["dstchannel"]]  # a call split by a bridge has two rows
    return (bridged or rows)[-1]


def landed(lab: Lab, mark: LabMark) -> list[tuple[str, str]]:
    return [
        (seat, m.request_user) for seat, invites in lab.calls_by_seat(mark).items() for m in invites
    ]


def played(hotline_lab: HotlineLab, since: int) -> list[str]:
    log = hotline_lab.lab().messages_log.read_text(errors="replace")[since:]
    return [
        line.split("Playing '")[1].split("'")[0].removesuffix(".slin")
        for line in log.splitlines()
        if "Playing 'ivr/" in line
    ]


def log_size(hotline_lab: HotlineLab) -> int:
    return len(hotline_lab.lab().messages_log.read_text(errors="replace"))


def no_channels_left(lab: Lab, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "0 active channels" in lab.cli("core show channels count"):
            return True
        time.sleep(0.3)
    return False


def test_12345_reaches_the_regions_seats_and_the_survey(hotline_lab: HotlineLab, lab: Lab) -> None:
    mark, log_at = lab.mark(), log_size(hotline_lab)
    result = lab.call("12345", hold=40.0, dtmf="2", dtmf_at=20.5)
    assert result.answered and result.hung_up_by == "remote"  # the controller ended it
    assert landed(lab, mark) == [("seats", "seats")]
    cdr = cdr_for(lab, mark, "12345")
    assert cdr["lastapp"] == "Queue" and cdr["lastdata"].startswith("fuzhou-12345,")
    assert cdr["disposition"] == "ANSWERED"
    assert "original_line=12345" in cdr["userfield"]
    # control came back after the seat hung up: the survey and its thanks were played
    assert played(hotline_lab, log_at)[-2:] == ["ivr/survey_question", "ivr/survey_thanks"]
    # and the call went to the platform as it happened, complete and in order
    events = wait_for_call_end(hotline_lab, "fuzhou")
    assert [e["type"] for e in events] == [
        "call_offered", "prompt_played", "queued", "answered", "prompt_played",
        "survey_result", "prompt_played", "call_ended",
    ]  # fmt: skip
    assert events[0]["line"] == "12345" and events[0]["mode"] == "main"
    assert events[3]["target"] == "fuzhou-12345"
    assert events[5]["label"] == "满意"  # key 2
    assert events[-1]["answered"] is True


def test_pingtan_trunk_on_0591_reaches_pingtan_seats(lab: Lab) -> None:
    mark = lab.mark()
    result = lab.call("059112345", hold=12.0, trunk="pingtan-trunk")
    assert result.answered
    assert landed(lab, mark) == [("seats", "seats")]
    assert cdr_for(lab, mark, "059112345")["lastdata"].startswith("pingtan-12345,")


def test_retired_line_in_its_window_plays_the_transition_prompt(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    mark, log_at = lab.mark(), log_size(hotline_lab)
    result = lab.call("12358", hold=14.0)
    assert result.answered
    assert landed(lab, mark) == [("seats", "seats")]
    assert played(hotline_lab, log_at)[0] == "ivr/transition_notice-12358"
    cdr = cdr_for(lab, mark, "12358")
    assert cdr["lastdata"].startswith("fuzhou-12345,")
    assert "original_line=12358" in cdr["userfield"]
    assert "merge_mode=whole_merge" in cdr["userfield"]


def test_retired_lines_after_their_window_behave_as_configured(hotline_lab: HotlineLab) -> None:
    hotline_lab.pretend_now = AFTER_WINDOW
    hotline_lab.start_controller()
    try:
        lab = hotline_lab.lab()
        # 12358 forwards after a short notice
        mark, log_at = lab.mark(), log_size(hotline_lab)
        assert lab.call("12358", hold=10.0).answered
        assert played(hotline_lab, log_at)[0] == "ivr/line_moved_short"
        assert landed(lab, mark) == [("seats", "seats")]
        # 12336 announces on early media, unanswered, and ends: nobody is rung
        mark, log_at = lab.mark(), log_size(hotline_lab)
        result = lab.call("12336", hold=10.0)
        assert not result.answered and 183 in result.statuses
        assert played(hotline_lab, log_at) == ["ivr/number_retired-12336"]
        assert landed(lab, mark) == []
    finally:
        hotline_lab.pretend_now = INSIDE_WINDOW
        hotline_lab.start_controller()


def test_kept_seats_answer_their_dual_line(lab: Lab) -> None:
    mark = lab.mark()
    assert lab.call("12315", hold=10.0).answered
    assert landed(lab, mark) == [("kept", "kept")]
    cdr = cdr_for(lab, mark, "12315")
    assert cdr["lastdata"].startswith("fuzhou-12315,")
    assert "original_line=12315" in cdr["userfield"]


def test_kept_seats_silent_for_n_seconds_fall_back_to_12345_seats(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    # Ningde's kept seats never answer; 12329 gives them 15 s.
    mark, log_at = lab.mark(), log_size(hotline_lab)
    started = time.monotonic()
    result = lab.call("12329", hold=30.0, trunk="ningde-trunk")
    assert result.answered
    assert sorted(seat for seat, _ in landed(lab, mark)) == ["seats", "silent"]
    assert time.monotonic() - started >= 15
    cdr = cdr_for(lab, mark, "12329")
    assert cdr["lastdata"].startswith("ningde-12345,")
    assert "original_line=12329" in cdr["userfield"]
    # The 12345 seat answered: the survey follows, whatever the first queue's timeout
    # left in the channel's variables.
    events = wait_for_call_end(hotline_lab, "ningde")
    types = [e["type"] for e in events]
    assert types.count("answered") == 1 and "abandoned" not in types, types
    assert "ivr/survey_question" in played(hotline_lab, log_at)


def test_cancelled_seats_line_reaches_12345_seats_tagged(lab: Lab) -> None:
    mark = lab.mark()
    assert lab.call("12316", hold=10.0).answered
    assert landed(lab, mark) == [("seats", "seats")]
    cdr = cdr_for(lab, mark, "12316")
    assert cdr["lastdata"].startswith("fuzhou-12345,")
    assert "original_line=12316" in cdr["userfield"]
    assert "merge_mode=dual_number" in cdr["userfield"]


def test_sub_centre_number_reaches_the_sub_centre(lab: Lab) -> None:
    mark = lab.mark()
    assert lab.call("12366", hold=10.0).answered
    assert landed(lab, mark) == [("outside", "059112366")]
    cdr = cdr_for(lab, mark, "12366")
    assert cdr["lastapp"] == "Dial" and cdr["lastdata"].startswith("Local/059112366@")


def test_the_controllers_manager_user_hears_nothing_of_calls_but_its_answers(lab: Lab) -> None:
    # The sample manager user filters the switch's events down to OriginateResponse;
    # the lab's controller logs in as that user (its transfers pass in the tests below).
    config = lab.config
    settings = AmiSettings(config.sip_host, config.ami_port, config.controller_ami_user,
                           config.controller_ami_secret)  # fmt: skip
    heard: list[str] = []
    with AmiLink(settings) as link:
        link.register_event("*", lambda event, _: heard.append(event.name))
        with lab.ami() as watcher:  # the test's own user, which reads everything
            assert lab.call("12366", hold=2.0).answered
            seen = {str(e.get("Event")) for e in watcher.events(1.0)}
        # an Originate the controller waits for still reaches it
        waiting = link.expect("OriginateResponse", "filter-check")
        link.action("Originate", Channel="Local/059112366@ivr-outbound", Application="Wait",
                    Data="1", Async="true", Timeout="5000", ActionID="filter-check")  # fmt: skip
        response = waiting(10.0)
    assert "Newchannel" in seen and "Hangup" in seen  # the call made events
    assert response is not None and response.get_header("Response") == "Success"
    assert set(heard) == {"OriginateResponse"}


def test_emergency_shortcut_reaches_110(lab: Lab) -> None:
    mark = lab.mark()
    result = lab.call("12345", hold=8.0, dtmf="01", dtmf_at=1.0, dtmf_gap=1.0)
    assert result.answered
    assert landed(lab, mark) == [("outside", "110")]
    assert cdr_for(lab, mark, "12345")["lastdata"].startswith("Local/110@ivr-outbound")


def test_caller_hanging_up_during_a_prompt_ends_cleanly(hotline_lab: HotlineLab, lab: Lab) -> None:
    mark = lab.mark()
    result = lab.call("12345", hold=2.0)
    assert result.hung_up_by == "caller"
    assert landed(lab, mark) == []
    assert no_channels_left(lab)
    assert "outcome=hangup" in hotline_lab.controller_log.read_text().splitlines()[-1]


def test_caller_hanging_up_while_queued_ends_cleanly(hotline_lab: HotlineLab, lab: Lab) -> None:
    mark = lab.mark()
    result = lab.call("12329", hold=6.0, trunk="ningde-trunk")  # silent kept seats
    assert result.hung_up_by == "caller"
    assert [seat for seat, _ in landed(lab, mark)] == ["silent"]
    assert no_channels_left(lab)
    assert "outcome=hangup" in hotline_lab.controller_log.read_text().splitlines()[-1]
    # an abandoned call: a missed-call callback task for the caller
    events = wait_for_call_end(hotline_lab, "ningde")
    types = [e["type"] for e in events]
    assert "abandoned" in types and "missed_call_callback_created" in types
    assert "answered" not in types
    tasks = redis.Redis.from_url(hotline_lab.redis_url or "").xrange("ivr:callbacks")
    assert any(
        fields[b"line"] == b"12329" and fields[b"region"] == b"ningde" for _, fields in tasks
    )


def test_caller_hanging_up_after_talking_is_not_abandoned(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    mark = lab.mark()
    # the greeting ends near 8 s, the seat answers and talks 3 s: hang up at 10 s
    result = lab.call("12345", hold=10.0, trunk="pingtan-trunk")
    assert result.hung_up_by == "caller"
    assert landed(lab, mark) == [("seats", "seats")]
    events = wait_for_call_end(hotline_lab, "pingtan")
    types = [e["type"] for e in events]
    assert "answered" in types and "abandoned" not in types
    assert events[-1]["answered"] is True


def wait_for_call_end(hotline_lab: HotlineLab, region: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        events = events_of_last_call(hotline_lab.redis_url or "", region)
        if events[-1]["type"] == "call_ended" or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_with_the_controller_stopped_calls_still_reach_the_12345_queue(
    hotline_lab: HotlineLab,
) -> None:
    hotline_lab.stop_controller()
    lab = hotline_lab.lab()
    mark, log_at = lab.mark(), log_size(hotline_lab)
    result = lab.call("12358", hold=6.0)
    assert result.answered
    assert landed(lab, mark) == [("seats", "seats")]
    cdr = cdr_for(lab, mark, "12358")
    assert cdr["dstchannel"].startswith("PJSIP/seats-") and cdr["disposition"] == "ANSWERED"
    log = lab.messages_log.read_text(errors="replace")[log_at:]
    assert "fallback: AGISTATUS=FAILURE" in log
    assert re.search(
        r'Executing \[12358@ivr-controller:\d+\] Queue\("[^"]+", "fuzhou-12345,c"\)', log
    )


# -- a seat's transfers: Putian's 12345 seats ("desk") talk long enough to make them --


def seat_api(hotline_lab: HotlineLab, path: str, body: dict[str, str] | None = None):
    """(status, JSON answer) of the lab controller's seat API."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{hotline_lab.http_port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {LAB_SEAT_TOKEN}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def tail(path: Path, since: int, lines: int = 60) -> str:
    with path.open("rb") as handle:
        handle.seek(since)
        return "\n".join(handle.read().decode(errors="replace").splitlines()[-lines:])


def what_the_switch_saw(
    hotline_lab: HotlineLab, lab: Lab, pending: PendingCall, log_at: int, controller_at: int
) -> str:
    """Why a call went nowhere, for the failure message: what the caller's SIPp sent and
    received, the queue, the channels, and what Asterisk and the controller logged
    since the call started."""
    parts = [f"--- the caller ({'ended' if pending.done else 'still on'})"]
    for log in (pending.message_log, pending.error_log):
        parts.append(tail(log, 0, 40) if log.exists() else f"(no {log.name})")
    for command in ("queue show putian-12345", "core show channels"):
        try:
            parts.append(f"--- {command}\n{lab.cli(command)}")
        except Exception as exc:  # the message must come out whatever the lab's state
            parts.append(f"--- {command}: {exc}")
    parts.append(f"--- Asterisk since the call\n{tail(lab.messages_log, log_at)}")
    controller = tail(hotline_lab.controller_log, controller_at)
    parts.append(f"--- controller since the call\n{controller}")
    return "\n".join(parts)


def desk_call(hotline_lab: HotlineLab, lab: Lab, mark: LabMark, hold: float):
    """A Putian caller talking to the desk seat: (pending call, its call id)."""
    log_at = lab.messages_log.stat().st_size
    controller_at = hotline_lab.controller_log.stat().st_size
    pending = lab.start_call("12345", trunk="putian-trunk", hold=hold, timeout=30)
    deadline = time.monotonic() + 20
    while not lab.seat_calls("desk", mark):
        if time.monotonic() > deadline:
            pytest.fail(
                "the desk seat was never rung\n"
                + what_the_switch_saw(hotline_lab, lab, pending, log_at, controller_at)
            )
        time.sleep(0.2)
    time.sleep(0.5)  # the seat's 200 OK reaches the caller's bridge
    _, answer = seat_api(hotline_lab, "/calls")
    calls = [c for c in answer["calls"] if c["region"] == "putian"]
    assert len(calls) == 1 and calls[0]["caller"] == "138****0000"
    return pending, calls[0]["call_id"]


def seat_sent_bye_after(lab: Lab, seat: str, mark: LabMark) -> bool:
    """Whether the seat hung up itself (its hold ran out) rather than being hung up."""
    return any(m.method == "BYE" and m.direction == "sent" for m in lab.seat_messages(seat, mark))


def transfer_a_desk_call(
    hotline_lab: HotlineLab, lab: Lab, target: str, hold: float, **more: str
) -> tuple[LabMark, str, dict[str, object], list[dict[str, object]]]:
    """A Putian caller talks to the desk seat, which transfers them to ``target``; the
    caller stays on until the controller ends the call. (mark, call id, plan, events)"""
    mark = lab.mark()
    pending, call_id = desk_call(hotline_lab, lab, mark, hold=hold)
    body = {"target": target, **more}
    status, plan = seat_api(hotline_lab, f"/calls/{call_id}/transfers", body)
    assert status == 202, plan
    if plan["method"] == "three_way":  # a second transfer while this one runs is refused
        assert seat_api(hotline_lab, f"/calls/{call_id}/transfers", {"target": "seats"})[0] == 409
    result = pending.wait(90)
    assert result.answered and result.hung_up_by == "remote"  # the controller ended it
    events = wait_for_call_end(hotline_lab, "putian")
    assert events[-1]["type"] == "call_ended"
    assert no_channels_left(lab)
    return mark, call_id, plan, events


def test_three_way_transfer_brings_kept_seats_into_the_call(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    mark, call_id, plan, events = transfer_a_desk_call(hotline_lab, lab, "kept_seats:12315", 60.0)
    assert plan["method"] == "three_way"
    assert plan["target"]["queue"] == "putian-12315"  # type: ignore[index]
    assert sorted(seat for seat, _ in landed(lab, mark)) == ["desk", "kept"]
    # the desk stayed until its own hang-up: caller, seat and kept seats talked together
    assert seat_sent_bye_after(lab, "desk", mark)
    log = lab.messages_log.read_text(errors="replace")
    assert 'ConfBridge("PJSIP/desk-' in log and f"ivr-{call_id},ivr-three-way" in log
    types = [e["type"] for e in events]
    assert types[:4] == ["call_offered", "prompt_played", "queued", "answered"]
    transferred = events[types.index("transferred")]
    assert transferred["kind"] == "kept_seats" and transferred["target"] == "putian-12315"
    assert transferred["method"] == "three_way"
    # the caller came back to the controller for the survey once everyone had left
    assert "survey_result" in types or "prompt_played" in types[types.index("transferred") :]
    assert events[-1]["answered"] is True


def test_three_way_transfer_unanswered_leaves_the_caller_with_the_seat(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    # Putian's sub-centres never answer; sub-centres ring 25 s, then a work order
    mark, _, plan, events = transfer_a_desk_call(hotline_lab, lab, "sub_centre:12366", 60.0)
    assert plan["on_failure"] == "work_order"
    assert sorted(seat for seat, _ in landed(lab, mark)) == ["desk", "silent"]
    assert seat_sent_bye_after(lab, "desk", mark)  # the seat kept talking to the caller
    failed = [e for e in events if e["type"] == "transfer_failed"]
    assert len(failed) == 1 and failed[0]["target"] == "putian-12366"
    assert failed[0]["outcome"] == "noanswer" and failed[0]["work_order"] is True
    assert "transferred" not in [e["type"] for e in events]
    # Reported when the sub-centre's ring time ran out, while caller and seat still
    # talked: not only once the room closed (the survey comes after that).
    types = [e["type"] for e in events]
    at = [datetime.fromisoformat(str(e["ts_local"])) for e in events]
    failed = types.index("transfer_failed")
    rang = (at[failed] - at[types.index("answered")]).total_seconds()
    assert plan["ring_timeout"] - 1 <= rang < plan["ring_timeout"] + 5  # type: ignore[operator]
    assert at[failed] < at[types.index("prompt_played", failed)]  # the survey's question


def test_one_key_transfer_puts_the_caller_through_and_frees_the_seat(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    mark, _, plan, events = transfer_a_desk_call(hotline_lab, lab, "emergency:110", 40.0)
    assert plan["method"] == "one_key"
    assert sorted(landed(lab, mark)) == [("desk", "desk"), ("outside", "110")]
    assert not seat_sent_bye_after(lab, "desk", mark)  # Asterisk freed the seat at once
    transferred = [e for e in events if e["type"] == "transferred"]
    assert transferred and transferred[0]["target"] == "110"
    assert transferred[0]["method"] == "one_key"


def test_unclear_ownership_brings_110_into_a_three_party_call(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    mark, call_id, plan, events = transfer_a_desk_call(
        hotline_lab, lab, "emergency:110", 60.0, method="three_way"
    )
    assert plan["method"] == "three_way"
    assert sorted(landed(lab, mark)) == [("desk", "desk"), ("outside", "110")]
    assert seat_sent_bye_after(lab, "desk", mark)  # the seat stayed in the call
    log = lab.messages_log.read_text(errors="replace")
    assert f"ivr-{call_id},ivr-three-way" in log
    transferred = [e for e in events if e["type"] == "transferred"]
    assert len(transferred) == 1 and transferred[0]["target"] == "110"
    assert transferred[0]["method"] == "three_way"


def test_back_from_a_transfer_without_the_controller_the_seats_take_the_caller(
    hotline_lab: HotlineLab, lab: Lab
) -> None:
    # The controller goes away while the caller talks to 110: when 110 hangs up, the
    # glue cannot reach it (AGISTATUS=FAILURE) and must queue the caller, not hang up.
    mark, log_at = lab.mark(), log_size(hotline_lab)
    pending, call_id = desk_call(hotline_lab, lab, mark, hold=45.0)
    status, plan = seat_api(hotline_lab, f"/calls/{call_id}/transfers", {"target": "emergency:110"})
    assert status == 202 and plan["method"] == "one_key", plan
    deadline = time.monotonic() + 20
    while not lab.seat_calls("outside", mark):
        assert time.monotonic() < deadline, "110 was never rung"
        time.sleep(0.1)
    hotline_lab.stop_controller()
    try:
        result = pending.wait(90)
    finally:
        hotline_lab.start_controller()  # for the tests after this one
    assert result.answered
    seats = [seat for seat, _ in landed(lab, mark)]
    assert sorted(seats) == ["desk", "desk", "outside"]  # the desk, 110, the seats again
    log = lab.messages_log.read_text(errors="replace")[log_at:]
    assert "fallback: AGISTATUS=FAILURE" in log
    assert re.search(
        r'Executing \[s@ivr-transfer-fallback:\d+\] Queue\("[^"]+", "putian-12345,c"\)', log
    )
    assert no_channels_left(lab, timeout=60)


def test_seat_api_refuses_bad_requests(hotline_lab: HotlineLab) -> None:
    assert seat_api(hotline_lab, "/calls/nope/transfers", {"target": "seats"})[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{hotline_lab.http_port}/calls")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401

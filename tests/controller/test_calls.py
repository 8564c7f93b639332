"""The FastAGI routes against a scripted Asterisk peer: what the controller sends, and
what it does with Asterisk's answers. The real Asterisk is in tests/lab."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from ivr.agi.calls import AsteriskSettings, CallController, CallInfo, _Channel
from ivr.agi.glue import confbridge_conf, extensions_conf, queues_conf
from ivr.agi.server import AgiServer
from ivr.agi.session import AgiSession, SessionLimits, SessionTimeout
from ivr.core.clock import SHANGHAI
from ivr.core.engine import CollectDigits, Connect
from ivr.core.routing import Call, Hotline, Target
from ivr.paths import bundled_root

from agi.fake_asterisk import CALLER, FakeAsterisk

Responder = Callable[[str], str]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[CallInfo, list[dict[str, Any]]]] = []
        self.lock = threading.Lock()

    def call_events(self, call: CallInfo, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.calls.append((call, events))

    def types(self) -> list[str]:
        return [e["type"] for _, events in self.calls for e in events]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def controller(hotline: Hotline, recorder: Recorder) -> Iterator[tuple[str, int]]:
    calls = CallController(
        lambda: hotline, events=recorder, clock=lambda: datetime(2022, 1, 10, 9, 0, tzinfo=SHANGHAI)
    )
    server = AgiServer(("127.0.0.1", 0), calls.routes())
    address = server.start()
    yield address
    server.stop()


def asterisk(
    queue_status: str = "",
    dial_status: str = "ANSWER",
    keys: dict[str, str] | None = None,
    hang_up_on: str | None = None,
) -> Responder:
    """Answers as Asterisk would; `keys` maps a prompt to the keys pressed during it."""
    keys = keys or {}

    def respond(command: str) -> str:
        if hang_up_on and command.startswith(hang_up_on):
            return "HANGUP"
        if command.startswith("STREAM FILE"):
            prompt = command.split()[2]
            digit = keys.get(prompt, "")
            return f"200 result={ord(digit) if digit else 0} endpos=8000"
        if command.startswith("GET DATA"):
            prompt = command.split()[2]
            return f"200 result={keys.get(prompt, '')}"
        if command.startswith("GET FULL VARIABLE") and "QUEUESTATUS" in command:
            return f"200 result=1 ({queue_status}||7|seat-1)"
        if command.startswith("GET FULL VARIABLE") and "DIALSTATUS" in command:
            return f"200 result=1 ({dial_status}|30|22|110)"
        return "200 result=0"

    return respond


def run_call(
    address: tuple[str, int],
    respond: Responder,
    *,
    dead_facts: str = "",
    hangup_after_result: bool = False,
    hangup_delay: float = 0.05,
    **env: str,
) -> list[str]:
    """One call; after a hangup the peer answers as Asterisk's dead AGI mode does:
    variable reads with ``dead_facts``, anything else with 511."""
    peer = FakeAsterisk.connect(address)
    if "agi_arg_3" in env:  # Asterisk sends every argument, empty ones too
        env = {"agi_arg_1": "", "agi_arg_2": "", **env}
    peer.send_env("incoming_call", **env)
    commands: list[str] = []
    dead = False
    try:
        while (command := peer.read_command()) is not None:
            commands.append(command)
            if dead:
                if command.startswith("GET FULL VARIABLE"):
                    peer.reply(f"200 result=1 ({dead_facts})")
                else:
                    peer.reply("511 Command Not Permitted on a dead channel")
                continue
            answer = respond(command)
            if answer == "HANGUP":
                dead = True
                if hangup_after_result:  # as seen after Queue: the -1 first, HANGUP after
                    peer.reply("200 result=-1")
                    time.sleep(hangup_delay)
                    peer.reply("HANGUP")
                else:
                    peer.reply("HANGUP", "200 result=-1")
                continue
            peer.reply(answer)
    finally:
        peer.close()
    return commands


CALL = "line=12345;merge_mode=main;mode=main;original_line=12345;region=xiamen;route=main"


def test_12345_call_answers_greets_queues_and_surveys(controller, recorder: Recorder) -> None:
    commands = run_call(
        controller,
        asterisk(keys={"ivr/survey_question": "1"}),
        agi_arg_1="xiamen-ct",
        agi_arg_3="xiamen-12345",
    )
    assert commands == [
        "ANSWER",
        'STREAM FILE ivr/greeting_12345 "120" 0',
        f'EXEC MSet "__IVR_CALL=call_id=1732612345.17;{CALL},CDR(userfield)={CALL}"',
        'EXEC Queue "xiamen-12345,c,,,60"',
        'GET FULL VARIABLE "${QUEUESTATUS}|${ABANDONED}|${QEHOLDTIME}|${MEMBERNAME}"',
        "GET DATA ivr/survey_question 8000 1",
        'STREAM FILE ivr/survey_thanks "" 0',
        "HANGUP",
    ]
    types = recorder.types()
    assert types[0] == "call_offered" and types[-1] == "call_ended"
    answered = next(e for _, es in recorder.calls for e in es if e["type"] == "answered")
    assert (answered["wait_s"], answered["answered_by"]) == (7.0, "seat-1")
    info = recorder.calls[0][0]
    assert info.route.region == "xiamen" and info.caller == "13912340000"


def test_retired_line_plays_its_own_transition_prompt(controller) -> None:
    commands = run_call(controller, asterisk(), agi_dnid="12358", agi_arg_1="fuzhou-ct")
    assert 'STREAM FILE ivr/transition_notice-12358 "" 0' in commands
    (tagged,) = (c for c in commands if c.startswith("EXEC MSet"))
    assert tagged.endswith(
        ",CDR(userfield)=line=12358;merge_mode=whole_merge;mode=whole_merge;"
        'original_line=12358;original_line_name=价格监督;region=fuzhou;route=retired_line"'
    )


class _Commands:
    """Stands in for the session where only the commands sent matter."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, ...]] = []

    def appexec(self, app: str, options: str) -> None:
        self.sent.append(("EXEC", app, options))

    def set_variable(self, name: str, value: str) -> None:
        self.sent.append(("SET", name, value))


def test_variables_go_in_one_command_unless_a_value_would_split(hotline: Hotline) -> None:
    call = Call(dialed="12345", now=datetime(2026, 11, 26, 10, tzinfo=SHANGHAI), region="fuzhou")
    agi = _Commands()
    channel = _Channel(agi, hotline, hotline.route(call), AsteriskSettings())  # type: ignore[arg-type]
    channel._set({"A": "x=1;y=2", "B": "plain"})
    assert agi.sent == [("EXEC", "MSet", "A=x=1;y=2,B=plain")]
    channel._set({"A": "x=1;y=2", "B": "plain"})  # unchanged: nothing sent
    channel._set({"A": "a,b", "B": 'say "hi"'})  # MSet would split or unquote these
    assert agi.sent[1:] == [("SET", "A", "a,b"), ("SET", "B", 'say "hi"')]
    channel._set({"A": "one", "B": 'say "hi"'})  # only A changed: one SET VARIABLE
    assert agi.sent[3:] == [("SET", "A", "one")]


class _LongTalk(_Commands):
    """Records how long each connect may block waiting for Asterisk's answer."""

    uniqueid = "1732612345.17"

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[float] = []

    @contextlib.contextmanager
    def command_timeout(self, seconds: float) -> Iterator[None]:
        self.blocks.append(seconds)
        yield

    @contextlib.contextmanager
    def hangup_expected(self) -> Iterator[None]:
        yield

    def get_full_variable(self, expression: str) -> str:
        return "||7|seat-1" if "QUEUESTATUS" in expression else "ANSWER|3900|3880|110"


@pytest.mark.parametrize(
    "target", [Target("seats", "quanzhou-12315", queue="quanzhou-12315"),
               Target("emergency", "110", number="110")],
)  # fmt: skip
def test_a_conversation_may_outlast_the_ring_timeout(hotline: Hotline, target: Target) -> None:
    # Queue and Dial return when the conversation ends, not when the ringing does:
    # bounding the wait by the ring timeout cut every call longer than about a
    # minute off its survey and queued the caller again.
    call = Call(dialed="12315", now=datetime(2026, 11, 26, 10, tzinfo=SHANGHAI), region="quanzhou")
    agi = _LongTalk()
    channel = _Channel(agi, hotline, hotline.route(call), AsteriskSettings())  # type: ignore[arg-type]
    result = channel.connect(Connect(target, timeout=20, via="queue"))
    assert result.outcome == "answered"
    assert agi.blocks and min(agi.blocks) >= 3600


def test_kept_seats_unanswered_fall_back_to_12345_seats(controller, hotline: Hotline) -> None:
    statuses = iter(["TIMEOUT", ""])

    def respond(command: str) -> str:
        if command.startswith("GET FULL VARIABLE") and "QUEUESTATUS" in command:
            return f"200 result=1 ({next(statuses)}||20|)"
        return asterisk()(command)

    commands = run_call(controller, respond, agi_dnid="12315", agi_arg_1="quanzhou-ct")
    queues = [c for c in commands if c.startswith("EXEC Queue")]
    assert queues == ['EXEC Queue "quanzhou-12315,c,,,20"', 'EXEC Queue "quanzhou-12345,c,,,60"']


def test_a_wait_runs_from_the_first_queue_by_the_controllers_clock(
    hotline: Hotline, recorder: Recorder
) -> None:
    # Each reading of the clock 30 s on: the controller reads it as it resumes the
    # call, so the 12345 seats' queue began 30 s after the kept seats' (which held the
    # caller 20 s of those), and answered after 20 s more: 50 s in all, from the first.
    readings = iter(range(0, 100_000, 30))
    calls = CallController(
        lambda: hotline,
        events=recorder,
        clock=lambda: datetime.fromtimestamp(1_700_000_000 + next(readings), SHANGHAI),
    )
    server = AgiServer(("127.0.0.1", 0), calls.routes())
    address = server.start()
    statuses = iter(["TIMEOUT", ""])

    def respond(command: str) -> str:
        if command.startswith("GET FULL VARIABLE") and "QUEUESTATUS" in command:
            return f"200 result=1 ({next(statuses)}||20|)"
        return asterisk()(command)

    try:
        run_call(address, respond, agi_dnid="12315", agi_arg_1="quanzhou-ct")
    finally:
        server.stop()
    answered = [e for _, events in recorder.calls for e in events if e["type"] == "answered"]
    assert answered and answered[0]["wait_s"] == 20.0
    assert answered[0]["total_wait_s"] == 50.0


def test_emergency_key_dials_110(controller) -> None:
    commands = run_call(
        controller, asterisk(keys={"ivr/greeting_12345": "0", "ivr/emergency_menu": "1"})
    )
    assert 'EXEC Dial "Local/110@ivr-outbound,30,g"' in commands
    assert commands[-1] == "HANGUP"


def test_pingtan_did_on_a_fuzhou_trunk_corrects_the_glue_fallback(controller) -> None:
    commands = run_call(
        controller, asterisk(), agi_dnid="059123112345", agi_arg_1="", agi_arg_3="fuzhou-12345"
    )
    assert commands[0] == 'SET VARIABLE "IVR_FALLBACK_QUEUE" "pingtan-12345"'
    assert 'EXEC Queue "pingtan-12345,c,,,60"' in commands


def test_caller_hanging_up_on_the_first_command_still_ends_the_call(
    controller, recorder: Recorder
) -> None:
    # The first command is the fallback correction for a DID of another region
    commands = run_call(
        controller,
        asterisk(hang_up_on="SET VARIABLE"),
        agi_dnid="059123112345",
        agi_arg_1="",
        agi_arg_3="fuzhou-12345",
    )
    assert commands[0].startswith('SET VARIABLE "IVR_FALLBACK_QUEUE"')
    deadline = time.monotonic() + 5
    while "call_ended" not in recorder.types() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert recorder.types() == ["call_offered", "call_ended"]


@pytest.mark.parametrize(
    ("hangup_after_result", "hangup_delay"),
    [(False, 0.0), (True, 0.05), (True, 0.6)],
    ids=["hangup-first", "hangup-just-after", "hangup-late"],  # late: Asterisk saturated
)
def test_caller_hangs_up_while_queued_is_abandoned(
    controller, recorder: Recorder, hangup_after_result: bool, hangup_delay: float
) -> None:
    commands = run_call(
        controller,
        asterisk(hang_up_on="EXEC Queue"),
        agi_arg_1="longyan-ct",
        dead_facts="||",
        hangup_after_result=hangup_after_result,
        hangup_delay=hangup_delay,
    )
    assert commands[-1].startswith("GET FULL VARIABLE")  # asked the dead channel
    types = recorder.types()
    assert "abandoned" in types and "missed_call_callback_created" in types
    assert "answered" not in types
    assert types[-1] == "call_ended"


def test_caller_hangs_up_after_talking_is_answered_not_abandoned(
    controller, recorder: Recorder
) -> None:
    run_call(
        controller,
        asterisk(hang_up_on="EXEC Queue"),
        agi_arg_1="longyan-ct",
        dead_facts="||9|seat-7",
    )
    types = recorder.types()
    assert "answered" in types and "abandoned" not in types
    answered = next(e for _, es in recorder.calls for e in es if e["type"] == "answered")
    assert answered["wait_s"] == 9.0


def test_a_failure_of_ours_hands_the_caller_to_the_seats(hotline: Hotline, recorder) -> None:
    def broken_clock() -> datetime:
        return datetime(2022, 1, 10, 9, 0)  # naive: the core refuses it mid-route

    calls = CallController(lambda: hotline, events=recorder, clock=broken_clock)
    server = AgiServer(("127.0.0.1", 0), calls.routes())
    address = server.start()
    try:
        commands = run_call(address, asterisk(), agi_dnid="12358", agi_arg_1="fuzhou-ct")
    finally:
        server.stop()
    # the route could not even be decided: closing hands the call to the glue's queue
    assert "HANGUP" not in commands
    assert not any(c.startswith("EXEC") for c in commands)
    # and the call still counts, at the seats of the region it came in on
    events = [e for _, es in recorder.calls for e in es]
    assert [e["type"] for e in events] == ["call_offered", "call_ended"]
    assert events[1]["target_kind"] == "seats" and events[1]["target"] == "fuzhou-12345"
    (info, _) = recorder.calls[0]
    assert info.route.region == "fuzhou" and info.caller == CALLER


def test_an_error_mid_call_sets_the_fallback_and_returns(hotline: Hotline, recorder) -> None:
    # a dial template naming a field that does not exist: our bug, found mid-call
    calls = CallController(
        lambda: hotline,
        AsteriskSettings(dial_template="{nummer}"),
        events=recorder,
        clock=lambda: datetime(2024, 1, 10, 9, 0, tzinfo=SHANGHAI),
    )
    server = AgiServer(("127.0.0.1", 0), calls.routes())
    address = server.start()
    try:
        commands = run_call(
            address,
            asterisk(keys={"ivr/greeting_12345": "0", "ivr/emergency_menu": "1"}),
            agi_arg_1="sanming-ct",
            agi_arg_3="sanming-12345",
        )
    finally:
        server.stop()
    assert commands[-1] == 'SET VARIABLE "IVR_RESULT" "fallback"'
    ended = [e for _, es in recorder.calls for e in es if e["type"] == "call_ended"]
    assert len(ended) == 1 and ended[0]["target_kind"] == "seats"


def test_shipped_glue_matches_the_configuration(hotline: Hotline) -> None:
    shipped = bundled_root() / "dialplans" / "asterisk"
    assert (shipped / "extensions.conf").read_text() == extensions_conf(hotline)
    assert (shipped / "queues.conf").read_text() == queues_conf(hotline)
    assert (shipped / "confbridge.conf").read_text() == confbridge_conf()
    # the lab loads the same three-way room (its template differs in the first line)
    lab = (shipped / "lab" / "confbridge.conf").read_text().splitlines()[1:]
    assert lab == confbridge_conf().splitlines()[1:]


def test_glue_falls_through_to_the_seats_after_agi(hotline: Hotline) -> None:
    text = extensions_conf(hotline)
    controller_ctx = text.split("[ivr-controller]")[1].split("\n\n")[0]
    lines = [
        line.strip()
        for line in controller_ctx.strip().splitlines()
        if not line.strip().startswith(";")
    ]
    agi = next(i for i, line in enumerate(lines) if "AGI(" in line)
    queue = next(i for i, line in enumerate(lines) if "Queue(${IVR_FALLBACK_QUEUE}" in line)
    assert agi < queue
    assert not any(re.search(r"GotoIf|Return|Hangup", line) for line in lines[agi:queue])
    for trunk_id, trunk in hotline.directory.trunks.items():
        seats = hotline.directory.regions[trunk.region].seats
        assert f"[ivr-trunk-{trunk_id}]\n" in text
        block = text.split(f"[ivr-trunk-{trunk_id}]")[1].split("\n\n")[0]
        assert f"IVR_FALLBACK_QUEUE={seats})" in block
        # a call that names no number at all still reaches the controller as 12345
        no_number = block.split("exten => s,1,")[1].splitlines()
        assert no_number[-1].strip() == "same => n,Goto(ivr-controller,12345,1)"


def test_every_routed_queue_is_in_queues_conf(hotline: Hotline) -> None:
    text = queues_conf(hotline, members={"fuzhou-12345": ["PJSIP/seat1"]})
    for queue in hotline.directory.queues():
        assert f"[{queue}]" in text
    assert "member => PJSIP/seat1" in text


def test_bad_route_is_closed_without_commands(controller) -> None:
    peer = FakeAsterisk.connect(controller)
    peer.send_env("no_such_route")
    assert peer.read_command() is None
    peer.close()


def test_disallowed_host_never_gets_a_command(hotline: Hotline) -> None:
    calls = CallController(lambda: hotline)
    server = AgiServer(("127.0.0.1", 0), calls.routes(), allowed_hosts=["127.0.0.1"])
    address = server.start()
    try:
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(2)
        sock.connect(address)
        sock.sendall(b"agi_network_script: incoming_call\n\n")
        # Closed unread: an orderly end or, when our bytes were already in, a reset.
        try:
            got = sock.recv(100)
        except ConnectionResetError:
            got = b""
        assert got == b""
        sock.close()
    finally:
        server.stop()


def test_route_names_are_handler_names() -> None:
    calls = CallController(lambda: None)  # type: ignore[arg-type, return-value]
    assert {name: fn.__name__ for name, fn in calls.routes().items()} == {
        "incoming_call": "incoming_call",
        "transfer_ended": "transfer_ended",
    }


def test_asterisk_breaking_off_mid_call_still_ends_the_call_record(
    controller, recorder: Recorder
) -> None:
    def respond(command: str) -> str:
        if command.startswith("STREAM FILE"):
            return "garbage instead of a result"
        return asterisk()(command)

    run_call(controller, respond, agi_arg_1="putian-ct")
    ended = [e for _, es in recorder.calls for e in es if e["type"] == "call_ended"]
    assert len(ended) == 1 and ended[0]["target_kind"] == "seats"


# -- numbers in the log ----------------------------------------------------------------

MOBILE = "13987654321"


def test_a_dialed_mobile_number_is_masked_in_the_call_line(
    controller, caplog: pytest.LogCaptureFixture
) -> None:
    # A forwarded call can reach the trunk with a mobile number as its DNID.
    caplog.set_level(logging.INFO)
    run_call(controller, asterisk(), agi_dnid=MOBILE, agi_arg_1="fuzhou-ct")
    assert "to 139****4321 from" in caplog.text
    assert MOBILE not in caplog.text


def test_an_unknown_route_named_by_a_number_is_masked(
    controller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    peer = FakeAsterisk.connect(controller)
    peer.send_env(f"incoming_call/{MOBILE}")
    assert peer.read_command() is None
    peer.close()
    assert "unknown route" in caplog.text
    assert MOBILE not in caplog.text


@pytest.mark.parametrize("name", ["139 8765 4321", "139-8765-4321", MOBILE])
def test_the_debug_environment_line_masks_caller_names(
    controller, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="ivr.agi")
    run_call(controller, asterisk(), agi_calleridname=name, agi_rdnis=MOBILE,
             agi_arg_1="fuzhou-ct")  # fmt: skip
    assert "agi env" in caplog.text
    assert name not in caplog.text and MOBILE not in caplog.text


def test_a_caller_typing_slowly_is_not_cut_off(hotline: Hotline) -> None:
    # GET DATA waits its timeout for each key after the prompt: 4 keys at up to 1 s
    # each may outlast one command's result timeout (1 s here, for the real 60).
    ours, theirs = socket.socketpair()
    agi = AgiSession(ours, SessionLimits(env_timeout=1.0, result_timeout=1.0))
    peer = FakeAsterisk(theirs, timeout=5)
    peer.send_env("incoming_call")
    agi.read_env()

    def asterisk() -> None:
        peer.read_command()
        time.sleep(2.0)  # four keys 0.5 s apart
        with contextlib.suppress(OSError):
            peer.reply("200 result=1234")

    threading.Thread(target=asterisk, daemon=True).start()
    call = Call(dialed="12345", now=datetime(2026, 1, 5, 10, tzinfo=SHANGHAI), region="fuzhou")
    channel = _Channel(agi, hotline, hotline.route(call), AsteriskSettings())
    try:
        assert channel.do(CollectDigits("emergency_menu", max_digits=4, timeout=1)) == "1234"
    finally:
        agi.close()
        peer.close()


def scripted_channel(
    hotline: Hotline, limits: SessionLimits, reply: Callable[[str], str], delay: float = 0.0
) -> tuple[_Channel, FakeAsterisk, list[str]]:
    """A Xiamen 12345 call's channel over a peer answering each command with
    `reply(command)` after `delay` seconds; the commands it got are in the list."""
    ours, theirs = socket.socketpair()
    agi = AgiSession(ours, limits)
    peer = FakeAsterisk(theirs, timeout=10)
    peer.send_env()
    sent: list[str] = []

    def asterisk() -> None:
        with contextlib.suppress(OSError):
            while (command := peer.read_command()) is not None:
                sent.append(command)
                time.sleep(delay)
                peer.reply(reply(command))

    threading.Thread(target=asterisk, daemon=True).start()
    agi.read_env()
    call = Call("12345", datetime(2024, 6, 1, 10, tzinfo=SHANGHAI), caller=CALLER, region="xiamen")
    return _Channel(agi, hotline, hotline.route(call), AsteriskSettings()), peer, sent


def test_menus_do_not_renew_the_session_cap(hotline: Hotline) -> None:
    # GET DATA may outlast one command's timeout, but a session of menus still ends
    # at its cap, and the caller goes to the seats.
    limits = SessionLimits(env_timeout=1.0, result_timeout=1.0, session_deadline=0.5)
    channel, peer, _ = scripted_channel(hotline, limits, lambda c: "200 result=49", delay=0.1)
    started = time.monotonic()
    try:
        with pytest.raises(SessionTimeout):
            for _ in range(30):  # 3 s of menus
                channel.do(CollectDigits("emergency_menu", 1, 1))
        assert time.monotonic() - started < 2.0
    finally:
        channel.agi.close()
        peer.close()


def test_ivr_serve_reads_the_real_clock_the_fast_way(hotline: Hotline) -> None:
    from ivr.core.clock import now_local

    assert CallController(lambda: hotline, clock=now_local)._now is time.time
    fixed = CallController(lambda: hotline, clock=lambda: datetime(2024, 1, 1, tzinfo=SHANGHAI))
    assert fixed._now() == datetime(2024, 1, 1, tzinfo=SHANGHAI).timestamp()


def test_a_queue_is_refused_once_the_session_cap_has_passed(hotline: Hotline) -> None:
    limits = SessionLimits(env_timeout=1.0, result_timeout=1.0, session_deadline=0.3)
    channel, peer, sent = scripted_channel(
        hotline,
        limits,
        lambda c: "200 result=1 (||5|seat-1)" if "FULL VARIABLE" in c else "200 result=0",
    )
    seats = hotline.directory.regions["xiamen"].seats
    connect = Connect(Target("seats", seats, queue=seats), 60, "queue", flow="overflow")
    try:
        channel.connect(connect)
        channel.agi._deadline = time.monotonic() - 1  # the cap passed, as a long menu leaves it
        with pytest.raises(SessionTimeout):
            channel.connect(connect)
    finally:
        channel.agi.close()
        peer.close()
    assert sum(c.startswith("EXEC Queue") for c in sent) == 1

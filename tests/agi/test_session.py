"""AgiSession against a fake Asterisk on the other end of a socket pair."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from asterisk.agi import AGIAppError, AGIError, AGIInvalidCommand, AGIUsageError
from hypothesis import given
from hypothesis import strategies as st

from ivr.agi import (
    AgiSession,
    BadSession,
    CallerHungUp,
    InvalidCommand,
    SessionLimits,
    SessionTimeout,
    UsageError,
    mask_text,
)
from ivr.agi.session import _ENV_LINE

from .fake_asterisk import CALLER, UNIQUEID, FakeAsterisk

FAST = SessionLimits(env_timeout=0.3, result_timeout=0.5, send_timeout=0.5, session_deadline=5.0)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


@pytest.fixture
def pair(pool: ThreadPoolExecutor) -> Iterator[tuple[socket.socket, FakeAsterisk]]:
    # Depends on `pool` so the sockets close first and peer threads end.
    ours, theirs = socket.socketpair()
    peer = FakeAsterisk(theirs)
    yield ours, peer
    ours.close()
    peer.close()


def start(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    return pool.submit(fn, *args)


def test_normal_session_sends_commands_and_parses_results(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env("ivr_main", agi_arg_1="seats", agi_arg_2="zh")
    played = start(
        pool,
        peer.play,
        [
            "200 result=0",  # ANSWER
            "200 result=50 endpos=8000",  # STREAM FILE, interrupted by '2' (ASCII 50)
            "200 result=123 (timeout)",  # GET DATA
            "200 result=1",  # SET VARIABLE
            "200 result=0",  # EXEC Dial
            "200 result=0 endpos=16000",  # raw execute
        ],
    )
    env = session.read_env()
    assert env["agi_callerid"] == CALLER
    assert env["agi_accountcode"] == ""
    assert session.script == "ivr_main"
    assert session.uniqueid == UNIQUEID
    assert session.args == ["seats", "zh"]

    session.answer()
    assert session.stream_file("welcome", escape_digits="12") == "2"
    assert session.get_data("menu", timeout=5000, max_digits=3) == "123"
    session.set_variable("ROUTE", "seats")
    assert session.appexec("Dial", "PJSIP/seat1,30") == "0"
    assert session.execute("STREAM FILE", "bye", '""', 0) == {
        "result": ("0", ""),
        "endpos": ("16000", ""),
    }
    session.close()
    assert played.result(timeout=2) == [
        "ANSWER",
        'STREAM FILE welcome "12" 0',
        "GET DATA menu 5000 3",
        'SET VARIABLE "ROUTE" "seats"',
        'EXEC Dial "PJSIP/seat1,30"',
        'STREAM FILE bye "" 0',
    ]


def test_hangup_line_mid_session_raises_caller_hung_up(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    played = start(pool, peer.play, ["200 result=0", "HANGUP"])
    session.read_env()
    session.answer()
    with pytest.raises(CallerHungUp):
        session.stream_file("welcome")
    assert session.hung_up
    # Later commands fail at once without touching the dead channel.
    with pytest.raises(CallerHungUp):
        session.noop()
    session.close()
    assert played.result(timeout=2) == ["ANSWER", 'STREAM FILE welcome "" 0']


def test_caller_hung_up_is_not_an_agi_error() -> None:
    # A handler that catches AGIError to skip a missing prompt must not
    # swallow the end of the call.
    assert not issubclass(CallerHungUp, AGIError)


def test_failed_result_followed_by_hangup_is_a_hangup(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    start(pool, peer.play, [["200 result=-1 endpos=0", "HANGUP"]])
    session.read_env()
    with pytest.raises(CallerHungUp):
        session.stream_file("welcome")


def test_missing_sound_is_an_app_error_and_the_session_goes_on(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    played = start(pool, peer.play, ["200 result=-1 endpos=0", "200 result=0"])
    session.read_env()
    with pytest.raises(AGIAppError) as info:
        session.stream_file("no-such-sound")
    assert not isinstance(info.value, CallerHungUp)
    assert not session.hung_up
    session.answer()
    session.close()
    assert played.result(timeout=2)[-1] == "ANSWER"


def test_dead_channel_511_is_a_hangup(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    start(pool, peer.play, ["511 Command Not Permitted on a dead channel or intercept routine"])
    session.read_env()
    with pytest.raises(CallerHungUp):
        session.answer()


def test_trying_is_skipped_until_the_final_response(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()

    def asterisk() -> str | None:
        command = peer.read_command()
        peer.reply("100 result=0 Trying...")
        time.sleep(0.05)
        peer.reply("100 result=0 Trying...", "200 result=7")
        return command

    got = start(pool, asterisk)
    session.read_env()
    assert session.appexec("Queue", "seats") == "7"
    assert got.result(timeout=2) == 'EXEC Queue "seats"'


def test_endless_trying_is_a_bad_session(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, SessionLimits(max_intermediate=3, env_timeout=0.3))
    peer.send_env()
    start(pool, peer.play, [["100 result=0 Trying..."] * 10])
    session.read_env()
    with pytest.raises(BadSession, match="intermediate"):
        session.answer()


def test_510_raises_invalid_command_and_the_session_goes_on(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    start(pool, peer.play, ["510 Invalid or unknown command", "200 result=0"])
    session.read_env()
    with pytest.raises(InvalidCommand) as info:
        session.execute("FROB NICATE", "x")
    assert isinstance(info.value, AGIInvalidCommand)  # pyst2 callers still catch it
    assert info.value.command == "FROB NICATE x"
    assert "FROB NICATE" in str(info.value)
    session.answer()


def test_520_multi_line_usage_is_consumed_whole(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    usage = [
        "520-Invalid command syntax.  Proper usage follows:",
        "Usage: GET DATA <file to be streamed> [timeout] [maxdigits]",
        " Stream the given file, and receive DTMF data.",
        "520 End of proper usage.",
    ]
    start(pool, peer.play, [usage, "200 result=42"])
    session.read_env()
    with pytest.raises(UsageError) as info:
        session.execute("GET DATA")
    assert isinstance(info.value, AGIUsageError)
    assert "Usage: GET DATA" in info.value.usage
    # Had a usage line been left unread, this would parse it instead.
    assert session.get_data("menu") == "42"


def test_520_single_line(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    start(pool, peer.play, ["520 Invalid command syntax.  Proper usage not available.", "200 1"])
    session.read_env()
    with pytest.raises(UsageError, match="not available"):
        session.execute("SAY NUMBER")


def test_closed_socket_mid_session_is_a_hangup(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()

    def asterisk() -> None:
        peer.read_command()
        peer.sock.shutdown(socket.SHUT_RDWR)

    start(pool, asterisk)
    session.read_env()
    with pytest.raises(CallerHungUp):
        session.answer()
    assert session.hung_up


def test_closed_socket_during_env_is_a_bad_session(pair) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_raw(b"agi_network: yes\nagi_network_script: route\n")
    peer.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(BadSession, match="closed after 2 environment lines"):
        session.read_env()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        b"agi_network: yes\nhello world\n\n",
        b"\n",
    ],
    ids=["http", "tls", "bad-line", "empty"],
)
def test_garbage_env_is_a_bad_session(pair, garbage: bytes) -> None:
    sock, peer = pair
    session = AgiSession(sock, SessionLimits(env_timeout=10.0))
    peer.send_raw(garbage)
    start_t = time.monotonic()
    with pytest.raises(BadSession) as info:
        session.read_env()
    assert not isinstance(info.value, SessionTimeout)
    assert time.monotonic() - start_t < 2.0  # refused on sight, not on the 10 s timeout


def test_never_ending_line_is_refused_by_length_not_by_clock(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, SessionLimits(max_line=4096, env_timeout=10.0))
    start(pool, peer.send_raw, b"agi_network_script: " + b"x" * 20000)
    start_t = time.monotonic()
    with pytest.raises(BadSession, match="longer than 4096"):
        session.read_env()
    assert time.monotonic() - start_t < 2.0  # the 10 s timeout did not decide


def test_never_ending_response_line_is_refused(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, SessionLimits(max_line=1024, result_timeout=10.0))
    peer.send_env()

    def asterisk() -> None:
        peer.read_command()
        peer.send_raw(b"200 result=" + b"9" * 5000)

    start(pool, asterisk)
    session.read_env()
    with pytest.raises(BadSession, match="longer than 1024"):
        session.answer()


def test_silent_peer_times_out(pair) -> None:
    sock, _peer = pair
    session = AgiSession(sock, FAST)
    start_t = time.monotonic()
    with pytest.raises(SessionTimeout, match="silent"):
        session.read_env()
    assert 0.25 <= time.monotonic() - start_t < 2.0


def test_trickling_peer_times_out_per_line_not_per_byte(pair) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            peer.send_raw(b"a")

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        start_t = time.monotonic()
        with pytest.raises(SessionTimeout):
            session.read_env()
        assert time.monotonic() - start_t < 2.0  # a per-recv timeout would never fire
    finally:
        stop.set()
        thread.join()


def test_peer_trickling_whole_lines_gets_env_timeout_for_the_whole_block(pair) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)  # env_timeout 0.3 s
    stop = threading.Event()

    def trickle() -> None:  # each line well within the timeout, the block never done
        for n in range(40):
            if stop.wait(0.1):
                return
            peer.send_raw(f"agi_arg_{n + 1}: x\n".encode())

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        start_t = time.monotonic()
        with pytest.raises(SessionTimeout, match=r"environment not complete within 0\.3 s"):
            session.read_env()
        assert time.monotonic() - start_t < 1.0
    finally:
        stop.set()
        thread.join()


def test_session_deadline_caps_a_slow_but_never_idle_peer(pair, pool) -> None:
    sock, peer = pair
    limits = SessionLimits(env_timeout=1.0, result_timeout=1.0, session_deadline=0.5)
    session = AgiSession(sock, limits)
    peer.send_env()

    def asterisk() -> None:
        while peer.read_command() is not None:
            time.sleep(0.2)
            peer.reply("200 result=0")

    start(pool, asterisk)
    session.read_env()
    start_t = time.monotonic()
    with pytest.raises(SessionTimeout, match="deadline"):
        for _ in range(50):  # 10 s of answers, each well within result_timeout
            session.answer()
    assert time.monotonic() - start_t < 2.0
    session.close()


def test_command_timeout_allows_one_long_command(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, SessionLimits(result_timeout=0.2, env_timeout=0.3))
    peer.send_env()

    def asterisk() -> None:
        while peer.read_command() is not None:
            time.sleep(0.35)
            peer.reply("200 result=0")

    start(pool, asterisk)
    session.read_env()
    with session.command_timeout(2.0):
        assert session.appexec("Dial", "PJSIP/seat1") == "0"
    with pytest.raises(SessionTimeout):
        session.answer()
    session.close()


def test_command_timeout_outlasts_the_session_deadline(pair, pool) -> None:
    # A queued call can last far longer than any sane session deadline.
    sock, peer = pair
    limits = SessionLimits(env_timeout=0.3, result_timeout=0.2, session_deadline=0.3)
    session = AgiSession(sock, limits)
    peer.send_env()

    def asterisk() -> None:
        peer.read_command()
        time.sleep(0.5)  # the "conversation"
        peer.reply("200 result=0")
        peer.read_command()
        peer.reply("200 result=1 (ANSWER)")
        peer.read_command()  # never answered

    start(pool, asterisk)
    session.read_env()
    with session.command_timeout(2.0):
        assert session.appexec("Queue", "seats") == "0"
    assert session.get_variable("DIALSTATUS") == "ANSWER"  # fresh budget after the wait
    start_t = time.monotonic()
    with pytest.raises(SessionTimeout):
        session.noop()
    assert time.monotonic() - start_t < 1.5  # back to the short result timeout
    session.close()


def test_values_cannot_inject_a_second_command(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    played = start(pool, peer.play, ["200 result=1"])
    session.read_env()
    session.set_variable("NAME", 'x" \\\nEXEC Hangup')
    session.close()
    assert played.result(timeout=2) == ['SET VARIABLE "NAME" "x\\" \\\\ EXEC Hangup"']
    with pytest.raises(ValueError):
        AgiSession(socket.socket()).send_command("NOOP\nHANGUP")


def test_no_stderr_chatter_and_numbers_masked_in_logs(pair, pool, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG, logger="ivr.agi")
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    start(pool, peer.play, ["200 result=0", f"200 result=1 ({CALLER})"])
    session.read_env()
    session.appexec("Dial", f"PJSIP/{CALLER}@trunk")
    assert session.get_variable("CALLERID(num)") == CALLER
    session.close()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert "agi >>" in caplog.text and "agi <<" in caplog.text
    assert CALLER not in caplog.text
    assert "139****0000" in caplog.text
    assert UNIQUEID in caplog.text  # still traceable


def test_mask_text_examples() -> None:
    assert mask_text("Dial PJSIP/13912340000@trunk") == "Dial PJSIP/139****0000@trunk"
    assert mask_text("call 12345 from 0591-87654321") == "call 12345 from 059****4321"
    # written in groups, as a caller name or a forwarded number may be
    assert mask_text("name 139 8765 4321.") == "name 139****4321."
    assert mask_text("name 139-8765-4321") == "name 139****4321"
    assert mask_text("from +86 139 8765 4321") == "from 139****4321"
    assert mask_text("tel (0591) 8765 4321 or 139.8765.4321") == "tel 059****4321 or 139****4321"
    # dates, times, short figures and lists of service numbers stay readable
    assert mask_text("window 2024-06-03 to 2024-09-02, 1 30 s") == (
        "window 2024-06-03 to 2024-09-02, 1 30 s"
    )
    assert mask_text("retired_on 2024-06-03 10:00:00") == "retired_on 2024-06-03 10:00:00"
    assert mask_text("lines 12345 12315 12366") == "lines 12345 12315 12366"
    assert mask_text("uniqueid 1732612345.17 on 127.0.0.1") == (
        "uniqueid 1732612345.17 on 127.0.0.1"
    )


@given(
    st.text(alphabet="abc /:@-", max_size=10),
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.text(alphabet="abc /:@-", max_size=10),
)
def test_mask_text_never_leaks_a_mobile_number(before: str, number: str, after: str) -> None:
    masked = mask_text(before + number + after)
    assert number not in masked
    assert number[-4:] in masked


# -- the I/O fast paths: one send per command, the environment in one piece, close ------


def test_a_command_larger_than_the_socket_buffer_goes_out_whole(pair, pool) -> None:
    # The non-blocking send takes what fits; the rest must follow, in order.
    sock, peer = pair
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    session = AgiSession(sock, FAST)
    peer.send_env()
    session.read_env()
    value = "".join(str(i % 10) for i in range(300_000))

    def slow_asterisk() -> list[str]:
        time.sleep(0.1)  # let the sender fill its buffer first
        return peer.play(["200 result=1"])

    played = start(pool, slow_asterisk)
    session.set_variable("BIG", value)
    session.close()
    assert played.result(timeout=3) == [f'SET VARIABLE "BIG" "{value}"']


def test_a_peer_reading_slowly_but_steadily_gets_the_whole_command(pair, pool) -> None:
    # The send timeout bounds a peer that reads nothing, not the whole of a long send:
    # here the command takes about twice send_timeout to go out, with no long pause.
    sock, peer = pair
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    session = AgiSession(sock, FAST)  # send_timeout 0.5 s
    peer.send_env()
    session.read_env()
    value = "y" * 60_000

    def slow_reader() -> bytes:
        got = b""
        while not got.endswith(b"\n"):
            time.sleep(0.05)
            got += peer.sock.recv(2048)
        return got

    reading = start(pool, slow_reader)
    start_t = time.monotonic()
    session.send_command("SET VARIABLE", session._quote("BIG"), session._quote(value))
    assert reading.result(timeout=10) == f'SET VARIABLE "BIG" "{value}"\n'.encode()
    assert time.monotonic() - start_t > 0.5  # longer than send_timeout in all


def test_a_peer_that_never_reads_times_the_send_out(pair, pool) -> None:
    sock, _peer = pair
    session = AgiSession(sock, FAST)  # send_timeout 0.5 s
    start_t = time.monotonic()
    sending = start(pool, session.set_variable, "BIG", "x" * 5_000_000)  # > any buffer
    with pytest.raises(SessionTimeout, match="peer not reading"):
        sending.result(timeout=5)
    assert 0.4 < time.monotonic() - start_t < 3.0
    assert not session.hung_up


ENV_LINES = {"agi_network_script": "ivr_main", "agi_uniqueid": UNIQUEID, "agi_arg_1": "a b"}


@pytest.mark.parametrize(
    ("chunks", "end"),
    [
        ([b"ENV\n\n200 result=0\n"], "\n"),  # all at once, with the answer behind it
        ([b"ENV\n", b"\n200 result=0\n"], "\n"),  # the blank line comes later
        ([b"agi_net", b"work_script: ivr_main\nREST\n\n", b"200 result=0\n"], "\n"),
        ([b"ENV\r\n\r\n200 result=0\r\n"], "\r\n"),  # CRLF: read line by line
    ],
    ids=["whole", "blank-later", "split-line", "crlf"],
)
def test_environment_read_alike_in_one_piece_or_several(
    pair, pool, chunks: list[bytes], end: str
) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    env = end.join(f"{k}: {v}" for k, v in ENV_LINES.items()).encode()
    rest = end.join(f"{k}: {v}" for k, v in ENV_LINES.items() if k != "agi_network_script")

    def asterisk() -> str | None:
        for chunk in chunks:
            peer.send_raw(chunk.replace(b"ENV", env).replace(b"REST", rest.encode()))
            time.sleep(0.05)
        return peer.read_command()

    sent = start(pool, asterisk)
    assert session.read_env() == ENV_LINES
    session.answer()  # its answer was already buffered behind the environment
    assert sent.result(timeout=2) == "ANSWER"


def test_environment_in_one_piece_keeps_the_limits(pair) -> None:
    sock, peer = pair
    session = AgiSession(sock, SessionLimits(max_env_lines=3, env_timeout=10.0))
    peer.send_raw(b"".join(b"agi_x%d: 1\n" % i for i in range(4)) + b"\n")
    with pytest.raises(BadSession, match="more than 3 environment lines"):
        session.read_env()


def test_close_is_idempotent_and_asterisk_sees_the_end_at_once(pair) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    session.read_env()
    session.close()
    assert sock.fileno() == -1
    assert peer.wait_closed() < 0.5
    session.close()
    session.abort()  # after close: nothing to cut, no error


TRICKY_ENV = [
    "agi_request: agi://127.0.0.1:4573/incoming_call",  # colons in the value
    "agi_calleridname: 张三 ",  # not ASCII, a trailing space
    "agi_accountcode: ",  # empty
    "agi_arg_1:fuzhou-ct",  # no space after the colon
    "agi_arg_2:\t\tdouble tab",
    "agi_arg_3: a\x01b",  # a control character stays in the value
]


def test_environment_in_one_piece_reads_as_line_by_line(pair) -> None:
    # The one-piece path must give exactly what matching each line gives.
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_raw("\n".join(TRICKY_ENV).encode() + b"\n\n")
    by_line = {}
    for line in TRICKY_ENV:
        m = _ENV_LINE.fullmatch(line)
        assert m is not None
        by_line[m.group(1)] = m.group(2).strip()
    assert session.read_env() == by_line
    assert by_line["agi_arg_2"] == "double tab" and by_line["agi_arg_3"] == "a\x01b"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("agi_ok: 1\nnot_agi: 2", "not an AGI environment line: 'not_agi: 2'"),
        ("agi_ok: 1\nagi_long: " + "x" * 5000, "line longer than 4096 bytes"),
    ],
)
def test_environment_in_one_piece_names_what_is_wrong(pair, bad: str, reason: str) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_raw(bad.encode() + b"\n\n")
    with pytest.raises(BadSession, match=re.escape(reason)):
        session.read_env()


def _late_hangup(peer: FakeAsterisk, delay: float) -> list[str]:
    """Asterisk with its CPU saturated: Queue's -1 now, the HANGUP line `delay` later."""
    command = peer.read_command()
    peer.reply("200 result=-1")
    time.sleep(delay)
    peer.reply("HANGUP")
    return [command or ""]


def test_a_late_hangup_after_queue_is_still_the_caller_leaving(pair, pool) -> None:
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    session.read_env()
    played = start(pool, _late_hangup, peer, 0.6)  # later than HANGUP_GRACE_S
    with session.hangup_expected(), pytest.raises(CallerHungUp):
        session.appexec("Queue", "fuzhou-12345,c,,,60")
    assert session.hung_up
    assert played.result(timeout=2) == ['EXEC Queue "fuzhou-12345,c,,,60"']


def test_outside_a_connect_a_late_hangup_leaves_an_app_error(pair, pool) -> None:
    # A prompt that cannot play also answers -1: that one must not wait long.
    sock, peer = pair
    session = AgiSession(sock, FAST)
    peer.send_env()
    session.read_env()
    start(pool, _late_hangup, peer, 0.6)
    started = time.monotonic()
    with pytest.raises(AGIAppError) as info:
        session.stream_file("welcome")
    assert not isinstance(info.value, CallerHungUp)
    assert time.monotonic() - started < 0.5


def test_a_bad_lines_excerpt_is_masked_before_it_is_cut() -> None:
    from ivr.agi.session import _preview

    for pad in range(45, 62):  # the number straddles the cut at every offset
        shown = _preview("x" * pad + "13912340000" + "y" * 40)
        assert "13912" not in shown, (pad, shown)  # 5 digits would not be masked alone
        assert len(shown) <= 60 + 5  # quotes and the ellipsis


def test_a_connect_that_returns_at_once_leaves_the_session_its_own_deadline() -> None:
    # A Queue gets hours (it returns when the conversation ends); one that returns at
    # once must not leave the rest of the session with those hours.
    ours, theirs = socket.socketpair()
    agi = AgiSession(ours, SessionLimits(env_timeout=1.0, result_timeout=1.0,
                                         session_deadline=0.5))  # fmt: skip
    peer = FakeAsterisk(theirs, timeout=10)
    peer.send_env()

    def asterisk() -> None:  # slow but never idle: each answer within result_timeout
        with contextlib.suppress(OSError):
            while peer.read_command() is not None:
                time.sleep(0.1)
                peer.reply("200 result=0")

    threading.Thread(target=asterisk, daemon=True).start()
    agi.read_env()
    with agi.command_timeout(30.0):
        agi.appexec("Queue", "seats")
    started = time.monotonic()
    try:
        with pytest.raises(SessionTimeout, match="deadline"):
            for _ in range(30):  # 3 s of commands
                agi.answer()
        assert time.monotonic() - started < 1.5
    finally:
        agi.close()
        peer.close()


def test_mask_text_masks_numbers_however_written_and_leaves_the_rest() -> None:
    for text in (
        "call back 139 8765-4321",
        "call back 139-8765 4321",
        "from +86 591 8765 4321",
        "from +86 10 8765 4321",
        "0086-13987654321",
    ):
        assert "8765" not in mask_text(text), text
    for text in (
        "latency ms p50/p90/p99 150 2000 3000",
        "PJSIP/xiamen-ct-00000012",
        "uniqueid 1732612345.17 on 127.0.0.1:4573",
        "fuzhou-12345 queue",
    ):
        assert mask_text(text) == text

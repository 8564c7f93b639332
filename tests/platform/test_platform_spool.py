"""The spool and spill files on a disk that fills up, and a spool opened while the
publisher is spilling: nothing half-written, nothing out of order."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from platform_support import (
    WRITER_PASSWORD,
    RedisServer,
    call_info,
    simulate_call,
    wait_for,
)
from test_platform_publisher import read_calls

from ivr.events import CallEvent
from ivr.platform.acl import WRITER_USER
from ivr.platform.publisher import Publisher
from ivr.platform.spool import Spool

MakePublisher = Callable[..., Publisher]

# Run in a child: RLIMIT_FSIZE is the kernel cutting a write short and failing the
# next one, as a full disk does, without a disk to fill. (Ignoring SIGXFSZ turns the
# signal into an EFBIG error.)
FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from ivr.platform.spool import SpillFile, Spool

    def disk_full_after(extra):
        resource.setrlimit(resource.RLIMIT_FSIZE, (extra, resource.RLIM_INFINITY))

    def disk_free():
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    folder = Path(sys.argv[1])
    spool = Spool(folder / "spool")
    spool.append([f'{{"batch":1,"n":{n}}}' for n in range(3)])
    segment = next((folder / "spool").glob("seg-*"))
    disk_full_after(segment.stat().st_size + 150)
    try:  # ~3 KiB: less than a write buffer, more than the room left
        spool.append([f'{{"batch":2,"n":{n},"pad":"{"y" * 280}"}}' for n in range(10)])
    except OSError as exc:
        print("batch 2 refused:", exc.strerror)
    disk_free()
    spool.append(['{"batch":3,"n":0}'])
    spool.close()
    print("segments:", [line for p in sorted((folder / "spool").glob("seg-*"))
                        for line in p.read_text().splitlines()])

    spill = SpillFile(folder, "spill-test.jsonl")
    spill.write_line('{"spilled":1}')
    disk_full_after(spill.path.stat().st_size + 10)
    try:
        spill.write_line('{"spilled":2,"pad":"' + "z" * 200 + '"}')
    except OSError as exc:
        print("spill 2 refused:", exc.strerror)
    disk_free()
    spill.write_line('{"spilled":3}')
    spill.finish()
    print("spill:", spill.read_lines(), spill.count)
    """
)


def test_a_batch_the_disk_had_no_room_for_leaves_nothing_behind(tmp_path: Path) -> None:
    # The segment used to be written through a buffer: the part of a failed batch
    # still in it reached the file when the segment was closed, after the file had
    # been cut back. Replayed, it came before the batch's own copy held in memory.
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0] == "batch 2 refused: File too large"
    assert lines[1] == (
        'segments: [\'{"batch":1,"n":0}\', \'{"batch":1,"n":1}\', '
        '\'{"batch":1,"n":2}\', \'{"batch":3,"n":0}\']'
    )
    assert lines[2] == "spill 2 refused: File too large"
    assert lines[3] == "spill: ['{\"spilled\":1}', '{\"spilled\":3}'] 2"  # count is right


def test_a_spool_opens_without_taking_its_publishers_spill_file(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "spill-1700000000000000000-aaaa-1.jsonl").write_text('{"run":"crashed, older"}\n')
    (folder / "spill-1800000000000000000-bbbb-1.jsonl").write_text('{"run":"crashed, newer"}\n')
    (folder / "spill-1900000000000000000-cccc-1.jsonl").write_text('{"run":"ours, live"}\n')
    spool = Spool(folder, own_spills="-cccc-")
    try:
        assert spool.peek(10) == ['{"run":"crashed, older"}', '{"run":"crashed, newer"}']
        assert (folder / "spill-1900000000000000000-cccc-1.jsonl").exists()
    finally:
        spool.close()


def test_a_spool_opened_late_keeps_a_call_in_order(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer, tmp_path: Path
) -> None:
    # The spool could not be opened at start (the previous controller still held its
    # lock); opened later, it took the spill file callers were writing to as its own
    # newest segment, ahead of older events of the same call still in memory.
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o700)
    predecessor = (folder / ".lock").open("ab")
    fcntl.flock(predecessor.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    pub = make_publisher(spool_dir=folder, buffer_size=4, batch_size=2, linger_s=0.2)
    assert pub.stats()["spool_ok"] is False
    predecessor.close()
    server.kill()
    busy, started = threading.Event(), threading.Event()

    def slow_batch() -> list[CallEvent]:  # keeps the worker away for a moment
        started.set()
        busy.wait(5)
        return []

    pub.publish_later(slow_batch)
    assert started.wait(5)
    events = simulate_call(call_info(3))
    for event in events[:6]:  # 4 into the buffer, 2 into a spill file
        assert pub.publish(event)
    assert pub.stats()["spill_pending"] == 2
    time.sleep(1.1)  # the spool may be tried again
    busy.set()
    assert wait_for(lambda: pub.stats()["backlog_disk"] > 0)
    assert pub.publish(events[6])
    server.start()
    assert pub.flush(5)
    got = [f["seq"] for f in read_calls(platform)[events[0].call_id]]
    assert got == [str(e.seq) for e in events]
    assert pub.stats()["dropped"] == 0


def test_an_unreadable_spool_line_counts_once_however_often_replay_fails(
    make_publisher: MakePublisher, platform: redis.Redis, server: RedisServer, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    server.kill()
    first = make_publisher(spool_dir=folder)
    events = simulate_call(call_info(5))
    assert first.publish_many(events) == len(events)
    first.close(timeout=5)  # Redis away: all of them in the spool
    (segment,) = folder.glob("seg-*")
    segment.write_bytes(b"half a line from a crash\n" + segment.read_bytes())
    second = Publisher(
        server.url(WRITER_USER, WRITER_PASSWORD), spool_dir=folder, retry_interval=0.05,
        max_retry_interval=0.1, socket_timeout=0.3,
    )  # fmt: skip
    try:
        assert wait_for(lambda: second.stats()["redis_errors"] >= 4)  # replay failed, again
        server.start()
        assert second.flush(5)
        assert second.stats()["dropped"] == 1  # the line, once
        got = [f["seq"] for f in read_calls(platform)[events[0].call_id]]
        assert got == [str(e.seq) for e in events]
    finally:
        second.close(timeout=5)

"""An append-only on-disk FIFO of text lines, kept while Redis cannot take events.

The directory holds numbered segments `seg-<n>.jsonl`, read oldest first. Writes
are whole batches followed by one fsync; a batch that fails half-way is cut back
so a segment never ends in half a batch. Fully replayed segments are deleted,
which is how the spool shrinks back to nothing after an outage.

Caller threads never touch `Spool`: when the in-memory buffer is full they write
to a `SpillFile`, which the publisher's worker later adopts as the next segment.
Only one process may use a directory (an flock on `.lock` enforces it).

Files hold callers' full numbers (callback tasks need them): the directory is
created 0700 and every file 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from typing import BinaryIO

_SEGMENT = re.compile(r"seg-(\d{12})\.jsonl")
_SPILL = re.compile(r"spill-[\w.-]+\.jsonl")


def _count_lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _fsync_dir(directory: Path) -> None:
    # A new or renamed file survives a crash only once its directory entry is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_private(path: Path, flags: int) -> BinaryIO:
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    # Unbuffered: bytes a failed write left in a buffer would reach the file later, at
    # close, after the file was cut back to its last whole batch.
    return os.fdopen(fd, "ab" if flags & os.O_APPEND else "rb", buffering=0)


def _append_whole(fd: int, data: bytes, *, durable: bool = False) -> int:
    """Append all of ``data`` (then fsync, if ``durable``), or raise with the file cut
    back to where it was. Returns where it was."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise
    return start


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines to a private file, durably (one fsync)."""
    with _open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND) as file:
        _append_whole(file.fileno(), "".join(line + "\n" for line in lines).encode(), durable=True)


class Spool:
    """Single-threaded: only the publisher's worker thread calls it. Raises OSError."""

    def __init__(
        self, directory: Path, *, segment_bytes: int = 8 << 20, own_spills: str = ""
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = _open_private(self.directory / ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise OSError(f"spool directory {self.directory} is used by another process") from None
        self._segments: list[Path] = []
        self._lines: dict[Path, int] = {}
        self._writer: BinaryIO | None = None
        self._writer_path: Path | None = None
        self._read_offset = 0  # bytes already replayed in the first segment
        self._read_lines = 0
        self._peeked: list[tuple[int, int]] = []  # (segment index, end offset) per line
        self.recovered = 0
        found = sorted(p for p in self.directory.iterdir() if _SEGMENT.fullmatch(p.name))
        for path in found:
            self._segments.append(path)
            self._lines[path] = _count_lines(path)
        # A spill file left by a crash holds the newest events of that run (named by
        # time, so oldest first). Those of the publisher opening this spool (names
        # holding its mark, `own_spills`) may be written to right now: it adopts them
        # itself once finished.
        for path in sorted(p for p in self.directory.iterdir() if _SPILL.fullmatch(p.name)):
            if not (own_spills and own_spills in path.name):
                self.adopt(path, _count_lines(path))
        self.recovered = self.pending

    @property
    def pending(self) -> int:
        return sum(self._lines.values()) - self._read_lines

    def _next_path(self) -> Path:
        match = _SEGMENT.fullmatch(self._segments[-1].name) if self._segments else None
        last = int(match[1]) if match else 0
        return self.directory / f"seg-{last + 1:012d}.jsonl"

    def _seal(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
        self._writer = None
        self._writer_path = None

    def append(self, lines: list[str]) -> None:
        """Append whole lines durably (one fsync), or raise and leave nothing of them."""
        if not lines:
            return
        if self._writer is None:
            fresh = self._next_path()
            self._writer = _open_private(fresh, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self._writer_path = fresh
            self._segments.append(fresh)
            self._lines[fresh] = 0
            _fsync_dir(self.directory)
        writer, path = self._writer, self._writer_path
        assert path is not None
        data = "".join(line + "\n" for line in lines).encode()
        try:
            start = _append_whole(writer.fileno(), data, durable=True)
        except OSError:
            self._seal()
            if self._lines.get(path) == 0 and path == self._segments[-1]:
                self._drop_segment(len(self._segments) - 1)
            raise
        self._lines[path] += len(lines)
        if start + len(data) >= self.segment_bytes:
            self._seal()

    def adopt(self, path: Path, count: int) -> None:
        """Make a finished spill file the newest segment (sealed: never appended to)."""
        self._seal()
        if count == 0:
            path.unlink(missing_ok=True)
            return
        target = self._next_path()
        os.replace(path, target)
        _fsync_dir(self.directory)
        self._segments.append(target)
        self._lines[target] = count

    def peek(self, limit: int) -> list[str]:
        """Up to `limit` of the oldest unreplayed lines, without consuming them."""
        out: list[str] = []
        self._peeked = []
        for index, path in enumerate(self._segments):
            if len(out) >= limit:
                break
            offset = self._read_offset if index == 0 else 0
            with open(path, "rb") as f:
                f.seek(offset)
                while len(out) < limit:
                    raw = f.readline()
                    if not raw:
                        break
                    offset += len(raw)
                    out.append(raw.rstrip(b"\n").decode("utf-8", errors="replace"))
                    self._peeked.append((index, offset))
        return out

    def commit(self, count: int) -> None:
        """Consume the first `count` lines of the last peek; drop finished segments."""
        if count <= 0:
            return
        consumed = self._peeked[:count]
        self._peeked = []
        index, offset = consumed[-1]
        in_last = sum(1 for i, _ in consumed if i == index)
        read_lines = in_last + (self._read_lines if index == 0 else 0)
        for _ in range(index):
            self._drop_segment(0)
        self._read_offset = offset
        self._read_lines = read_lines
        if read_lines >= self._lines[self._segments[0]]:
            self._drop_segment(0)

    def _drop_segment(self, index: int) -> None:
        path = self._segments.pop(index)
        del self._lines[path]
        if path == self._writer_path:
            self._seal()
        if index == 0:
            self._read_offset = 0
            self._read_lines = 0
        with contextlib.suppress(OSError):
            path.unlink()

    def close(self) -> None:
        self._seal()
        with contextlib.suppress(OSError):
            self._lock.close()


class SpillFile:
    """Where caller threads put events while the in-memory buffer is full.

    Each line is written straight to the kernel (no fsync: that would make the
    caller wait on the disk); the worker fsyncs when it adopts the file.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.path = Path(directory) / name
        self._file = _open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.count = 0

    def write_line(self, line: str) -> None:
        """Append one whole line, or raise leaving none of it (so `count` is right)."""
        _append_whole(self._file.fileno(), (line + "\n").encode())
        self.count += 1

    def finish(self) -> None:
        try:
            os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def read_lines(self) -> list[str]:
        return [
            line.decode("utf-8", errors="replace") for line in self.path.read_bytes().splitlines()
        ]

"""A fake Asterisk: plays Asterisk's side of a FastAGI connection over a plain
socket (sends the environment block, reads commands, answers `200 result=...`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

CALLER = "13912340000"
UNIQUEID = "1732612345.17"


def env_block(script: str = "route", **extra: str) -> bytes:
    """The environment block Asterisk 22 sends for AGI(agi://host/<script>)."""
    env = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}",
        "agi_channel": "PJSIP/trunk-00000001",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": UNIQUEID,
        "agi_version": "22.0.0",
        "agi_callerid": CALLER,
        "agi_calleridname": "unknown",
        "agi_callingpres": "0",
        "agi_dnid": "12345",
        "agi_rdnis": "unknown",
        "agi_context": "from-trunk",
        "agi_extension": "12345",
        "agi_priority": "1",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140230000000000",
    }
    env.update(extra)
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


class FakeAsterisk:
    """One Asterisk-side connection. Every read has a timeout so a broken
    server fails the test instead of hanging it."""

    def __init__(self, sock: socket.socket, timeout: float = 3.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self._buf = b""
        self.connect_time = 0.0

    @classmethod
    def connect(
        cls, address: tuple[str, int], *, source: str | None = None, timeout: float = 3.0
    ) -> FakeAsterisk:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        start = time.monotonic()
        sock.connect(address)
        peer = cls(sock, timeout)
        peer.connect_time = time.monotonic() - start
        return peer

    def send_env(self, script: str = "route", **extra: str) -> None:
        self.sock.sendall(env_block(script, **extra))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{line}\n" for line in lines).encode())

    def read_command(self) -> str | None:
        """The next command line, or None once the server closed."""
        while b"\n" not in self._buf:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def play(self, answers: Sequence[str | Sequence[str]]) -> list[str]:
        """Answer each command with the next answer (a line or several lines),
        then record anything else sent until the server closes."""
        commands: list[str] = []
        for answer in answers:
            command = self.read_command()
            if command is None:
                return commands
            commands.append(command)
            self.reply(*([answer] if isinstance(answer, str) else answer))
        while (command := self.read_command()) is not None:
            commands.append(command)
        return commands

    def wait_closed(self) -> float:
        """Seconds until the server closed the connection (reads and discards)."""
        start = time.monotonic()
        while self.read_command() is not None:
            pass
        return time.monotonic() - start

    def close(self) -> None:
        self.sock.close()

"""The hotline in the lab: the real Asterisk loaded with our glue, the controller
attached, and SIPp answerers standing in for everyone a call can reach.

| answerer | address   | stands in for                                              |
|----------|-----------|------------------------------------------------------------|
| seats    | 127.0.0.2 | every region's 12345 seats, enterprise and dialect seats    |
| kept     | 127.0.0.3 | the kept seats of dual-number lines                         |
| outside  | 127.0.0.4 | what the controller dials: sub-centres, 110/119/120/122,    |
|          |           | utility lines (the Request-URI names the number dialled)   |
| silent   | 127.0.0.5 | a seat group that never answers: Ningde's kept seats and    |
|          |           | Ningde's sub-centres (area code 0593), for the fallbacks    |
| desk     | 127.0.0.9 | Putian's 12345 seats: they talk long enough to transfer a   |
|          |           | caller (Putian's sub-centres, 0594…, never answer either)   |

Callers on 127.0.0.1 come in on Fuzhou's trunk, on 127.0.0.6 on Pingtan's, on
127.0.0.7 on Ningde's and on 127.0.0.8 on Putian's.
An admin tries a dialplan change here with real calls before it goes live.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.agi.glue import extensions_conf, queues_conf
from ivr.check import load_hotline
from ivr.core.directory import Seats
from ivr.core.routing import Hotline
from ivr.lab.conf import LabConfig, Seat, Trunk
from ivr.lab.lab import STATE_IN_ROOT, Lab, LabError, LabMark, default_root
from ivr.render import SOUNDS

AGI_PORT = 4573
HTTP_PORT = 8089  # the lab controller's /metrics, apart from a production one on 8080
SEAT_HOLD_S = 3.0  # a seat talks this long, then hangs up: the caller hears the survey
LAB_SEAT_TOKEN = "lab-seat-token"  # the lab controller's seat API bearer token
DESK_HOLD_S = 32.0  # a desk seat talks this long: time for a transfer and its ring timeout

SEATS = (
    Seat("seats", "127.0.0.2", hold=SEAT_HOLD_S),
    Seat("kept", "127.0.0.3", hold=SEAT_HOLD_S),
    Seat("outside", "127.0.0.4", hold=SEAT_HOLD_S),
    Seat("silent", "127.0.0.5", ring=3600.0),
    Seat("desk", "127.0.0.9", hold=DESK_HOLD_S),
)
TRUNKS = (
    Trunk("fuzhou-trunk", "127.0.0.1", context="ivr-trunk-fuzhou-ct"),
    Trunk("pingtan-trunk", "127.0.0.6", context="ivr-trunk-pingtan-ct"),
    Trunk("ningde-trunk", "127.0.0.7", context="ivr-trunk-ningde-ct"),
    Trunk("putian-trunk", "127.0.0.8", context="ivr-trunk-putian-ct"),
)
SILENT_REGION = "ningde"
DESK_REGION = "putian"
# The lab's [ivr-outbound]: Ningde's and Putian's sub-centres (0593…, 0594…) never
# answer, the rest does.
LAB_OUTBOUND = (
    "exten => _0593XXXXX,1,Dial(PJSIP/${EXTEN}@silent)",
    " same => n,Hangup()",
    "exten => _0594XXXXX,1,Dial(PJSIP/${EXTEN}@silent)",
    " same => n,Hangup()",
    "exten => _X.,1,Dial(PJSIP/${EXTEN}@outside)",
    " same => n,Hangup()",
)


def members(hotline: Hotline) -> dict[str, list[str]]:
    """Which answerer answers for each queue."""
    directory = hotline.directory
    out: dict[str, list[str]] = {}
    for region_id, region in directory.regions.items():
        for queue in (
            region.seats,
            region.enterprise_seat,
            region.callback_list,
            *(d.queue for d in region.dialect_seats),
        ):
            out[queue] = ["PJSIP/desk" if region_id == DESK_REGION else "PJSIP/seats"]
        for number, line in directory.lines.items():
            if (
                directory.seats_of(number, region_id) is Seats.KEPT
                and line.mode.value == "dual_number"
            ):
                seat = "silent" if region_id == SILENT_REGION else "kept"
                out[directory.kept_seats_queue(number, region_id)] = [f"PJSIP/{seat}"]
    return out


def lab_config(
    hotline: Hotline, *, agi_port: int = AGI_PORT, verbose: int = 3, trace_seats: bool = True
) -> LabConfig:
    return LabConfig(
        seats=SEATS,
        trunks=TRUNKS,
        extensions=(extensions_conf(hotline, f"agi://127.0.0.1:{agi_port}", LAB_OUTBOUND),),
        queues=(queues_conf(hotline, members(hotline)),),
        verbose=verbose,
        trace_seats=trace_seats,
    )


@dataclass
class HotlineLab:
    """The lab Asterisk plus a controller process serving the configuration in ``config``."""

    config: Path
    root: Path
    state_dir: Path
    agi_port: int = AGI_PORT
    pretend_now: str | None = None  # the controller's clock starts here (ISO date-time)
    redis_url: str | None = None  # where the controller publishes (default: its config's)
    http_port: int = HTTP_PORT

    @classmethod
    def create(
        cls,
        config: Path,
        root: Path | None = None,
        name: str = "hotline",
        agi_port: int = AGI_PORT,
        pretend_now: str | None = None,
        redis_url: str | None = None,
    ) -> HotlineLab:
        root = Path(root or default_root())
        state = root / STATE_IN_ROOT.relative_to("/") / name
        return cls(config, root, state, agi_port, pretend_now, redis_url)

    def lab(self, hotline: Hotline | None = None, **kwargs: Any) -> Lab:
        hotline = hotline or load_hotline(self.config)
        return Lab(self.root, self.state_dir, lab_config(hotline, agi_port=self.agi_port, **kwargs))

    # -- lifecycle -------------------------------------------------------------------

    def up(self, **kwargs: Any) -> Lab:
        hotline = load_hotline(self.config)  # a broken configuration never reaches the lab
        self.install_sounds()
        lab = self.lab(hotline, **kwargs)
        lab.up()
        self.start_controller()
        return lab

    def down(self) -> None:
        self.stop_controller()
        self.lab().down()

    def install_sounds(self) -> None:
        """The rendered prompts, where Asterisk plays `ivr/<name>` from."""
        source = self.config / SOUNDS
        target = self.root / "usr/share/asterisk/sounds/ivr"
        target.mkdir(parents=True, exist_ok=True)
        for wav in source.glob("*.wav"):
            destination = target / wav.name
            # Any difference, not just an older copy: the root is shared, and another
            # configuration (bench/lab_capacity.py's one-second greeting) may have put a
            # newer file there.
            ours = wav.stat()
            theirs = destination.stat() if destination.exists() else None
            if theirs is None or (theirs.st_mtime, theirs.st_size) != (ours.st_mtime, ours.st_size):
                shutil.copy2(wav, destination)

    # -- the controller process ----------------------------------------------------------

    @property
    def controller_pidfile(self) -> Path:
        return self.state_dir / "run" / "controller.pid"

    @property
    def controller_log(self) -> Path:
        return self.state_dir / "log" / "controller.log"

    def controller_pid(self) -> int | None:
        try:
            pid = int(self.controller_pidfile.read_text())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"serve" in cmdline else None

    def start_controller(self, timeout: float = 15.0) -> int:
        pid = self.controller_pid()
        if pid:
            self.stop_controller()
        extra = ["--pretend-now", self.pretend_now] if self.pretend_now else []
        extra += ["--redis", self.redis_url] if self.redis_url else []
        self.controller_log.parent.mkdir(parents=True, exist_ok=True)
        self.controller_pidfile.parent.mkdir(parents=True, exist_ok=True)
        config = self.lab().config
        env = {
            **os.environ,
            # the controller's own manager user carries out seats' transfers; the
            # seat API is on
            "IVR_AMI_USERNAME": config.controller_ami_user,
            "IVR_AMI_SECRET": config.controller_ami_secret,
            "IVR_SEAT_API_TOKEN": LAB_SEAT_TOKEN,
        }
        with self.controller_log.open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ivr.cli",
                    "serve",
                    "--config",
                    str(self.config),
                    "--agi",
                    f"127.0.0.1:{self.agi_port}",
                    "--http",
                    f"127.0.0.1:{self.http_port}",
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=env,
            )
        self.controller_pidfile.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LabError(
                    f"the controller exited ({process.returncode}); see {self.controller_log}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.agi_port), timeout=0.5),
            ):
                return process.pid
            time.sleep(0.1)
        raise LabError(f"the controller did not listen on {self.agi_port} within {timeout} s")

    def stop_controller(self, timeout: float = 10.0) -> None:
        pid = self.controller_pid()
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.controller_pid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if self.controller_pid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.controller_pidfile.unlink(missing_ok=True)

    # -- what happened ---------------------------------------------------------------

    def status(self, since: LabMark | None = None) -> dict[str, Any]:
        lab = self.lab()
        base = lab.status()
        landed = []
        for seat, invites in lab.calls_by_seat(since).items():
            for invite in invites:
                landed.append(
                    {
                        "answerer": seat,
                        "request_user": invite.request_user,
                        "from": invite.from_user,
                    }
                )
        cdrs = [
            {
                k: cdr.get(k, "")
                for k in (
                    "src",
                    "dst",
                    "dcontext",
                    "dstchannel",
                    "lastapp",
                    "lastdata",
                    "disposition",
                    "userfield",
                )
            }
            for cdr in lab.cdrs(since)
        ]
        return {
            "root": str(self.root),
            "sip": lab.sip_address,
            "config": str(self.config),
            "asterisk": base.get("asterisk"),
            "controller": {
                "running": self.controller_pid() is not None,
                "pid": self.controller_pid(),
                "metrics": f"http://127.0.0.1:{self.http_port}/metrics",
                "agi": f"127.0.0.1:{self.agi_port}",
                "log": str(self.controller_log),
            },
            "answerers": {seat.name: seat.address for seat in SEATS},
            "landed": landed,
            "cdrs": cdrs,
        }

"""The calls this controller is carrying now, by call id: what a seat's transfer needs.

A FastAGI session is one call, but a transfer outlives it: Asterisk moves the caller
out of the session's Queue() into the glue's transfer contexts, the session ends, and
the caller comes back on a new session (transfer_ended) with the same unique id. In
between, the call's engine session waits here, "parked".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ivr.core.engine import CallSession, Instruction
from ivr.core.transfer import TransferPlan

# A parked call that never came back (Asterisk restarted mid-transfer, or its
# transfer_ended session was refused) is given up after this long: longer than any
# conversation with a sub-centre.
PARKED_MAX_S = 6 * 3600.0


@dataclass
class LiveCall:
    info: Any  # calls.CallInfo: call id, caller, route
    session: CallSession
    channel: str  # the caller's channel name (agi_channel), for AMI
    started: float = field(default_factory=time.monotonic)
    talking_to: str = ""  # the seat's channel once a person answered (BRIDGEPEER)
    transfer: TransferPlan | None = None
    transfer_concluded: bool = False  # read unlocked by a ringing target's thread: it stops
    next_instruction: Instruction | None = None  # where the flow goes on after the transfer
    held_events: list[dict[str, Any]] = field(default_factory=list)
    parked: threading.Event = field(default_factory=threading.Event)
    parking: bool = False  # the session took the caller's leaving for the transfer's move
    lock: threading.Lock = field(default_factory=threading.Lock)
    # One call's events leave in order even when the AMI watcher reports a transfer's
    # outcome while the call's own session goes on.
    events_lock: threading.RLock = field(default_factory=threading.RLock)

    def start_transfer(self, plan: TransferPlan) -> str:
        """Claim the call for one transfer: "" when claimed, else why not."""
        with self.lock:
            if self.transfer is not None and not self.transfer_concluded:
                return "a transfer of this call is already under way"
            if self.parked.is_set():
                # The caller is still in an earlier transfer's room (its target did not
                # answer): only transfer_ended may take the call up again.
                return "the caller is in a three-way room; transfer again once it has ended"
            self.transfer, self.transfer_concluded = plan, False
            self.parking = False
            return ""

    def may_park(self) -> bool:
        """The caller left Queue()/Dial() while a transfer was starting: take that for
        the transfer's move, unless the transfer was abandoned meanwhile. Decided under
        the lock, so that exactly one side (this or `abandon_transfer`) ends the call."""
        with self.lock:
            if self.transfer is None or self.transfer_concluded:
                return False
            self.parking = True
            return True

    def conclude_transfer(self) -> TransferPlan | None:
        """The plan, the first time its outcome is reported; None after that."""
        with self.lock:
            if self.transfer is None or self.transfer_concluded:
                return None
            self.transfer_concluded = True
            return self.transfer

    def abandon_transfer(self) -> bool:
        """The transfer never started (the switch refused it): the call is as before.

        True when the caller's session parked the call meanwhile: then the caller did
        not move but hung up, no transfer_ended will come, and the call must be ended
        by whoever abandons."""
        with self.lock:
            self.transfer, self.transfer_concluded = None, False
            parking, self.parking = self.parking, False
            return parking


class LiveCalls:
    """Thread-safe: FastAGI sessions register, the transfer API looks up.

    ``given_up`` is told of each parked call dropped because it never came back, so
    that its record can still be ended."""

    SWEEP_EVERY_S = 60.0

    def __init__(self, given_up: Callable[[LiveCall], None] | None = None) -> None:
        self._calls: dict[str, LiveCall] = {}
        self._lock = threading.Lock()
        self._swept = time.monotonic()
        self.given_up = given_up

    def add(self, call: LiveCall) -> None:
        dropped: list[LiveCall] = []
        with self._lock:
            self._calls[call.info.call_id] = call
            # Looking for forgotten parked calls walks every call: not on each call's time.
            if call.started - self._swept > self.SWEEP_EVERY_S:
                self._swept = call.started
                dropped = self._sweep()
        for forgotten in dropped:  # outside the lock: it publishes
            if self.given_up is not None:
                self.given_up(forgotten)

    def get(self, call_id: str) -> LiveCall | None:
        with self._lock:
            return self._calls.get(call_id)

    def remove(self, call_id: str) -> None:
        with self._lock:
            self._calls.pop(call_id, None)

    def all(self) -> list[LiveCall]:
        with self._lock:
            return list(self._calls.values())

    def __len__(self) -> int:
        return len(self._calls)

    def _sweep(self) -> list[LiveCall]:
        now = time.monotonic()
        dropped = []
        for call_id, call in list(self._calls.items()):
            if call.parked.is_set() and now - call.started > PARKED_MAX_S:
                dropped.append(self._calls.pop(call_id))
        return dropped

"""A seat's transfer on Asterisk, carried out over the manager interface (AMI).

The routing core plans the transfer (ivr/core/transfer.py); this module moves the
channels. Three-way (三方转接): the caller and the seat go into the call's ConfBridge room
([ivr-three-way] in the glue) and the target is rung into it; if it does not answer
within the ring timeout, the caller is still talking to the seat. One-key (一键转接): the
caller alone goes to [ivr-one-key], which rings the target; the seat is free at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.agi import variables as var
from ivr.agi.calls import CallController
from ivr.agi.live import LiveCall
from ivr.agi.manager import AmiLink, AmiSettings, AmiUnavailable
from ivr.core.privacy import mask_number
from ivr.core.routing import Target
from ivr.core.transfer import (
    CallNotFound,
    TransferPlan,
    TransferRefused,
    UnknownTransferTarget,
    plan_transfer,
)

log = logging.getLogger(__name__)

# OriginateResponse's Reason: why the target's leg did not come up.
_ORIGINATE_REASON = {"1": "noanswer", "3": "noanswer", "5": "busy", "8": "failed"}
# How long the seat's request waits for Asterisk to move the caller before ringing.
PARK_WAIT_S = 3.0
# How often a ringing target's thread looks whether the transfer ended without it.
RING_POLL_S = 0.25


@dataclass
class AsteriskTransfers:
    """Seats' transfers for the calls a CallController carries."""

    controller: CallController
    ami: AmiSettings
    link_factory: Callable[[AmiSettings], AmiLink] = AmiLink
    transfer_queue_context: str = "ivr-transfer-queue"

    @property
    def front_end(self) -> str:
        return "asterisk"

    def live_calls(self) -> list[dict[str, Any]]:
        out = []
        for live in self.controller.live.all():
            route = live.info.route
            state = "transferring" if live.parked.is_set() else "in_flow"
            out.append(
                {
                    "call_id": live.info.call_id,
                    "front_end": "asterisk",
                    "line": route.line,
                    "region": route.region,
                    "mode": route.mode.value,
                    "caller": mask_number(live.info.caller),
                    "state": state,
                    "age_s": round(time.monotonic() - live.started, 1),
                }
            )
        return out

    def knows(self, call_id: str) -> bool:
        return self.controller.live.get(call_id) is not None

    def transfer(
        self, call_id: str, target_ref: str, seat_call: str = "", method: str | None = None
    ) -> TransferPlan:
        """Start a transfer; returns once the caller is on the move (the outcome comes
        later, as events). Raises CallNotFound, UnknownTransferTarget, TransferRefused
        or AmiUnavailable; on any of these the call is left as it was."""
        live = self.controller.live.get(call_id)
        if live is None:
            raise CallNotFound(call_id)
        hotline = live.session.hotline
        plan = plan_transfer(
            hotline.directory, hotline.transfers, live.info.route, target_ref, method
        )  # a request that names nobody is refused as such, whatever the switch's state
        if not self.ami.configured:
            raise AmiUnavailable("no manager (AMI) user configured for transfers")
        refused = live.start_transfer(plan)
        if refused:
            raise TransferRefused(refused)
        link: AmiLink | None = None
        try:
            link = self.link_factory(self.ami).open()
            seat = link.getvar(live.channel, "BRIDGEPEER")
            if not seat:
                raise TransferRefused("the caller is not talking to a seat")
            live.talking_to = seat
            if plan.method == "three_way":
                self._into_the_room(link, live, seat)
            else:
                self._to_one_key(link, live, plan)
        except Exception:
            if live.abandon_transfer():
                self.controller.end_parked_call(live)  # the caller left meanwhile
            if link is not None:
                link.close()
            raise
        if plan.method == "three_way":
            threading.Thread(
                target=self._ring_target,
                args=(link, live, plan),
                name=f"transfer-{call_id}",
                daemon=True,
            ).start()
        else:
            link.close()  # transfer_ended reports the outcome
        return plan

    # -- the moves -------------------------------------------------------------------
    def _room(self, live: LiveCall) -> str:
        return f"ivr-{live.info.call_id}"

    def _dial(self, target: Target) -> str:
        if target.queue:
            return f"Local/{target.queue}@{self.transfer_queue_context}"
        return self.controller.settings.dial_template.format(number=target.number)

    def _into_the_room(self, link: AmiLink, live: LiveCall, seat: str) -> None:
        room = self._room(live)
        for channel in (live.channel, seat):
            link.action("Setvar", Channel=channel, Variable=var.TRANSFER_ROOM, Value=room)
        link.action(
            "Redirect",
            Channel=live.channel,
            Context="ivr-three-way",
            Exten="caller",
            Priority="1",
            ExtraChannel=seat,
            ExtraContext="ivr-three-way",
            ExtraExten="member",
            ExtraPriority="1",
        )

    def _to_one_key(self, link: AmiLink, live: LiveCall, plan: TransferPlan) -> None:
        caller = live.channel
        link.action("Setvar", Channel=caller, Variable=var.TRANSFER_DIAL,
                    Value=self._dial(plan.target))  # fmt: skip
        link.action("Setvar", Channel=caller, Variable=var.TRANSFER_RING_S,
                    Value=str(plan.ring_timeout))  # fmt: skip
        link.action("Redirect", Channel=caller, Context="ivr-one-key", Exten="caller",
                    Priority="1")  # fmt: skip

    def _await_answer(
        self,
        link: AmiLink,
        live: LiveCall,
        response: Callable[[float], Any],
        ringing: str,
        timeout: float,
    ) -> Any:
        """The Originate's response, or None; once the caller has hung up or the room
        has closed (the session reported the outcome), stop ringing the target: an
        answer now would land in an empty room."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = response(min(RING_POLL_S, left))
            if event is not None:
                return event
            if live.transfer_concluded:
                target = live.transfer.target.id if live.transfer else "?"
                log.info("call %s: the transfer ended first; no longer ringing %s",
                         live.info.call_id, target)  # fmt: skip
                try:
                    link.action("Hangup", Channel=ringing)
                except AmiUnavailable as exc:
                    # "No such channel": it had stopped ringing by itself meanwhile
                    gone = "no such channel" in str(exc).lower()
                    (log.info if gone else log.warning)(
                        "call %s: hanging up the target: %s", live.info.call_id, exc
                    )
                return None
        return None

    def _ring_target(self, link: AmiLink, live: LiveCall, plan: TransferPlan) -> None:
        """Ring the target into the room and report how that went. Runs on its own
        thread for up to the ring timeout; the seat's request has been answered."""
        outcome = "failed"
        try:
            if not live.parked.wait(PARK_WAIT_S):
                log.warning("call %s: the caller did not leave the queue for the room",
                            live.info.call_id)  # fmt: skip
            if live.transfer_concluded:
                return  # the caller left meanwhile, and that was reported: ring nobody
            action_id = f"transfer-{live.info.call_id}"
            # The target's channel gets an id of ours, to hang it up if need be.
            ringing = f"ivr-ring-{live.info.call_id}-{time.time_ns()}"
            response = link.expect("OriginateResponse", action_id)
            try:
                link.action(
                    "Originate",
                    Channel=self._dial(plan.target),
                    ChannelId=ringing,
                    Context="ivr-three-way",
                    Exten="member",
                    Priority="1",
                    Timeout=str(plan.ring_timeout * 1000),
                    CallerID=live.info.route.line,
                    Variable=f"{var.TRANSFER_ROOM}={self._room(live)}",
                    Async="true",
                    ActionID=action_id,
                )
            except AmiUnavailable:
                # No answer to the Originate in time: the switch may ring the target
                # still, who would then answer into a transfer recorded as failed.
                with contextlib.suppress(AmiUnavailable):
                    link.action("Hangup", Channel=ringing)
                raise
            event = self._await_answer(link, live, response, ringing, plan.ring_timeout + 10.0)
            if live.transfer_concluded:
                pass  # the call's own session reported the outcome first
            elif event is None:
                log.warning("call %s: no answer from the manager about the transfer",
                            live.info.call_id)  # fmt: skip
            elif event.get_header("Response", "") == "Success":
                outcome = "answered"
            else:
                outcome = _ORIGINATE_REASON.get(event.get_header("Reason", ""), "failed")
        except AmiUnavailable as exc:
            log.error("call %s: transfer to %s failed: %s", live.info.call_id,
                      plan.target.id, exc)  # fmt: skip
        except Exception:
            log.exception("call %s: transfer to %s failed", live.info.call_id, plan.target.id)
        finally:
            link.close()
        self.controller.conclude_transfer(live, outcome)


__all__ = [
    "AsteriskTransfers",
    "CallNotFound",
    "TransferRefused",
    "UnknownTransferTarget",
]

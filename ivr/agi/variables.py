"""Channel variable names shared by the controller and the Asterisk glue (dialplans/asterisk).

Change a name here and in the glue (ivr/agi/glue.py) together: whenever AGI() returns
with the caller still on the line, the glue queues them to IVR_FALLBACK_QUEUE.
"""

from __future__ import annotations

# Set by the glue before AGI(): what the switch knows.
TRUNK = "IVR_TRUNK"
FALLBACK_QUEUE = "IVR_FALLBACK_QUEUE"  # the region's 12345 seats; the controller may refine it

# Set by the controller before a queue or dial: what the call is (line, region, mode,
# route: the flow it is in) and its tags from the dialplan (original_line, merge_mode,
# …), as "key=value;key=value". IVR_CALL is inherited (the "__" prefix) by the seat's
# channel for its screen pop, with the call_id a transfer request names; the CDR's
# userfield keeps the same, without the id (the CDR has its own).
CALL = "__IVR_CALL"
CDR_TAGS = "CDR(userfield)"

# Set when the controller gives up on a call (a failure of ours); the glue then queues
# the caller to FALLBACK_QUEUE, as it does whenever AGI() returns with the caller on.
RESULT = "IVR_RESULT"
RESULT_FALLBACK = "fallback"

# Set by the controller (over AMI) on the channels of a seat's transfer, before it
# redirects them into the glue's [ivr-three-way] or [ivr-one-key] contexts.
TRANSFER_ROOM = "IVR_ROOM"  # the ConfBridge of a three-way call, one per call
TRANSFER_DIAL = "IVR_TRANSFER_DIAL"  # what a one-key transfer dials (a Local channel)
TRANSFER_RING_S = "IVR_TRANSFER_RING"  # how long it rings before the caller goes back

# Set by Asterisk after Queue() and Dial(); read back in one GET FULL VARIABLE.
QUEUE_FACTS = "${QUEUESTATUS}|${ABANDONED}|${QEHOLDTIME}|${MEMBERNAME}"
DIAL_FACTS = "${DIALSTATUS}|${DIALEDTIME}|${ANSWEREDTIME}|${DIALEDPEERNUMBER}"


def tags_value(tags: dict[str, str]) -> str:
    return ";".join(f"{k}={v}".replace(";", ",") for k, v in sorted(tags.items()))

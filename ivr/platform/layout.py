"""Redis key layout shared by the publisher, the platform readers and the ACL rules.

With the default prefix `ivr`:

- `ivr:events:<region>`  one stream of call events per region (福州 = fuzhou ...),
  so a city's centre can be given its own stream and nothing else;
- `ivr:callbacks`         missed-call callback tasks, consumer group `agents`;
- `ivr:seen:<call_id>`    set of the sequence numbers already written for a call
  (the idempotence guard, expires after `dedupe_ttl_s`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

DEFAULT_PREFIX = "ivr"
EVENT_GROUP = "platform"
CALLBACK_GROUP = "agents"
# The seen-set member that records "this call already has its callback task".
CALLBACK_MARK = "callback"


def events_stream(region: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:events:{region}"


def callbacks_stream(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:callbacks"


def seen_key(call_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:seen:{call_id}"


@dataclass(frozen=True)
class Retention:
    """How much of a stream Redis keeps: at most `maxlen` entries, or entries younger
    than `minid_age_s` seconds (by stream id, i.e. by the time Redis stored them).

    Trimming is approximate (`~`), done by XADD itself, so it costs nothing extra.
    """

    maxlen: int | None = None
    minid_age_s: float | None = None

    def __post_init__(self) -> None:
        if (self.maxlen is None) == (self.minid_age_s is None):
            raise ValueError("give exactly one of maxlen and minid_age_s")
        if self.maxlen is not None and self.maxlen < 1:
            raise ValueError("maxlen must be positive")
        if self.minid_age_s is not None and self.minid_age_s <= 0:
            raise ValueError("minid_age_s must be positive")

    def xadd_args(self, now_s: float | None = None) -> tuple[str, str]:
        """(strategy, threshold) for `XADD key <strategy> ~ <threshold> * ...`."""
        if self.maxlen is not None:
            return "MAXLEN", str(self.maxlen)
        now = time.time() if now_s is None else now_s
        assert self.minid_age_s is not None
        return "MINID", f"{max(0, int((now - self.minid_age_s) * 1000))}-0"


# Sized for the province: ~100k calls a day at ~10 events each; the busiest city
# keeps about a day and a half, bounded in memory whatever the traffic.
DEFAULT_EVENT_RETENTION = Retention(maxlen=1_000_000)
# A callback not made within three days is no longer useful to anyone; keeping
# callers' full numbers longer would only be a liability.
DEFAULT_CALLBACK_RETENTION = Retention(minid_age_s=3 * 86_400)

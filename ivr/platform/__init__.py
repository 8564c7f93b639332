"""The 12345 platform side: call events and callback tasks on Redis Streams.

See docs/events.md for the stream layout, the ACL users and the spool.
"""

from ivr.platform.callbacks import (
    CallbackTask,
    ack_task,
    claim_stale_tasks,
    claim_tasks,
    owns_task,
    pending_count,
)
from ivr.platform.layout import Retention, callbacks_stream, events_stream, seen_key
from ivr.platform.publisher import Publisher, PublisherCollector
from ivr.platform.sink import PublishingSink

__all__ = [
    "CallbackTask",
    "Publisher",
    "PublisherCollector",
    "PublishingSink",
    "Retention",
    "ack_task",
    "callbacks_stream",
    "claim_stale_tasks",
    "claim_tasks",
    "events_stream",
    "owns_task",
    "pending_count",
    "seen_key",
]

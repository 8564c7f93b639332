"""FastAGI front-end: the session layer over pyst2 and the threaded server.

No call logic lives here: handlers registered on `AgiServer` get an
`AgiSession` and decide what to do with the call.
"""

from ivr.agi.server import AgiServer, ErrorHook, Handler, ServerStats, UnknownRoute
from ivr.agi.session import (
    AgiSession,
    BadSession,
    CallerHungUp,
    InvalidCommand,
    SessionLimits,
    SessionTimeout,
    UsageError,
    mask_text,
)

__all__ = [
    "AgiServer",
    "AgiSession",
    "BadSession",
    "CallerHungUp",
    "ErrorHook",
    "Handler",
    "InvalidCommand",
    "ServerStats",
    "SessionLimits",
    "SessionTimeout",
    "UnknownRoute",
    "UsageError",
    "mask_text",
]

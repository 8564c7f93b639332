"""Integration lab: a real Asterisk 22 (from a debootstrapped Debian sid root) plus SIPp
callers and seats on loopback, for tests and admins. ``scripts/provision-lab`` builds the
root; :class:`Lab` runs it.
"""

from ivr.lab.ami import AmiClient, AmiError
from ivr.lab.cdr import CDR_FIELDS, parse_cdrs, read_cdrs
from ivr.lab.conf import DEFAULT_SEATS, LabConfig, LabConfigError, Seat, Trunk, render_config
from ivr.lab.lab import (
    CallResult,
    Lab,
    LabError,
    LabMark,
    PendingCall,
    default_root,
)
from ivr.lab.sipp import CallPlan, SipMessage, parse_message_log

__all__ = [
    "CDR_FIELDS",
    "DEFAULT_SEATS",
    "AmiClient",
    "AmiError",
    "CallPlan",
    "CallResult",
    "Lab",
    "LabConfig",
    "LabConfigError",
    "LabError",
    "LabMark",
    "PendingCall",
    "Seat",
    "SipMessage",
    "Trunk",
    "default_root",
    "parse_cdrs",
    "parse_message_log",
    "read_cdrs",
    "render_config",
]

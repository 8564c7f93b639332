"""Redis ACL users: the controller may only write, the platform may only read and
work the consumer groups. docs/events.md explains each right; tests create these
exact users on a real server.
"""

from __future__ import annotations

from ivr.platform.layout import DEFAULT_PREFIX

WRITER_USER = "ivr-controller"
PLATFORM_USER = "ivr-platform"

# What redis-py sends on connect; AUTH needs no right, and the CLIENT SETINFO it
# also tries (Redis 7.2+) may fail harmlessly.
_CONNECT = ["+ping", "+client|setname"]


def writer_rules(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The controller runs one Lua script (EVALSHA, loaded on demand) whose commands
    are checked against these rights too. No read command: a stolen controller
    password cannot read callers' history back.
    """
    return [
        "resetkeys",
        "resetchannels",
        "-@all",
        *_CONNECT,
        f"~{prefix}:*",
        "+evalsha",
        "+script|load",
        # Inside the script:
        "+type",
        "+sismember",
        "+sadd",
        "+expire",
        "+xadd",
        "+xgroup|create",
    ]


def platform_rules(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Reads events and callback tasks through consumer groups; may delete a
    callback task (XDEL, on the callbacks stream only) once it is done, so the
    caller's full number does not linger. Cannot XADD, trim or delete events.
    """
    return [
        "resetkeys",
        "resetchannels",
        "-@all",
        *_CONNECT,
        f"~{prefix}:events:*",
        f"~{prefix}:callbacks",
        "+xread",
        "+xreadgroup",
        "+xack",
        "+xpending",
        "+xclaim",
        "+xautoclaim",
        "+xrange",
        "+xrevrange",
        "+xlen",
        "+xinfo|stream",
        "+xinfo|groups",
        "+xinfo|consumers",
        "+multi",
        "+exec",
        "+discard",
        # A selector: XDEL is granted on the callbacks stream and nowhere else.
        f"(~{prefix}:callbacks +xdel)",
    ]


def setuser_args(user: str, password: str, rules: list[str]) -> list[str]:
    """Arguments for `ACL SETUSER`, e.g. `r.execute_command("ACL", "SETUSER", *args)`."""
    return [user, "reset", "on", f">{password}", *rules]

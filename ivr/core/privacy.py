"""Phone numbers are personal data: logs and metrics only ever see them masked."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"\d")


def mask_number(number: str | None) -> str:
    """Keep enough to tell calls apart, never enough to call back.

    13912340000 -> 139****0000; short service numbers (12345, 110) are not
    personal and stay whole; anything of 6-8 digits keeps its last two.
    """
    if not number:
        return "unknown"
    digits = "".join(_DIGITS.findall(number))
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:  # +86 and a mobile number
        digits = digits[2:]
    if len(digits) <= 5:
        return digits or "unknown"
    if len(digits) >= 11:
        return f"{digits[:3]}****{digits[-4:]}"
    return f"{'*' * (len(digits) - 2)}{digits[-2:]}"


# Digit runs long enough to be a phone number. Runs glued to a '.' followed by
# digits (uniqueids like 1732612345.17, IP addresses) stay readable because logs
# need them to follow a call.
_LONG_DIGITS = re.compile(r"(?<![\d.])\+?\d{6,}(?!\d|\.\d)")


def mask_text(text: str) -> str:
    """Mask every phone-number-like digit run in a log string."""
    return _LONG_DIGITS.sub(lambda m: mask_number(m.group(0)), text)


def loggable(value: object, limit: int = 64) -> str:
    """A value taken from a request nobody vouched for, fit for a log line: numbers
    masked, cut to ``limit`` characters, and anything but printable ASCII escaped, so
    that it can neither leak a number nor forge a line of its own."""
    text = mask_text(str(value))
    cut = text[:limit].encode("unicode_escape").decode("ascii")
    return cut + ("…" if len(text) > limit else "")

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
# Written in groups too, only as numbers are: a mobile 139 8765 4321 (spaces, dashes
# or dots, +86 before it), a landline (0591) 8765 4321 or 0591-87654321. Dates, times
# and lists of service numbers (12345 12315) stay readable.
_LONG_DIGITS = re.compile(
    r"(?<![\d.])(?:"
    # a mobile, not the last of a list of figures ("p99 150 2000 3000")
    r"(?<!\d )(?:(?:\+|00)?86[ .-]?)?1[3-9]\d[ .-]?\d{4}[ .-]?\d{4}"
    # a landline: (0591) 8765 4321, 0591-87654321, +86 591 8765 4321
    r"|(?:(?:\+|00)86[ .-]?\(?\d{2,3}\)?|\(?0\d{2,3}\)?)[ .-]?\d{3,4}[ .-]?\d{4}"
    # any long run, but not a channel's sequence number (PJSIP/xiamen-ct-00000012)
    r"|(?<![A-Za-z]-)\+?\d{6,}"
    r")(?!\d|\.\d)"
)


def mask_text(text: str) -> str:
    """Mask every phone-number-like digit run in a log string."""
    return _LONG_DIGITS.sub(_mask_match, text)


def _mask_match(m: re.Match[str]) -> str:
    text = m.group(0)
    if len(_DIGITS.findall(text)) < 6:
        return text  # "1 30" and the like: too short to be a number
    return mask_number(text)


def loggable(value: object, limit: int = 64) -> str:
    """A value taken from a request nobody vouched for, fit for a log line: numbers
    masked, cut to ``limit`` characters, and anything but printable ASCII escaped, so
    that it can neither leak a number nor forge a line of its own."""
    text = mask_text(str(value))
    cut = text[:limit].encode("unicode_escape").decode("ascii")
    return cut + ("…" if len(text) > limit else "")

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

from __future__ import annotations

import pytest

from ivr.core.privacy import mask_number


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("13912340000", "139****0000"),
        ("+8613912340000", "139****0000"),
        ("059187654321", "059****4321"),
        ("87654321", "******21"),
        ("12345", "12345"),
        ("110", "110"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_mask_number(number: str | None, masked: str) -> None:
    assert mask_number(number) == masked


def test_masked_mobile_never_shows_the_middle_digits() -> None:
    assert "1234" not in mask_number("13912340000")

"""Short work-order numbers for phone calls and paper, with a check digit.

`WO-001234-5`: the id, zero-padded, and a Luhn digit so a misheard or mistyped number is
caught instead of opening someone else's job.
"""

from __future__ import annotations

import re

__all__ = ["format_number", "parse_number"]

_PATTERN = re.compile(r"^\s*(?:WO)?[-\s]*(\d{1,12})[-\s]*(\d)\s*$", re.IGNORECASE)


# The Luhn doubling of each digit, digits summed ("7" → 14 → 1+4 → "5"), as a byte table.
_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")


def _luhn_digit(digits: str) -> int:
    # Byte slices and sums run in C: a work order number is made for every row of an import.
    # From the right, the first digit and every second one are doubled; sums of ASCII codes
    # are 48 ("0") per digit too high.
    data = digits.encode("ascii")
    total = sum(data[::-2].translate(_DOUBLED)) + sum(data[-2::-2]) - 48 * len(data)
    return -total % 10


def format_number(work_order_id: int) -> str:
    digits = f"{work_order_id:06d}"
    return f"WO-{digits}-{_luhn_digit(digits)}"


def parse_number(text: str) -> int | None:
    """The id behind a number as people type it ("wo 1234 5", "WO-001234-5"), or None."""
    match = _PATTERN.match(text)
    if not match:
        return None
    digits, check = match.groups()
    if _luhn_digit(f"{int(digits):06d}") != int(check):
        return None
    return int(digits)

"""Short work-order numbers for phone calls and paper, with a check digit.

`WO-001234-5`: the id, zero-padded, and a Luhn digit so a misheard or mistyped number is
caught instead of opening someone else's job.
"""

from __future__ import annotations

import re

__all__ = ["format_number", "parse_number"]

_PATTERN = re.compile(r"^\s*(?:WO)?[-\s]*(\d{1,12})[-\s]*(\d)\s*$", re.IGNORECASE)


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # the Luhn doubling of each digit, digits summed


def _luhn_digit(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        total += _DOUBLED[value] if position % 2 == 0 else value
    return (10 - total % 10) % 10


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

"""What we tell a resident right after a report, and on Open311 `service_notice`: in
their language, from the resident catalogues, with the honest expected range.

    "Thank you, we have your report. Similar reports in this area are usually fixed
     within 3 days; 4 in 5 within 6 days."
    "If anyone is in danger, call 911 now. Marked urgent: our target is to act within 4 hours."
"""

from __future__ import annotations

import math

from server.notify.catalog import catalog
from server.residents.expected import Expectation

__all__ = ["duration", "expectation_text", "report_notice"]


def duration(hours: float, language: str) -> str:
    """A span in words: whole hours up to two days, then whole days (rounded up)."""
    texts = catalog("resident")
    if hours < 48:
        count = max(math.ceil(hours - 1e-9), 1)
        return texts.t(language, "duration.hours", count=count)
    return texts.t(language, "duration.days", count=math.ceil(hours / 24 - 1e-9))


def expectation_text(expected: Expectation, language: str) -> str:
    texts = catalog("resident")
    high = duration(expected.p80_hours, language)
    if expected.basis == "sla":
        key = "notice.emergency_sla" if expected.emergency else "notice.sla"
        return texts.t(language, key, high=high)
    low = duration(expected.median_hours or 0.0, language)
    key = "notice.range" if expected.basis == "district" else "notice.range_citywide"
    if expected.emergency:
        key += "_emergency"
    return texts.t(language, key, low=low, high=high, count=expected.sample_size)


def report_notice(*, outcome: str, emergency: bool, reports: int, expected: Expectation | None, language: str) -> str:
    """The `service_notice` of a new report: thanks, merge or placement, then the range."""
    texts = catalog("resident")
    parts = []
    if emergency:
        parts.append(texts.t(language, "notice.emergency"))
    if outcome == "merged":
        parts.append(texts.t(language, "notice.merged", count=max(reports - 1, 1)))  # the earlier ones
    elif outcome == "unlocated":
        parts.append(texts.t(language, "notice.unlocated"))
    else:
        parts.append(texts.t(language, "notice.created"))
    if expected is not None:
        parts.append(expectation_text(expected, language))
    return " ".join(parts)

"""The demo's time shift: the real LA exports (taken in 2017, 2018 and 2020) are laid end to
end ending now (a day apart at most), so the board shows days of overdue work, not years."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from server.demo import CITIES, FileSpan, demo_shifts, file_spans
from server.settings import IntakeSettings
from tests.conftest import DATA

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_the_la_exports_end_now_a_day_apart_in_their_own_order() -> None:
    files = sorted(DATA.glob(CITIES["la"].records))
    spans = file_spans(files, IntakeSettings(timezone="America/Los_Angeles"))
    assert len(spans) == len(files) == 4
    shifts = demo_shifts(spans, NOW)
    placed = [(span.oldest + shifts[span.path], span.newest + shifts[span.path]) for span in spans]
    assert placed[-1][1] == NOW  # the newest record is now
    for (_, earlier_end), (later_start, _) in pairwise(placed):
        # a day apart; files taken back to back (Dec 31, Jan 1) keep their real spacing
        assert timedelta(0) <= later_start - earlier_end <= timedelta(days=1)
    assert NOW - placed[0][0] < timedelta(days=30)  # the whole history within weeks, not years


def test_overlapping_files_keep_their_overlap() -> None:
    day = timedelta(days=1)
    a = FileSpan(Path("a"), NOW - 400 * day, NOW - 390 * day)
    b = FileSpan(Path("b"), NOW - 392 * day, NOW - 380 * day)  # overlaps a
    c = FileSpan(Path("c"), NOW - 10 * day, NOW - 5 * day)  # a year later
    shifts = demo_shifts([a, b, c], NOW)
    assert shifts[Path("c")] == 5 * day
    assert shifts[Path("a")] == shifts[Path("b")]  # moved together
    assert b.newest + shifts[Path("b")] == c.oldest + shifts[Path("c")] - day

"""The demo's time shift: the real LA exports (taken in 2017, 2018 and 2020) are laid end to
end ending now (a day apart at most), so the board shows days of overdue work, not years."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from server.demo import CITIES, FileSpan, demo_shifts, file_spans, prepare_demo
from server.models import WorkOrderEvent
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


def test_a_demo_started_again_finds_every_record_unchanged(engine: Engine, tmp_path: Path) -> None:
    """Started again on the same database, the demo shifts the records to the same "now" as
    the first time: the import finds them all present and unchanged. (Shifted to a new now,
    every closed record looked like a new outcome from the city, gained a note, and went to
    its crew's phones.)"""
    data = tmp_path / "data"
    (data / "la" / "records").mkdir(parents=True)
    (data / "la" / "boundaries").symlink_to(DATA / "la" / "boundaries")
    for source in sorted((DATA / "la" / "records").glob("*.csv.gz"))[:2]:
        with gzip.open(source, "rt", newline="") as full, gzip.open(data / "la" / "records" / source.name, "wt") as part:
            part.writelines(islice(full, 301))  # the header and 300 records
    intake = IntakeSettings(timezone=CITIES["la"].timezone)
    first = prepare_demo(engine, city="la", data_dir=data, intake=intake, rejects_dir=tmp_path / "rejects")
    with Session(engine) as session:
        events = session.exec(select(func.count()).select_from(WorkOrderEvent)).one()
    again = prepare_demo(engine, city="la", data_dir=data, intake=intake, rejects_dir=tmp_path / "rejects")
    assert first[3] == again[3], "the second start shifts to the first one's now"
    stored = sum(s.created + s.merged + s.unlocated for s in first[0])
    assert stored > 0 and sum(s.already_present for s in again[0]) == stored
    assert sum(s.updates_kept for s in again[0]) == 0
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(WorkOrderEvent)).one() == events

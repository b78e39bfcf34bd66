"""Imports as a city's integrator meets them (issue 9), on real exports and real databases
(SQLite and PostgreSQL): the city's time zone, no service areas, closed history kept out of
the unlocated queue, the 50 m boundary tolerance, Chicago's repeated request numbers, and
close times before creation.

Slices of the real files keep the header and whole rows (row-filtered, as the data's own
dev/holdout split is).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from server.auth.tokens import AuthUser
from server.intake.importer import NoServiceAreas, import_file
from server.intake.pipeline import NO_AREAS
from server.intake.records import BAD_CLOSE_TIME
from server.models import Case, ImportRun, WorkOrder, WorkOrderEvent
from server.settings import IntakeSettings
from server.workorders.service import list_unlocated
from tests.conftest import DATA, FreshDatabase, load_city_areas

LA_2020 = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
LA_2017 = DATA / "la/records/la_myla311_2017-12-27_2017-12-31.csv.gz"
LA_2018 = DATA / "la/records/la_myla311_2018-01-01_2018-01-04.csv.gz"
CHI_ALL_OUT = DATA / "chicago/records/chi_street_lights_all_out_2012-04_2013-07.csv.gz"
NYC_SAMPLE2 = DATA / "nyc/records/nyc_311_2023-03-31__jun-yan_test_sample2.csv.gz"
DEFAULTS = IntakeSettings()  # nothing chosen: the zone is the default, America/Chicago
DISPATCHER = AuthUser(id=1, username="dispatcher", role="dispatcher", crew_id=None, display_name="D")


def sliced(source: Path, dest: Path, keep: Callable[[dict[str, str]], bool]) -> Path:
    with gzip.open(source, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [row for row in reader if keep(row)]
        fields = reader.fieldnames
    assert rows and fields
    with gzip.open(dest, "wt", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return dest


def engine_of(db: FreshDatabase) -> Engine:
    assert db.engine is not None
    return db.engine


# -- time zone --------------------------------------------------------------------------------


def test_a_recognised_city_export_is_read_in_its_citys_zone(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    engine = engine_of(fresh_db)
    load_city_areas(engine, "la")
    first_day = sliced(LA_2020, tmp_path / "la_first_hour.csv.gz", lambda r: r["createddate"] < "2020-01-01 01:00")
    summary = import_file(engine, first_day, settings=DEFAULTS, rejects_dir=tmp_path)
    assert summary.adds_up and summary.created + summary.merged + summary.unlocated > 10
    assert summary.timezone == "America/Los_Angeles" and "(la)" in summary.timezone_source
    assert any("times read in America/Los_Angeles" in line for line in summary.lines())
    with Session(engine) as session:
        case = session.exec(select(Case).where(Case.external_id == "1-1523590121")).one()
    # LA's "2020-01-01 00:05:00" is 08:05Z, not Chicago's 06:05Z.
    assert case.requested_at == datetime(2020, 1, 1, 8, 5, tzinfo=UTC)


def test_a_chosen_time_zone_wins_and_the_summary_says_so(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    engine = engine_of(fresh_db)
    load_city_areas(engine, "la")
    first_day = sliced(LA_2020, tmp_path / "la_first_hour.csv.gz", lambda r: r["createddate"] < "2020-01-01 01:00")
    chosen = IntakeSettings(timezone="America/Chicago", timezone_set=True)
    summary = import_file(engine, first_day, settings=chosen, rejects_dir=tmp_path)
    assert summary.timezone == "America/Chicago" and summary.timezone_source == "the configured time zone"
    with Session(engine) as session:
        case = session.exec(select(Case).where(Case.external_id == "1-1523590121")).one()
    expected = datetime(2020, 1, 1, 0, 5, tzinfo=ZoneInfo("America/Chicago")).astimezone(UTC)
    assert case.requested_at == expected


# -- no service areas -------------------------------------------------------------------------


def test_an_import_without_service_areas_is_refused_or_queued_loudly(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    engine = engine_of(fresh_db)
    first_day = sliced(LA_2020, tmp_path / "la_first_hour.csv.gz", lambda r: r["createddate"] < "2020-01-01 01:00")
    with pytest.raises(NoServiceAreas, match="no service areas are loaded"):
        import_file(engine, first_day, settings=DEFAULTS, rejects_dir=tmp_path)
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 0
        assert session.exec(select(func.count()).select_from(ImportRun)).one() == 0

    summary = import_file(engine, first_day, settings=DEFAULTS, rejects_dir=tmp_path, without_areas=True)
    assert summary.adds_up and summary.created == summary.merged == 0 and summary.unlocated == summary.rows_read
    assert summary.queued_without_areas and any("NO SERVICE AREAS" in line for line in summary.lines())
    with Session(engine) as session:
        located = session.exec(select(Case).where(col(Case.lat).is_not(None))).all()
        assert located and all(c.location_state == "unlocated" and c.location_problem == NO_AREAS for c in located)
        assert session.exec(select(func.count()).select_from(WorkOrder)).one() == 0


# -- closed history and the unlocated queue ------------------------------------------------------


def test_closed_history_stays_out_of_the_unlocated_queue(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    engine = engine_of(fresh_db)
    load_city_areas(engine, "la")
    summary = import_file(engine, LA_2017, settings=DEFAULTS, rejects_dir=tmp_path)
    assert summary.adds_up and summary.unlocated > 1000  # the graffiti rows with an address only
    assert summary.unlocated_closed > 0.9 * summary.unlocated
    with Session(engine) as session:
        open_unlocated = session.exec(select(func.count()).select_from(Case).where(
            Case.location_state == "unlocated", col(Case.closed_at).is_(None))).one()
        closed_unlocated = session.exec(select(func.count()).select_from(Case).where(
            Case.location_state == "unlocated", col(Case.closed_at).is_not(None))).one()
        assert closed_unlocated == summary.unlocated_closed  # kept in the record
        queued: list[int] = []
        cursor = None
        while True:
            page = list_unlocated(session, viewer=DISPATCHER, limit=200, cursor=cursor)
            queued.extend(item.id for item in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    assert len(queued) == open_unlocated == summary.unlocated - summary.unlocated_closed


# -- the boundary tolerance ---------------------------------------------------------------------


def test_city_edge_points_within_50_m_are_placed(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    assert DEFAULTS.boundary_tolerance_m == 50.0  # README "Intake": within 50 m of an area
    engine = engine_of(fresh_db)
    load_city_areas(engine, "la")
    summary = import_file(engine, LA_2018, settings=DEFAULTS, rejects_dir=tmp_path)
    assert summary.adds_up
    with Session(engine) as session:
        outside = session.exec(select(func.count()).select_from(Case).where(
            Case.location_problem == "outside the service areas")).one()
    # The data's README: 8 valid points of this file lie outside the council districts, all
    # within ~45 m of the city edge. At 15 m some were "outside"; at 50 m none is.
    assert outside == 0
    narrow = IntakeSettings(boundary_tolerance_m=15.0)
    with FreshDatabase(fresh_db.db_kind, tmp_path) as other:
        load_city_areas(engine_of(other), "la")
        import_file(engine_of(other), LA_2018, settings=narrow, rejects_dir=tmp_path)
        with Session(engine_of(other)) as session:
            assert session.exec(select(func.count()).select_from(Case).where(
                Case.location_problem == "outside the service areas")).one() > 0  # the test can fail


# -- Chicago's repeated request numbers -----------------------------------------------------------


def test_a_repeated_request_number_is_kept_as_an_update(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    engine = engine_of(fresh_db)
    load_city_areas(engine, "chicago")
    with gzip.open(CHI_ALL_OUT, "rt", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["Service Request No"]] = counts.get(row["Service Request No"], 0) + 1
    repeated = {k for k, n in counts.items() if n > 1}
    assert len(repeated) == 8
    # The repeats and a few hundred others, in file order: some pairs fall in one batch, some across two.
    keep = {r["Service Request No"] for r in rows[:300]} | repeated
    path = sliced(CHI_ALL_OUT, tmp_path / "chi_repeats.csv.gz", lambda r: r["Service Request No"] in keep)
    summary = import_file(engine, path, settings=DEFAULTS, rejects_dir=tmp_path, batch_size=50)
    assert summary.adds_up and summary.updates_kept == 8, summary.lines()
    outcomes = {(r["Service Request No"], r["Outcome"]) for r in rows if r["Service Request No"] in repeated}
    with Session(engine) as session:
        for number in sorted(repeated):
            cases = session.exec(select(Case).where(Case.source == "chicago", Case.external_id == number)).all()
            assert len(cases) == 1, number
            (case,) = cases
            assert case.work_order_id is not None
            notes = session.exec(select(WorkOrderEvent).where(
                WorkOrderEvent.work_order_id == case.work_order_id, WorkOrderEvent.kind == "note")).all()
            kept = {case.resolution} | {str((n.data or {}).get("text", "")).split(": ", 1)[-1] for n in notes}
            assert {o for n, o in outcomes if n == number} == kept, number
            assert all(n.channel == "import" for n in notes)
        events = session.exec(select(func.count()).select_from(WorkOrderEvent)).one()

    again = import_file(engine, path, settings=DEFAULTS, rejects_dir=tmp_path, batch_size=50)
    assert again.adds_up and again.created == 0 and again.updates_kept == 0
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(WorkOrderEvent)).one() == events


# -- close time before creation ---------------------------------------------------------------------


def test_a_close_before_creation_keeps_the_request_and_flags_the_time(
    fresh_db: FreshDatabase, tmp_path: Path
) -> None:
    engine = engine_of(fresh_db)
    load_city_areas(engine, "nyc")
    summary = import_file(engine, NYC_SAMPLE2, settings=replace(DEFAULTS, timezone="America/New_York"),
                          rejects_dir=tmp_path)
    assert summary.adds_up and summary.rejected == 0 and summary.bad_close_times == 5
    with Session(engine) as session:
        flagged = [c for c in session.exec(select(Case)).all() if c.attributes and BAD_CLOSE_TIME in c.attributes]
        assert len(flagged) == 5
        for case in flagged:
            assert case.closed_at == case.requested_at
            assert case.location_state == "located" and case.work_order_id is not None  # a real located request
            order = session.get(WorkOrder, case.work_order_id)
            assert order is not None and not order.is_open

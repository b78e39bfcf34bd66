"""Bulk import of every real export in ../shared/data/311, on SQLite and PostgreSQL.

Checks that the summary adds up, that re-import creates nothing, that the database holds
exactly what the summary says, and that the district the pipeline assigns agrees with the
city's own reported district.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from server.intake.importer import import_file
from server.intake.pipeline import load_district_index
from server.intake.records import FormatError
from server.models import Case, District, ImportRun, WorkOrder, WorkOrderEvent
from server.settings import IntakeSettings
from tests.conftest import CITY_LAYERS, DATA, FreshDatabase, load_city_areas

MANIFEST = json.loads((DATA / "manifest.json").read_text())
ROWS = {Path(r["file"]).name: r["rows"] for r in MANIFEST["records"]}
CITY_FILES = {
    city: sorted((DATA / city / "records").glob("*.gz")) for city in ("la", "chicago", "nyc")
}


def intake(city: str) -> IntakeSettings:
    return IntakeSettings(timezone=CITY_LAYERS[city][4])


def count(session: Session, model: type) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


@pytest.mark.slow
@pytest.mark.parametrize("city", ["la", "chicago", "nyc"])
def test_import_every_real_file_adds_up_and_reimport_adds_nothing(
    city: str, db_kind: str, tmp_path: Path
) -> None:
    with FreshDatabase(db_kind, tmp_path) as db:
        assert db.engine is not None
        load_city_areas(db.engine, city)
        totals = Counter[str]()
        for path in CITY_FILES[city]:
            summary = import_file(db.engine, path, settings=intake(city), rejects_dir=tmp_path)
            print("\n".join(summary.lines()))
            assert summary.adds_up, summary
            assert summary.rows_read == ROWS[path.name]
            for key in ("created", "merged", "already_present", "unlocated", "rejected"):
                totals[key] += getattr(summary, key)
            if summary.rejected:
                rejects = Path(summary.rejects_file or "").read_text().splitlines()
                assert len(rejects) == summary.rejected + 1  # header + one line per reject

        with Session(db.engine) as session:
            assert count(session, WorkOrder) == totals["created"]
            assert count(session, Case) == totals["created"] + totals["merged"] + totals["unlocated"]
            merged_cases = session.exec(select(func.sum(WorkOrder.case_count))).one()
            assert merged_cases == totals["created"] + totals["merged"]
            assert count(session, WorkOrderEvent) >= totals["created"] + totals["merged"]

        for path in CITY_FILES[city]:
            again = import_file(db.engine, path, settings=intake(city), rejects_dir=tmp_path)
            assert again.adds_up
            assert (again.created, again.merged, again.unlocated) == (0, 0, 0)
            assert again.already_present == again.rows_read - again.rejected
        with Session(db.engine) as session:
            assert count(session, Case) == totals["created"] + totals["merged"] + totals["unlocated"]
            runs = session.exec(select(ImportRun.status)).all()
            assert runs and set(runs) == {"done"}

        agreement = district_agreement(db.engine)
        print(f"{city}: {agreement}")
        assert agreement["compared"] > 1000
        assert agreement["within_15m"] / agreement["compared"] >= 0.98
        assert agreement["point_in_polygon"] / agreement["compared"] >= 0.95


def district_agreement(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Compare the district we assign with the one the city reports.

    Counted as agreement: the same district, or the point lies within 15 m of the reported
    district (an address geocoded onto a boundary street's centre line).
    """
    with Session(engine) as session:
        districts = {d.code: d.id for d in session.exec(select(District).where(District.primary)).all()}
        index = load_district_index(session, tolerance_m=50.0)
        rows = session.exec(
            select(Case.reported_district, Case.district_id, Case.lon, Case.lat).where(
                Case.location_state == "located", Case.reported_district.is_not(None)  # type: ignore[union-attr]
            )
        ).all()
    result = Counter[str]()
    for reported, assigned, lon, lat in rows:
        reported_id = districts.get(reported)
        if reported_id is None:
            result["reported_unknown"] += 1
            continue
        result["compared"] += 1
        if reported_id == assigned:
            result["point_in_polygon"] += 1
            result["within_15m"] += 1
        elif index.distance_m(reported_id, lon, lat) <= 15.0:
            result["within_15m"] += 1
    return dict(result)


def test_truncated_file_leaves_whole_batches_a_failed_run_and_resumes(db_kind: str, tmp_path: Path) -> None:
    """A file that breaks half-way: the batches before the break are committed whole (each
    case with its work order and events, the run's counters matching), the run is failed,
    no rejects file is left, and importing the intact file completes it, adding up."""
    source = DATA / "la/records/la_myla311_2018-12-27_2018-12-31.csv.gz"
    truncated = tmp_path / source.name
    data = source.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    rejects = tmp_path / "rejects"
    with FreshDatabase(db_kind, tmp_path) as db:
        assert db.engine is not None
        load_city_areas(db.engine, "la")
        with pytest.raises(FormatError, match="truncated or corrupt"):
            import_file(db.engine, truncated, settings=intake("la"), rejects_dir=rejects, batch_size=500)
        with Session(db.engine) as session:
            run = session.exec(select(ImportRun)).one()
            assert run.status == "failed" and "truncated" in (run.error or "")
            cases = count(session, Case)
            assert cases > 0 and run.rows_read % 500 == 0  # whole batches only
            assert run.created + run.merged + run.unlocated == cases
            assert cases + run.already_present + run.rejected == run.rows_read
            assert run.created == count(session, WorkOrder)
            orphans = session.exec(select(func.count()).select_from(Case).where(
                Case.work_order_id.is_(None), Case.location_state == "located")).one()  # type: ignore[union-attr]
            assert orphans == 0
        assert not list(rejects.glob("*")) if rejects.exists() else True

        summary = import_file(db.engine, source, settings=intake("la"), rejects_dir=rejects, batch_size=500)
        assert summary.adds_up and summary.already_present == cases
        with Session(db.engine) as session:
            done = session.get(ImportRun, summary.import_run_id)
            assert done is not None and done.status == "done"
            assert (done.rows_read, done.created, done.already_present) == (
                summary.rows_read, summary.created, summary.already_present)


def test_wrong_format_is_refused_before_anything_is_written(db_kind: str, tmp_path: Path) -> None:
    with FreshDatabase(db_kind, tmp_path) as db:
        assert db.engine is not None
        for wrong in (DATA / "la/boundaries/la_city_council_districts_2012.geojson", DATA / "manifest.json"):
            with pytest.raises(FormatError):
                import_file(db.engine, wrong, settings=intake("la"), rejects_dir=tmp_path)
        garbage = tmp_path / "random.bin"
        garbage.write_bytes(bytes(range(256)) * 10)
        with pytest.raises(FormatError):
            import_file(db.engine, garbage, settings=intake("la"), rejects_dir=tmp_path)
        with Session(db.engine) as session:
            assert count(session, Case) == 0


def test_bad_rows_are_rejected_with_the_field_named(db_kind: str, tmp_path: Path) -> None:
    """Real LA rows, some spoiled: the spoiled ones land in the rejects file, the rest import."""
    source = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
    with gzip.open(source, "rt", newline="") as fh:
        lines = fh.read().splitlines()
    header, rows = lines[0], lines[1:41]
    columns = header.split(",")
    import csv
    import io

    parsed = list(csv.reader(io.StringIO("\n".join(rows))))
    spoiled = [list(r) for r in parsed[:4]]
    spoiled[0][columns.index("latitude")] = "north-ish"
    spoiled[1][columns.index("createddate")] = "2020-13-45 25:61:00"
    spoiled[2][columns.index("srnumber")] = ""
    spoiled[3] = spoiled[3][:5]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(spoiled + parsed[4:])
    bad_file = tmp_path / "la_spoiled.csv"
    bad_file.write_text(out.getvalue())

    with FreshDatabase(db_kind, tmp_path) as db:
        assert db.engine is not None
        load_city_areas(db.engine, "la")
        summary = import_file(db.engine, bad_file, settings=intake("la"), rejects_dir=tmp_path)
        assert summary.adds_up and summary.rows_read == 40 and summary.rejected == 4
        reasons = Path(summary.rejects_file or "").read_text()
        assert "'latitude'" in reasons
        assert "'createddate'" in reasons
        assert "'srnumber'" in reasons
        assert "fields" in reasons
        with Session(db.engine) as session:
            assert count(session, Case) == 36


def test_import_keeps_original_file_untouched_and_is_idempotent_across_copies(
    db_kind: str, tmp_path: Path
) -> None:
    """The same records under another file name are still the same cases."""
    source = DATA / "nyc/records/nyc_311_2023-03-31__jun-yan_test_sample2.csv.gz"
    copy = tmp_path / "renamed_export.csv.gz"
    shutil.copy(source, copy)
    with FreshDatabase(db_kind, tmp_path) as db:
        assert db.engine is not None
        load_city_areas(db.engine, "nyc")
        first = import_file(db.engine, source, settings=intake("nyc"), rejects_dir=tmp_path)
        second = import_file(db.engine, copy, settings=intake("nyc"), rejects_dir=tmp_path)
        assert first.created + first.merged + first.unlocated > 0
        assert second.already_present == first.rows_read - first.rejected

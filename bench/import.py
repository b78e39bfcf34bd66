"""Import benchmark: every record in ../shared/data/311 through the full intake pipeline.

Prints, per city and in total: cases/s through the pipeline (parse, locate, district,
merge, prioritise, route, write), and in the same run the ceiling: a bare `sqlite3`
executemany of exactly the rows the pipeline wrote (cases, work orders, events), from
already-parsed values, into tables of the same schema, in batches of the same size.
Also the peak Python memory (tracemalloc) of each file's import next to the file's size,
to show that memory does not grow with the file.

    .venv/bin/python bench/import.py [--data PATH] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.db import create_db_engine, migrate  # noqa: E402
from server.demo import CITIES, default_data_dir  # noqa: E402
from server.intake.areas import load_areas  # noqa: E402
from server.intake.importer import import_file  # noqa: E402
from server.settings import DatabaseSettings, IntakeSettings  # noqa: E402

TABLES = ("work_order", "case_record", "work_order_event")
BATCH = 2000


def run_pipeline(city: str, data: Path, folder: Path, *, trace: bool) -> tuple[Path, int, float, list[str]]:
    """Import the city's files into a new database; with `trace`, measure memory instead."""
    spec = CITIES[city]
    db_path = folder / f"{city}{'-traced' if trace else ''}.db"
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{db_path}"))
    migrate(engine)
    for layer in spec.layers:
        load_areas(engine, data / layer.file, layer=layer.layer, name_field=layer.name_field,
                   code_field=layer.code_field, primary=layer.primary)
    intake = IntakeSettings(timezone=spec.timezone)
    rows = 0
    seconds = 0.0
    lines: list[str] = []
    for path in sorted(data.glob(spec.records)):
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        summary = import_file(engine, path, settings=intake, rejects_dir=folder / "rejects", batch_size=BATCH)
        seconds += time.perf_counter() - started
        rows += summary.rows_read
        if trace:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            lines.append(
                f"    {path.name:<52} {summary.rows_read:>6} rows {path.stat().st_size / 1e6:>5.2f} MB gz"
                f"  peak Python memory {peak / 1e6:>5.1f} MB"
            )
    engine.dispose()
    return db_path, rows, seconds, lines


def ceiling(db_path: Path, folder: Path) -> tuple[int, float]:
    """Bare sqlite3: the same rows, already parsed, into the same schema, in batches."""
    source = sqlite3.connect(db_path)
    target_path = folder / f"{db_path.stem}-ceiling.db"
    target = sqlite3.connect(target_path, isolation_level=None)
    target.execute("PRAGMA journal_mode=WAL")
    target.execute("PRAGMA synchronous=NORMAL")
    payload: dict[str, tuple[str, list[tuple[object, ...]]]] = {}
    written = 0
    for table in TABLES:
        # The same table and indexes; foreign keys stay unenforced (sqlite3's default).
        for (sql,) in source.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name=? AND sql IS NOT NULL ORDER BY type DESC", (table,)
        ):
            target.execute(sql)
        rows = source.execute(f"SELECT * FROM {table}").fetchall()
        marks = ",".join("?" * len(rows[0]))
        payload[table] = (f"INSERT INTO {table} VALUES ({marks})", rows)
        written += len(rows)
    cases = len(payload["case_record"][1])
    started = time.perf_counter()
    target.execute("BEGIN")
    for statement, rows in payload.values():
        for start in range(0, len(rows), BATCH):
            target.executemany(statement, rows[start : start + BATCH])
    target.execute("COMMIT")
    elapsed = time.perf_counter() - started
    source.close()
    target.close()
    return cases, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--city", action="append", choices=sorted(CITIES))
    args = parser.parse_args()
    cities = args.city or ["la", "chicago", "nyc"]
    total_rows = total_seconds = 0.0
    total_cases = total_ceiling_seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for city in cities:
            db_path, rows, seconds, _ = run_pipeline(city, args.data, folder, trace=False)
            cases, ceiling_seconds = ceiling(db_path, folder)
            total_rows += rows
            total_seconds += seconds
            total_cases += cases
            total_ceiling_seconds += ceiling_seconds
            print(f"{city}: pipeline {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s;"
                  f" ceiling {cases / ceiling_seconds:,.0f} cases/s ({cases:,} cases + their work orders"
                  f" and events in {ceiling_seconds:.2f} s)")
        print("\nmemory (a second pass under tracemalloc, which slows it): peak per file import")
        for city in cities:
            print("\n".join(run_pipeline(city, args.data, folder, trace=True)[3]))
    pipeline_rate = total_rows / total_seconds
    ceiling_rate = total_cases / total_ceiling_seconds
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"pipeline: {total_rows:,.0f} rows in {total_seconds:.2f} s = {pipeline_rate:,.0f} cases/s")
    print(f"ceiling (bare sqlite3 executemany of the same rows): {ceiling_rate:,.0f} cases/s")
    print(f"pipeline / ceiling: {pipeline_rate / ceiling_rate:.0%} (target >= 40%)")
    print(f"process peak RSS: {max_rss:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

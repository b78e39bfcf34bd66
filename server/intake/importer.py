"""Bulk import of a city's 311 export beside live traffic: short batches, a run that resumes.

The file is streamed in batches through the same pipeline as every other channel, and
**each batch is its own short write transaction**: its cases, work orders, events, feed
rows and the run's counters commit together or not at all. No transaction spans the file,
so the served API keeps answering while a city's export goes in: reads never wait, writers
wait for at most one batch on SQLite (between batches the importer lets every writer that
is waiting go first, see `server.db.WriterGate`), and on PostgreSQL only for the row locks of the few open work orders a
batch merges into.

A run that fails (a truncated or corrupt file, a database error) or is killed (kill -9, a
power cut) leaves whole batches behind, never half of one, and its `ImportRun` says
`failed`: an error marks it at once; a killed run is found by the next import (or
`reap_abandoned_runs`) because the run holds a lock for as long as its process lives (a
PostgreSQL advisory lock, or a lock file beside the SQLite database) and a dead process
holds none. **Re-running the file resumes it**: import is idempotent on (source, external
id), so the committed part counts as already present and the summary still adds up.

Every row that cannot be taken is written, whole, with its reason, to a rejects file that
appears only when the run completes (it is written to an unnamed temporary file first):
a failed or killed run leaves no partial rejects file.
"""

from __future__ import annotations

import csv
import fcntl
import gc
import gzip
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from server.db import write_session, writer_gate
from server.intake.formats import CITY_ZONES, detect_format, read_batches
from server.intake.pipeline import Pipeline
from server.intake.records import FormatError, IncomingCase, RejectedRow
from server.intake.servicetypes import load_overrides
from server.models import District, ImportRun, utcnow
from server.settings import IntakeSettings

__all__ = ["ImportSummary", "NoServiceAreas", "count_records", "has_service_areas", "import_file", "import_zone",
           "reap_abandoned_runs"]

# PostgreSQL: a batch that deadlocks with a live writer (both locking the same open work
# orders) or fails serialisation is rolled back and tried again this many times.
BATCH_ATTEMPTS = 5
_RETRY_SQLSTATES = {"40P01", "40001"}
_ADVISORY_CLASS = 0x0F1E  # the first key of the run's PostgreSQL advisory lock

Progress = Callable[[int], None]
_Item = IncomingCase | RejectedRow


@dataclass(slots=True)
class ImportSummary:
    file_name: str
    format: str
    rows_read: int = 0
    created: int = 0
    merged: int = 0
    already_present: int = 0
    unlocated: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rejects_file: str | None = None
    import_run_id: int | None = None
    timezone: str = ""
    timezone_source: str = ""  # why that zone: the setting, --timezone, or the city's export
    unlocated_closed: int = 0  # of `unlocated`: closed by the city, kept as history, not queued
    updates_kept: int = 0  # of `already_present`: a request number again, with a new outcome
    bad_close_times: int = 0  # closed before they were opened: kept, flagged
    queued_without_areas: bool = False

    @property
    def adds_up(self) -> bool:
        parts = self.created + self.merged + self.already_present + self.unlocated + self.rejected
        return parts == self.rows_read

    @property
    def rate(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        return [
            f"{self.file_name} ({self.format}): {self.rows_read:,} rows read in {self.seconds:.1f} s"
            f" ({self.rate:,.0f} rows/s)",
            f"  created {self.created:,} · merged {self.merged:,} · already present {self.already_present:,}"
            f" · unlocated {self.unlocated:,} · rejected {self.rejected:,}",
            f"  {'adds up' if self.adds_up else 'DOES NOT ADD UP'}: "
            f"{self.created} + {self.merged} + {self.already_present} + {self.unlocated} + {self.rejected}"
            f" = {self.created + self.merged + self.already_present + self.unlocated + self.rejected}",
        ] + self._notes() + ([f"  rejects: {self.rejects_file}"] if self.rejects_file else [])

    def _notes(self) -> list[str]:
        notes = [f"  times read in {self.timezone} ({self.timezone_source})"] if self.timezone else []
        if self.queued_without_areas:
            notes.append("  NO SERVICE AREAS LOADED: every case waits in the unlocated queue; load the areas, "
                         "then place them")
        if self.unlocated_closed:
            notes.append(f"  of the unlocated, {self.unlocated_closed:,} were closed by the city: kept as history, "
                         "not queued for a dispatcher")
        if self.updates_kept:
            notes.append(f"  of the already present, {self.updates_kept:,} repeated a request number with a new "
                         "outcome: kept as updates of that request")
        if self.bad_close_times:
            notes.append(f"  {self.bad_close_times:,} closed before they were opened (a typo in the date): kept, "
                         "closed at their creation time, the city's close time flagged")
        return notes


def count_records(path: Path) -> int | None:
    """A quick estimate of the number of records, for the progress bar (CSV only)."""
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except (OSError, EOFError):
        return None
    return max(lines - 1, 0)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


class _RejectsWriter:
    """Rejected rows go to an unnamed temporary file in the rejects folder, copied to the
    rejects file only when the run completes: a failed or killed run leaves none behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self.count = 0

    def write(self, rows: list[RejectedRow]) -> None:
        if not rows:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = tempfile.TemporaryFile("w+", newline="", encoding="utf-8", dir=self.path.parent)  # noqa: SIM115
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["line", "reason", "record"])
        for row in rows:
            self._writer.writerow([row.line, row.reason, json.dumps(row.raw, ensure_ascii=False)])
        self.count += len(rows)

    def publish(self) -> Path | None:
        """Write the rejects file (atomically: a temporary name, then a rename)."""
        if self._fh is None:
            return None
        self._fh.flush()
        self._fh.seek(0)
        partial = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        try:
            with open(partial, "w", newline="", encoding="utf-8") as out:
                shutil.copyfileobj(self._fh, out)
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
        return self.path

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class NoServiceAreas(FormatError):
    """Nothing to place the cases in: the import is refused before it starts."""


def import_zone(fmt: str, settings: IntakeSettings) -> tuple[str, str]:
    """(zone, why) in which a file's zone-less local times are read: a chosen zone
    (FIELDWORK_TIMEZONE or --timezone) wins; else the zone of the city whose export the
    format is; else the default setting."""
    if settings.timezone_set:
        return settings.timezone, "the configured time zone"
    if fmt in CITY_ZONES:
        return CITY_ZONES[fmt], f"the zone of the city whose export this is ({fmt})"
    return settings.timezone, "the default time zone"


def has_service_areas(engine: Engine) -> bool:
    with Session(engine) as session:
        return session.exec(select(District.id).where(col(District.primary)).limit(1)).first() is not None


def import_file(
    engine: Engine,
    path: str | Path,
    *,
    settings: IntakeSettings,
    fmt: str = "auto",
    rejects_dir: Path | None = None,
    progress: Progress | None = None,
    time_shift: timedelta | None = None,
    shift_until: datetime | None = None,
    batch_size: int = 2000,
    without_areas: bool = False,
) -> ImportSummary:
    """Import one export file in short batches; raises `FormatError` (after recording the
    failed run).

    Refused (`NoServiceAreas`, before any run is recorded) when no service areas are
    loaded, unless `without_areas`: then every case waits in the unlocated queue, and the
    summary says so loudly.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no such file: {path.name}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    queue_all = not has_service_areas(engine)
    if queue_all and not without_areas:
        raise NoServiceAreas(
            "no service areas are loaded, so no case could be placed in a district: load them first "
            "(fieldwork areas load <file.geojson>), or import --without-areas to queue every case unlocated"
        )
    zone, zone_source = import_zone(fmt, settings)
    reap_abandoned_runs(engine)
    summary = ImportSummary(file_name=path.name, format=fmt, timezone=zone, timezone_source=zone_source,
                            queued_without_areas=queue_all)
    gate = writer_gate(engine)  # SQLite: let waiting writers go first between batches
    with _RunLock(engine) as lock:
        run_id = _start_run(engine, path.name, fmt, lock)
        summary.import_run_id = run_id
        rejects_path = (rejects_dir or Path("var") / "rejects") / f"{path.name}.run{run_id}.rejects.csv"
        rejects = _RejectsWriter(rejects_path)
        pipeline = Pipeline(
            overrides=load_overrides(settings.service_types_config),
            tolerance_m=settings.boundary_tolerance_m,
            bulk=True,
            queue_without_areas=queue_all,
        )
        started = time.perf_counter()
        try:
            with _collections_per_batch():
                batches = read_batches(path, fmt=fmt, tz=ZoneInfo(zone), batch_size=batch_size)
                if engine.dialect.name != "sqlite":
                    batches = prefetch(batches)  # see prefetch for why not on SQLite
                for number, batch in enumerate(batches):
                    if number and gate is not None:
                        gate.yield_to_writers()
                    cases = [item for item in batch if not isinstance(item, RejectedRow)]
                    rejected = [item for item in batch if isinstance(item, RejectedRow)]
                    counts = _import_batch(engine, pipeline, cases, run_id=run_id, actor=f"import:{path.name}",
                                           time_shift=time_shift, shift_until=shift_until, rows=len(batch),
                                           rejected=len(rejected))
                    rejects.write(rejected)
                    summary.rows_read += len(batch)
                    summary.rejected += len(rejected)
                    for key in ("created", "merged", "already_present", "unlocated"):
                        setattr(summary, key, getattr(summary, key) + counts[key])
                    summary.unlocated_closed += counts["unlocated_closed"]
                    summary.updates_kept += counts["updates_kept"]
                    summary.bad_close_times += counts["bad_close_time"]
                    if progress:
                        progress(len(batch))
                    gc.collect(1)  # the batch's cyclic garbage, if any: see _collections_per_batch
            summary.seconds = time.perf_counter() - started
            published = rejects.publish()
            _finish_run(engine, run_id)
        except Exception as exc:
            rejects.close()
            _fail_run(engine, run_id, exc)
            raise
        finally:
            rejects.close()
    summary.rejects_file = str(published) if published else None
    return summary


def _import_batch(engine: Engine, pipeline: Pipeline, cases: list[IncomingCase], *, run_id: int, actor: str,
                  time_shift: timedelta | None, shift_until: datetime | None, rows: int,
                  rejected: int) -> dict[str, int]:
    """One batch in one short transaction, with the run's counters; tried again if it
    deadlocks with a live writer (PostgreSQL)."""
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        try:
            with write_session(engine) as session:
                result = pipeline.ingest(session, cases, channel="import", actor=actor, import_run_id=run_id,
                                         time_shift=time_shift, shift_until=shift_until)
                counts = {key: result.counts[key] for key in ("created", "merged", "already_present", "unlocated",
                                                                "unlocated_closed", "updates_kept", "bad_close_time")}
                _count_batch(session, run_id, rows=rows, rejected=rejected, counts=counts)
            return counts
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            pipeline.reset()  # what it remembered of the rolled-back batch is void
            if state not in _RETRY_SQLSTATES or attempt == BATCH_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


@contextmanager
def _collections_per_batch() -> Iterator[None]:
    """Switch the garbage collector's automatic runs off; the import collects once per batch.

    A batch allocates tens of thousands of short-lived objects, so left to itself the
    collector runs dozens of times per batch, and its full runs walk the whole heap (every
    module, the ORM's mappings): a sixth of an import's time. Collecting the young
    generations after each batch still finds the batch's reference cycles while they are
    young, so memory stays flat. Automatic collection is process-wide: it is switched back
    on (if it was on) when the import ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def prefetch(batches: Iterator[list[_Item]], depth: int = 2) -> Iterator[list[_Item]]:
    """Parse the next batches in a thread while this one is written.

    The PostgreSQL driver releases the GIL while it waits for the server, so parsing and
    writing overlap; `depth` bounds the batches held, so memory stays flat. Not for SQLite:
    sqlite3 releases the GIL only around each row's step and must take it back for the
    next, so the two threads merely take turns (measured: no overlap, a few % lost to
    switching).
    """
    done = object()
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        slots.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, raised there)
            slots.put(exc)

    worker = threading.Thread(target=produce, name="import-parser", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=5)


def _start_run(engine: Engine, file_name: str, fmt: str, lock: _RunLock) -> int:
    with write_session(engine) as session:
        run = ImportRun(file_name=file_name, format=fmt)
        session.add(run)
        session.flush()
        assert run.id is not None
        lock.hold(run.id)  # before the run is committed: nobody sees it running without its lock
        return run.id


def _count_batch(session: Session, run_id: int, *, rows: int, rejected: int, counts: dict[str, int]) -> None:
    table = ImportRun.__table__  # type: ignore[attr-defined]
    c = table.c
    session.connection().execute(table.update().where(c.id == run_id).values(
        rows_read=c.rows_read + rows, rejected=c.rejected + rejected, created=c.created + counts["created"],
        merged=c.merged + counts["merged"], already_present=c.already_present + counts["already_present"],
        unlocated=c.unlocated + counts["unlocated"]))


def _finish_run(engine: Engine, run_id: int) -> None:
    with write_session(engine) as session:
        run = session.get(ImportRun, run_id)
        assert run is not None
        run.status = "done"
        run.finished_at = utcnow()
        session.add(run)


def _fail_run(engine: Engine, run_id: int, exc: BaseException | str) -> None:
    with write_session(engine) as session:
        run = session.get(ImportRun, run_id)
        if run is not None and run.status == "running":
            run.status = "failed"
            run.finished_at = utcnow()
            run.error = str(exc)[:2000]
            session.add(run)


# -- is the run's process still alive? --------------------------------------------------------


class _RunLock:
    """Held for as long as the importing process lives: a session-level advisory lock on
    PostgreSQL (released by the server when the connection drops), an flock on a file beside
    the SQLite database (released by the kernel when the process dies)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._fd: int | None = None
        self._path: Path | None = None

    def hold(self, run_id: int) -> None:
        if self.engine.dialect.name == "postgresql":
            self._connection = self.engine.connect()
            self._connection.execute(text("SELECT pg_advisory_lock(:a, :b)"), {"a": _ADVISORY_CLASS, "b": run_id})
            self._connection.commit()
        else:
            self._path = _lock_path(self.engine, run_id)
            self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def __enter__(self) -> _RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connection is not None:
            self._connection.close()  # ends the session: the advisory lock goes with it
        if self._fd is not None:
            os.close(self._fd)
            assert self._path is not None
            self._path.unlink(missing_ok=True)


def _lock_path(engine: Engine, run_id: int) -> Path:
    database = engine.url.database or ""
    if not database or database == ":memory:":
        return Path(tempfile.gettempdir()) / f"fieldwork-import-{os.getpid()}-{run_id}.lock"
    return Path(f"{database}.import-run-{run_id}.lock")


def _alive(engine: Engine, run_id: int) -> bool:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            free = connection.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                                      {"a": _ADVISORY_CLASS, "b": run_id}).scalar_one()
            if free:
                connection.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": _ADVISORY_CLASS, "b": run_id})
            connection.commit()
            return not free
    path = _lock_path(engine, run_id)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
    return False


def reap_abandoned_runs(engine: Engine) -> list[int]:
    """Mark failed every `running` import whose process is gone (killed, crashed); returns
    their ids. Their committed batches stay whole; re-running the file completes it."""
    with Session(engine) as session:
        running = list(session.exec(select(ImportRun.id).where(ImportRun.status == "running")).all())
    dead = [run_id for run_id in running if run_id is not None and not _alive(engine, run_id)]
    for run_id in dead:
        _fail_run(engine, run_id, "the import stopped without finishing (its process ended); "
                  "its batches were committed whole: import the file again to complete it")
    return dead

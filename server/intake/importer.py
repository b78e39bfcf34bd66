"""Bulk import of a city's 311 export: one file, one transaction, one summary that adds up.

The file is streamed in batches through the same pipeline as every other channel. Each
file is imported atomically: a file that turns out truncated or corrupt half-way leaves
nothing behind but a failed `ImportRun` row, and re-running it is safe because import is
idempotent on (source, external id). Every row that cannot be taken is written, whole,
with its reason, to a rejects file: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import gc
import gzip
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from server.db import write_session
from server.intake.formats import detect_format, read_batches
from server.intake.pipeline import Pipeline
from server.intake.records import FormatError, IncomingCase, RejectedRow
from server.intake.servicetypes import load_overrides
from server.models import ImportRun, utcnow
from server.settings import IntakeSettings

__all__ = ["ImportSummary", "count_records", "import_file"]

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
        ] + ([f"  rejects: {self.rejects_file}"] if self.rejects_file else [])


def count_records(path: Path) -> int | None:
    """A quick estimate of the number of records, for the progress bar (CSV only)."""
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:  # type: ignore[operator]
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except (OSError, EOFError):
        return None
    return max(lines - 1, 0)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


class _RejectsWriter:
    """Opens the rejects file on the first reject, so clean files leave none behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None
        self._writer: csv.writer | None = None  # type: ignore[valid-type]

    def write(self, row: RejectedRow) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["line", "reason", "record"])
        self._writer.writerow([row.line, row.reason, json.dumps(row.raw, ensure_ascii=False)])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def import_file(
    engine: Engine,
    path: str | Path,
    *,
    settings: IntakeSettings,
    fmt: str = "auto",
    rejects_dir: Path | None = None,
    progress: Progress | None = None,
    time_shift: timedelta | None = None,
    batch_size: int = 2000,
) -> ImportSummary:
    """Import one export file; raises `FormatError` (after recording the failed run)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no such file: {path.name}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    summary = ImportSummary(file_name=path.name, format=fmt)
    run_id = _start_run(engine, path.name, fmt)
    summary.import_run_id = run_id
    rejects_path = (rejects_dir or Path("var") / "rejects") / f"{path.name}.run{run_id}.rejects.csv"
    rejects = _RejectsWriter(rejects_path)
    pipeline = Pipeline(
        overrides=load_overrides(settings.service_types_config),
        tolerance_m=settings.boundary_tolerance_m,
        bulk=True,
    )
    started = time.perf_counter()
    try:
        with write_session(engine) as session, _collections_per_batch():
            batches = read_batches(path, fmt=fmt, tz=settings.zone, batch_size=batch_size)
            if engine.dialect.name != "sqlite":
                batches = prefetch(batches)  # see prefetch for why not on SQLite
            for batch in batches:
                cases: list[IncomingCase] = []
                for item in batch:
                    if isinstance(item, RejectedRow):
                        rejects.write(item)
                        summary.rejected += 1
                    else:
                        cases.append(item)
                result = pipeline.ingest(
                    session, cases, channel="import", actor=f"import:{path.name}",
                    import_run_id=run_id, time_shift=time_shift,
                )
                summary.rows_read += len(batch)
                for key in ("created", "merged", "already_present", "unlocated"):
                    setattr(summary, key, getattr(summary, key) + result.counts[key])
                if progress:
                    progress(len(batch))
                gc.collect(1)  # the batch's cyclic garbage, if any: see _collections_per_batch
            summary.seconds = time.perf_counter() - started
            _finish_run(session, run_id, summary)
    except Exception as exc:
        rejects.close()
        rejects_path.unlink(missing_ok=True)
        _fail_run(engine, run_id, exc)
        raise
    rejects.close()
    summary.rejects_file = str(rejects_path) if rejects._writer is not None else None
    return summary


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
        except BaseException as exc:  # handed to the consumer, raised there
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


def _start_run(engine: Engine, file_name: str, fmt: str) -> int:
    with write_session(engine) as session:
        run = ImportRun(file_name=file_name, format=fmt)
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


def _finish_run(session, run_id: int, summary: ImportSummary) -> None:  # type: ignore[no-untyped-def]
    run = session.get(ImportRun, run_id)
    run.status = "done"
    run.finished_at = utcnow()
    for key in ("rows_read", "created", "merged", "already_present", "unlocated", "rejected"):
        setattr(run, key, getattr(summary, key))
    session.add(run)


def _fail_run(engine: Engine, run_id: int, exc: Exception) -> None:
    with write_session(engine) as session:
        run = session.get(ImportRun, run_id)
        if run is not None:
            run.status = "failed"
            run.finished_at = utcnow()
            run.error = str(exc)[:2000]
            session.add(run)

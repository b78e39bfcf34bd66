"""The lost-update race of issue 8: a dispatcher changes work orders while an import merges
new cases into them and a crew pushes notes onto them. Through the one writer, every change
is kept: each order's events carry consecutive versions 1..version with none doubled, its
case count matches its cases, and no merge resets what the dispatcher set.

Run on both databases; on PostgreSQL the three writers really overlap (on SQLite they take
turns at the writer lock).
"""

from __future__ import annotations

import csv
import gzip
import io
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.intake.importer import import_file
from server.models import Case, WorkOrder, WorkOrderEvent
from server.settings import IntakeSettings
from tests.conftest import LiveServer
from tests.sync_http.support import LA_FILE, Device, Seeded, seed, sign_in


@pytest.fixture(scope="module")
def seeded(engine: Engine) -> Seeded:
    return seed(engine, per_crew=6)


def duplicates_of(engine: Engine, orders: list[int], folder: Path, copies: int) -> Path:
    """An LA export of new cases that are duplicates (same type, place, a minute later) of
    the cases behind `orders`, `copies` of each, so that the import merges into them."""
    with Session(engine) as session:
        wanted = {c.external_id for c in session.exec(select(Case).where(Case.work_order_id.in_(orders))).all()}  # type: ignore[union-attr]
    with gzip.open(LA_FILE, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        names = [name.lower() for name in header]
        key, created = names.index("srnumber"), names.index("createddate")
        rows = [row for row in reader if row[key] in wanted]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for copy in range(copies):
        for row in rows:
            row = list(row)
            row[key] = f"{row[key]}-dup{copy}"
            when = datetime.fromisoformat(row[created]) + timedelta(minutes=1 + copy)
            row[created] = when.strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow(row)
    path = folder / "la_duplicates.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write(out.getvalue())
    return path


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_dispatcher_import_and_crew_pushes_lose_no_change(
    seeded: Seeded, engine: Engine, live_server: LiveServer, tmp_path: Path,
) -> None:
    targets = seeded.orders["north"][:4]
    path = duplicates_of(engine, targets, tmp_path, copies=40)
    dispatcher = sign_in(live_server.url, "dispatcher")
    north = Device(live_server.url, sign_in(live_server.url, "crew-north"))
    stop = threading.Event()
    set_priorities: list[tuple[int, int]] = []
    pushed: list[str] = []
    errors: list[str] = []

    def dispatch() -> None:
        n = 0
        with httpx.Client(base_url=live_server.url, timeout=30) as client:
            while not stop.is_set():
                job, priority = targets[n % len(targets)], 1 + (n // len(targets)) % 4
                response = client.patch(f"/api/dispatch/workorders/{job}", json={"priority": priority},
                                        headers=dispatcher)
                if response.status_code != 200:
                    errors.append(f"dispatch {response.status_code} {response.text[:200]}")
                set_priorities.append((job, priority))
                n += 1

    def push() -> None:
        n = 0
        while not stop.is_set():
            uid = uuid.uuid4().hex
            north.queue("note", work_order_id=targets[n % len(targets)], uid=uid, text=f"note {n}")
            response = north.push()
            if response.status_code != 200 or response.json()["results"][-1]["status"] != "applied":
                errors.append(f"push {response.status_code} {response.text[:200]}")
            else:
                pushed.append(uid)
            n += 1

    threads = [threading.Thread(target=dispatch), threading.Thread(target=push)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(set_priorities) >= len(targets))
        summary = import_file(engine, path, settings=IntakeSettings(timezone="America/Los_Angeles"),
                              rejects_dir=tmp_path, batch_size=8)
        done = len(set_priorities)
        wait_for(lambda: len(set_priorities) >= done + len(targets))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors[:5]
    assert summary.adds_up and summary.merged > 0 and set_priorities and pushed

    with Session(engine) as session:
        for job in targets:
            order = session.get(WorkOrder, job)
            assert order is not None
            events = session.exec(select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == job)
                                  .order_by(WorkOrderEvent.version)).all()  # type: ignore[arg-type]
            assert [e.version for e in events] == list(range(1, order.version + 1)), job  # consecutive, none doubled
            cases = session.exec(select(Case).where(Case.work_order_id == job)).all()
            assert order.case_count == len(cases) == 1 + sum(1 for e in events if e.kind == "merged")
            changes = [e for e in events if e.kind in {"priority", "alert"}]
            assert changes, job
            last = max(changes, key=lambda e: e.version)
            expected = 1 if last.kind == "alert" else last.data["priority"]  # type: ignore[index]
            assert order.priority == expected, job  # a merge never resets the dispatcher's priority
            last_set = [p for j, p in set_priorities if j == job][-1]
            assert last.kind == "alert" or order.priority == last_set
        notes = {e.uid for e in session.exec(select(WorkOrderEvent).where(WorkOrderEvent.uid.in_(pushed))).all()}  # type: ignore[attr-defined]
        assert notes == set(pushed)

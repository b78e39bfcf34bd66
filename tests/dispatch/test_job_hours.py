"""A job's estimated hours: the city's own records per service type (time entries, else time
on site), a default by the type's name before there are enough of them, and crews' load
counted with them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from server.db import read_session, write_session
from server.dispatch.crews import (
    JOB_HOURS,
    MIN_HISTORY,
    crew_loads,
    default_hours,
    job_hours,
    load_after,
    recorded_hours,
    type_hours,
)
from server.models import Crew, ServiceType, WorkOrder, WorkOrderEvent

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_defaults_by_the_types_name_in_each_citys_words() -> None:
    assert default_hours("pothole") == 1.5
    assert default_hours("Pothole in Street", "Pothole in Street") == 1.5
    assert default_hours("graffiti-removal", "Graffiti Removal") == 1.0
    assert default_hours("bulky-items", "Bulky Items") == 0.5
    assert default_hours("tree-trim", "Tree Trim") == 3.0
    assert default_hours("single-streetlight-issue", "Single Streetlight Issue") == 1.5
    assert default_hours("SLO", "Street Light Out") == 1.5
    assert default_hours("other", "Other") == JOB_HOURS
    # A word inside another is not that word: "street" is no "tree", "design" no "sign".
    assert default_hours("street-cleaning", "Street Cleaning") == JOB_HOURS
    assert default_hours("design-review", "Design review") == JOB_HOURS


def event(order: int, code: str, kind: str, to: str | None, minutes_after: float, data: dict[str, Any] | None = None
          ) -> tuple[int, str, str, str | None, datetime, dict[str, Any] | None]:
    return order, code, kind, to, T0 + timedelta(minutes=minutes_after), data


def test_recorded_time_wins_over_time_on_site() -> None:
    events = [
        # Two time entries (45 + 30 min) on a job that was on site for 3 h: 1.25 h.
        event(1, "pothole", "status", "on_site", 0), event(1, "pothole", "time", None, 50, {"minutes": 45}),
        event(1, "pothole", "time", None, 60, {"minutes": 30}), event(1, "pothole", "status", "completed", 180),
        # No time entry: from the last arrival on site to completion (a second visit, 2 h).
        event(2, "pothole", "status", "on_site", 0), event(2, "pothole", "status", "on_hold", 30),
        event(2, "pothole", "status", "on_site", 600), event(2, "pothole", "status", "completed", 720),
        # Completed with no arrival and no time recorded (an import): nothing known.
        event(3, "pothole", "status", "completed", 30),
        # On site over a day: a job left open overnight, not work.
        event(4, "tree", "status", "on_site", 0), event(4, "tree", "status", "completed", 60 * 30),
    ]
    assert recorded_hours(reversed(events)) == {"pothole": [1.25, 2.0]}


def test_the_median_replaces_the_default_once_there_are_enough_records() -> None:
    types = [("pothole", "Pothole"), ("graffiti", "Graffiti"), ("other", "Other")]
    few = {"pothole": [4.0] * (MIN_HISTORY - 1)}
    assert job_hours(types, few) == {"pothole": 1.5, "graffiti": 1.0, "other": JOB_HOURS}
    enough = {"pothole": [0.5, 0.75, 2.0, 9.0, 1.0], "graffiti": [0.25] * 7}
    assert job_hours(types, enough) == {"pothole": 1.0, "graffiti": 0.25, "other": JOB_HOURS}


def add_order(session: Any, code: str, number: str, *, crew_id: int | None = None, open_: bool = False) -> WorkOrder:
    order = WorkOrder(number=number, service_code=code, lat=34.05, lon=-118.25, first_reported_at=T0,
                      last_reported_at=T0, status="assigned" if open_ else "completed", is_open=open_,
                      crew_id=crew_id, closed_at=None if open_ else datetime.now(UTC) - timedelta(days=3))
    session.add(order)
    session.flush()
    return order


def add_event(session: Any, order: WorkOrder, kind: str, to: str | None, at: datetime, data: dict[str, Any] | None = None) -> None:
    session.add(WorkOrderEvent(uid=uuid.uuid4().hex, work_order_id=order.id, version=order.version, kind=kind,  # type: ignore[arg-type]
                               to_status=to, data=data, channel="sync", occurred_at=at, recorded_at=at))


def test_crews_load_counts_each_job_by_its_types_hours(engine: Engine) -> None:
    with write_session(engine) as session:
        session.add(ServiceType(code="tree-trim", name="Tree Trim"))
        session.add(ServiceType(code="pothole", name="Pothole in Street"))
        crew = Crew(name="Forestry", capacity=8)
        session.add(crew)
        session.flush()
        # The city's records: potholes take 2 h (time on site), 6 of them.
        start = datetime.now(UTC) - timedelta(days=5)
        for n in range(MIN_HISTORY + 1):
            order = add_order(session, "pothole", f"WO-H{n}")
            add_event(session, order, "status", "on_site", start + timedelta(hours=n * 3))
            add_event(session, order, "status", "completed", start + timedelta(hours=n * 3 + 2))
        add_order(session, "tree-trim", "WO-T1", crew_id=crew.id, open_=True)  # 3 h by default
        pothole = add_order(session, "pothole", "WO-P1", open_=True)
        trees = [add_order(session, "tree-trim", f"WO-T{n}", open_=True).id for n in (2, 3)]
        crew_id = crew.id
    with read_session(engine) as session:
        assert type_hours(session, fresh=True)["pothole"] == 2.0
        assert type_hours(session)["tree-trim"] == 3.0
        (load,) = crew_loads(session, crew_ids=[crew_id])
        assert (load.open_jobs, load.estimated_hours, load.overloaded) == (1, 3.0, False)
        # One pothole more: 5 h of 8, no warning.
        check = load_after(session, crew_id=crew_id, work_order_ids=[pothole.id])  # type: ignore[list-item]
        assert (check.hours_added, check.hours_after, check.overloaded, check.warning) == (2.0, 5.0, False, None)
        # Two trees more: 9 h of 8, with the warning the console shows.
        check = load_after(session, crew_id=crew_id, work_order_ids=trees)  # type: ignore[arg-type]
        assert (check.hours_added, check.hours_after, check.overloaded) == (6.0, 9.0, True)
        assert check.warning == "Forestry would have 9 h of work for 8 h of capacity (3 open jobs, 0 overdue)"

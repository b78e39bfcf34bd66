"""Seeding for the crew app's tests and benchmark: LA's real 311 records, one crew with a
user and N open work orders, and another crew to hand jobs over to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from server.auth.users import create_crew, create_user
from server.db import write_session
from server.intake.importer import import_file
from server.models import WorkOrder
from server.settings import Settings
from server.workorders.changes import Actor, assign
from tests.conftest import DATA, load_city_areas

LA_FILE = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
USERNAME = "crew.app"
PASSWORD = "a-day-of-work-orders"
DISPATCH = Actor(None, "dispatcher:test", "api")


@dataclass(frozen=True)
class CrewSeed:
    crew_id: int
    other_crew_id: int
    jobs: list[int]  # open work orders assigned to the crew, by id
    numbers: dict[int, str]  # id -> "WO-…" number


def seed_crew(engine: Engine, settings: Settings, jobs: int, *, file: Path = LA_FILE,
              username: str = USERNAME, password: str = PASSWORD, open_only: bool = True) -> CrewSeed:
    """`open_only=False` takes closed work orders too (the real exports are mostly closed
    cases: the benchmark's 1,000 need them; the phone receives them all the same)."""
    load_city_areas(engine, "la")
    import_file(engine, file, settings=settings.intake)
    with write_session(engine) as session:
        crew = create_crew(session, name="App crew")
        other = create_crew(session, name="Other crew")
        assert crew.id is not None and other.id is not None
        create_user(session, username=username, password=password, role="crew", crew_id=crew.id)
        orders = session.exec(
            select(WorkOrder)
            .where(WorkOrder.crew_id.is_(None), WorkOrder.deleted_at.is_(None))  # type: ignore[union-attr]
            .where(WorkOrder.is_open if open_only else True)  # type: ignore[arg-type]
            .order_by(WorkOrder.id)  # type: ignore[arg-type]
            .limit(jobs)
        ).all()
        assert len(orders) == jobs, f"the LA file gives {len(orders)} open work orders, not {jobs}"
        for order in orders:
            assign(session, order, crew_id=crew.id, actor=DISPATCH)
        return CrewSeed(crew.id, other.id, [o.id for o in orders],  # type: ignore[misc]
                        {o.id: o.number for o in orders})  # type: ignore[misc]

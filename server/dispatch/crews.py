"""Crews' load, the overload warning before an assignment, the suggested crew for a job,
and a crew's day in route order.

A job's estimated time comes from the city's own records (`type_hours`): per service type,
the median of its closed jobs' time on site (the crew's recorded time entries, else from
arriving on site to completing), once there are `MIN_HISTORY` of them; before that, a
default by the type's name (`TYPE_HOURS`: a pothole 1.5 h, graffiti 1 h, a bulky item
0.5 h, a tree 3 h …, else `JOB_HOURS`). A crew's `capacity` is the hours it works in a day;
a crew whose open jobs come to more hours than that is overloaded.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import case, func, or_, select
from sqlmodel import Session, col

from server.dispatch.route import Point, haversine_m
from server.errors import NotFound
from server.models import Crew, District, ServiceType, WorkOrder, WorkOrderEvent, utcnow

__all__ = [
    "JOB_HOURS", "MIN_HISTORY", "TYPE_HOURS", "CrewLoad", "Suggestion", "crew_loads", "default_hours", "job_hours",
    "load_after", "recorded_hours", "route_start", "suggest_crews", "type_hours",
]

JOB_HOURS = 1.0  # a job of a type nothing below names, with no history
MIN_HISTORY = 5  # closed jobs of a type with a recorded time before their median is used
HISTORY_DAYS = 365  # how far back the records are read
MAX_JOB_HOURS = 24.0  # a longer "time on site" is a job left open overnight, not work
_CACHE_SECONDS = 600.0  # the history moves slowly: read it at most this often per database

# Hours on site by a word in the type's code or name, first match wins (the cities name
# their types differently: "Pothole in Street", "pothole", "Street Light Out",
# "single-streetlight-issue").
TYPE_HOURS: tuple[tuple[str, float], ...] = (
    ("tree", 3.0),
    ("water main", 3.0),
    ("sewer", 2.5),
    ("catch basin", 2.0),
    ("sidewalk", 2.0),
    ("encampment", 2.0),
    ("pothole", 1.5),
    ("street light", 1.5),
    ("streetlight", 1.5),
    ("traffic signal", 1.5),
    ("illegal dumping", 1.0),
    ("graffiti", 1.0),
    ("rodent", 1.0),
    ("sign", 1.0),
    ("abandoned vehicle", 0.75),
    ("dead animal", 0.5),
    ("water waste", 0.5),
    ("bulky", 0.5),
    ("appliance", 0.5),
    ("electronic waste", 0.5),
    ("e waste", 0.5),
)


def default_hours(code: str, name: str = "") -> float:
    """The hours a job of this type takes when the city has no record of its own."""
    text = " " + re.sub(r"[^a-z0-9]+", " ", f"{code} {name}".lower()) + " "
    for word, hours in TYPE_HOURS:
        if f" {word}" in text:
            return hours
    return JOB_HOURS


def recorded_hours(events: Iterable[tuple[int, str, str, str | None, datetime, Mapping[str, Any] | None]]) -> dict[str, list[float]]:
    """Hours each closed job took, by service type, from its events `(work order id, type,
    kind, to_status, occurred_at, data)`: the sum of the crew's time entries when there are
    any, else from its last arrival on site to its completion; none when neither is known."""
    types: dict[int, str] = {}
    entered: dict[int, float] = defaultdict(float)
    arrived: dict[int, datetime] = {}
    done: dict[int, datetime] = {}
    for order_id, code, kind, to_status, occurred_at, data in sorted(events, key=lambda e: (e[0], e[4])):
        types[order_id] = code
        if kind == "time":
            entered[order_id] += float((data or {}).get("minutes") or 0) / 60
        elif to_status == "on_site":
            arrived[order_id] = occurred_at
        elif to_status == "completed" and order_id in arrived:
            done[order_id] = occurred_at
    out: dict[str, list[float]] = defaultdict(list)
    for order_id, code in types.items():
        hours = entered.get(order_id, 0.0)
        if hours <= 0 and order_id in done:
            hours = (done[order_id] - arrived[order_id]).total_seconds() / 3600
        if 0 < hours <= MAX_JOB_HOURS:
            out[code].append(hours)
    return dict(out)


def job_hours(types: Iterable[tuple[str, str]], history: Mapping[str, Sequence[float]], *,
              minimum: int = MIN_HISTORY) -> dict[str, float]:
    """Hours per job for each `(code, name)`: the median of the city's records of the type
    when it has at least `minimum` of them, else the default by its name."""
    out = {}
    for code, name in types:
        samples = history.get(code, ())
        hours = statistics.median(samples) if len(samples) >= minimum else default_hours(code, name)
        out[code] = round(hours, 2)
    return out


def _history(session: Session, now: datetime) -> dict[str, list[float]]:
    w = WorkOrder.__table__.c  # type: ignore[attr-defined]
    e = WorkOrderEvent.__table__.c  # type: ignore[attr-defined]
    rows = session.connection().execute(
        select(e.work_order_id, w.service_code, e.kind, e.to_status, e.occurred_at, e.data)
        .join(WorkOrder.__table__, w.id == e.work_order_id)  # type: ignore[attr-defined]
        .where(w.status == "completed", w.deleted_at.is_(None), w.closed_at >= now - timedelta(days=HISTORY_DAYS),
               or_(e.kind == "time", (e.kind == "status") & e.to_status.in_(["on_site", "completed"])))
    )
    return recorded_hours((r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows)


_cache: dict[str, tuple[float, dict[str, float]]] = {}
_cache_lock = threading.Lock()


def type_hours(session: Session, *, now: datetime | None = None, fresh: bool = False) -> dict[str, float]:
    """Hours per job for every service type, from the city's records (see `job_hours`);
    read at most every `_CACHE_SECONDS` per database unless `fresh`."""
    key = str(session.connection().engine.url)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and not fresh and time.monotonic() - cached[0] < _CACHE_SECONDS:
        return cached[1]
    types = [(t.code, t.name) for t in session.exec(select(ServiceType)).scalars()]  # type: ignore[call-overload]
    hours = job_hours(types, _history(session, now or utcnow()))
    with _cache_lock:
        _cache[key] = (time.monotonic(), hours)
    return hours


def _hours(counts: Iterable[tuple[str, int]], hours: Mapping[str, float]) -> float:
    return round(sum(n * hours.get(code, JOB_HOURS) for code, n in counts), 1)


class CrewLoad(msgspec.Struct, kw_only=True):
    id: int
    name: str
    skills: list[str]
    capacity_hours: float
    open_jobs: int
    overdue_jobs: int
    estimated_hours: float
    overloaded: bool
    last_lat: float | None
    last_lon: float | None
    last_seen_at: datetime | None
    yard_lat: float | None
    yard_lon: float | None


def crew_loads(session: Session, *, crew_ids: Sequence[int] | None = None, now: datetime | None = None) -> list[CrewLoad]:
    now = now or utcnow()
    hours = type_hours(session, now=now)
    w = WorkOrder.__table__.c  # type: ignore[attr-defined]
    jobs: dict[int, list[tuple[str, int]]] = defaultdict(list)
    overdue: dict[int, int] = defaultdict(int)
    for row in session.connection().execute(
        select(
            w.crew_id, w.service_code, func.count().label("open_jobs"),
            func.sum(case((w.sla_due_at < now, 1), else_=0)).label("overdue_jobs"),
        ).where(w.is_open, w.deleted_at.is_(None), w.crew_id.is_not(None)).group_by(w.crew_id, w.service_code)
    ):
        jobs[row.crew_id].append((row.service_code, int(row.open_jobs)))
        overdue[row.crew_id] += int(row.overdue_jobs or 0)
    query = select(Crew).where(col(Crew.active)).order_by(col(Crew.name))
    if crew_ids is not None:
        query = query.where(col(Crew.id).in_(list(crew_ids)))
    loads = []
    for crew in session.exec(query).scalars():  # type: ignore[call-overload]
        booked = _hours(jobs.get(crew.id, []), hours)
        loads.append(CrewLoad(
            id=crew.id, name=crew.name, skills=list(crew.skills or []), capacity_hours=float(crew.capacity),
            open_jobs=sum(n for _, n in jobs.get(crew.id, [])), overdue_jobs=overdue.get(crew.id, 0),
            estimated_hours=booked, overloaded=booked > crew.capacity, last_lat=crew.last_lat,
            last_lon=crew.last_lon, last_seen_at=crew.last_seen_at, yard_lat=crew.yard_lat, yard_lon=crew.yard_lon,
        ))
    return loads


class LoadCheck(msgspec.Struct, kw_only=True):
    crew_id: int
    crew_name: str
    capacity_hours: float
    hours_before: float
    hours_added: float
    hours_after: float
    overloaded: bool
    warning: str | None


def load_after(session: Session, *, crew_id: int, work_order_ids: Sequence[int]) -> LoadCheck:
    """The crew's estimated hours once these jobs are added (those it holds already or that
    are closed add nothing), and a warning when that passes its capacity."""
    loads = crew_loads(session, crew_ids=[crew_id])
    if not loads:
        raise NotFound(f"no active crew with id {crew_id}", field="crew_id")
    load = loads[0]
    w = WorkOrder.__table__.c  # type: ignore[attr-defined]
    added_jobs = [
        (row[0], int(row[1])) for row in session.connection().execute(
            select(w.service_code, func.count()).where(
                w.id.in_(list(work_order_ids)), w.is_open, w.deleted_at.is_(None),
                (w.crew_id.is_(None)) | (w.crew_id != crew_id),
            ).group_by(w.service_code)
        )
    ]
    added = sum(n for _, n in added_jobs)
    hours_added = _hours(added_jobs, type_hours(session))
    after = round(load.estimated_hours + hours_added, 1)
    overloaded = after > load.capacity_hours and hours_added > 0
    warning = (
        f"{load.name} would have {after:g} h of work for {load.capacity_hours:g} h of capacity "
        f"({load.open_jobs + added} open jobs, {load.overdue_jobs} overdue)"
        if overloaded else None
    )
    return LoadCheck(crew_id=load.id, crew_name=load.name, capacity_hours=load.capacity_hours,
                     hours_before=load.estimated_hours, hours_added=hours_added, hours_after=after,
                     overloaded=overloaded, warning=warning)


def route_start(crew: Crew | CrewLoad) -> tuple[Point | None, str]:
    """Where the crew is: its last reported position, else its yard, else unknown."""
    if crew.last_lat is not None and crew.last_lon is not None:
        return (crew.last_lat, crew.last_lon), "last position"
    if crew.yard_lat is not None and crew.yard_lon is not None:
        return (crew.yard_lat, crew.yard_lon), "yard"
    return None, ""


class Suggestion(msgspec.Struct, kw_only=True):
    crew_id: int
    crew_name: str
    score: float
    distance_km: float | None
    skilled: bool
    estimated_hours: float
    capacity_hours: float
    reason: str


def suggest_crews(session: Session, *, work_order_id: int) -> list[Suggestion]:
    """Active crews, best first: those with the skill for the job's type, then those with
    room, then the nearest (from the last position or yard, else the middle of the crew's
    home districts' open jobs) and the least loaded. Each with the reason in words."""
    order = session.get(WorkOrder, work_order_id)
    if order is None or order.deleted_at is not None:
        raise NotFound(f"work order {work_order_id} does not exist", field="work_order_id")
    loads = crew_loads(session)
    crews = {c.id: c for c in session.exec(select(Crew).where(col(Crew.active))).scalars()}  # type: ignore[call-overload]
    home_names = {
        d.id: d.name for d in session.exec(select(District)).scalars()  # type: ignore[call-overload]
    }
    job = (order.lat, order.lon)
    job_time = type_hours(session).get(order.service_code, JOB_HOURS)
    out = []
    for load in loads:
        crew = crews[load.id]
        skilled = not load.skills or order.service_code in load.skills
        start, where = route_start(load)
        distance = haversine_m(start, job) / 1000 if start is not None else None
        in_home = order.district_id is not None and order.district_id in (crew.home_districts or [])
        room = load.capacity_hours - load.estimated_hours
        # Lower is better: skill dominates, then room, then km and hours booked.
        score: float = (0 if skilled else 1000) + (0 if room >= job_time else 100) + (0 if in_home else 5)
        score += (distance if distance is not None else 20.0) + load.estimated_hours / max(load.capacity_hours, 1.0)
        parts = [("does " + order.service_code) if load.skills and skilled else
                 ("any type" if skilled else f"no skill for {order.service_code}")]
        if distance is not None:
            parts.append(f"{distance:.1f} km from its {where}")
        if in_home and order.district_id is not None:
            parts.append(f"works {home_names.get(order.district_id, 'this district')}")
        parts.append(f"{load.estimated_hours:g} of {load.capacity_hours:g} h booked")
        out.append(Suggestion(
            crew_id=load.id, crew_name=load.name, score=round(score, 3),
            distance_km=round(distance, 2) if distance is not None else None, skilled=skilled,
            estimated_hours=load.estimated_hours, capacity_hours=load.capacity_hours, reason=", ".join(parts),
        ))
    return sorted(out, key=lambda s: (s.score, s.crew_name))

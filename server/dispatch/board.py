"""What the console reads: the board (a filtered, keyset-paged list), the map (a whole
city's matching work as parallel arrays, cached by the change-feed position), exports
(CSV and GeoJSON, streamed page by page, never truncated) and statistics.

The filters are the work-order API's (`WorkOrderFilters`) plus a date range on the first
report and a search that also matches the city's own request number (a case's external
id). Queries are plain Core selects over the columns a screen shows.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Engine, and_, case, exists, func, or_, select
from sqlalchemy.sql import ColumnElement
from sqlmodel import Session, col

from server.db import read_session, statement_session
from server.errors import ValidationFailed
from server.models import Case, Crew, District, ServiceType, WorkOrder, utcnow
from server.readcache import POSITION_COLUMNS, ReadCache, answer_key, position_from_row, settled
from server.status import Status, info
from server.workorders.service import WorkOrderFilters, decode_cursor, encode_cursor
from sync.models import SyncChange

__all__ = [
    "BoardFilters",
    "BoardItem",
    "BoardPage",
    "MapCache",
    "board_page",
    "export_csv",
    "export_geojson",
    "feed_position",
    "map_payload",
    "stats",
]

BOARD_MAX = 500
EXPORT_PAGE = 2000
_Q_MAX = 100
STATUS_CODES = [s.value for s in Status]  # the map sends an index into this list
_STATUS_INDEX = {s: i for i, s in enumerate(STATUS_CODES)}


@dataclass(frozen=True, slots=True)
class BoardFilters:
    """The work-order filters (`base`, without its `q`), a date range and the console's search."""

    base: WorkOrderFilters = field(default_factory=WorkOrderFilters)
    since: datetime | None = None  # first reported at or after
    until: datetime | None = None  # first reported before
    q: str | None = None  # number, address or the city's request number

    def key(self) -> str:
        return repr((self.base, self.since, self.until, self.q))

    def clauses(self, now: datetime) -> list[ColumnElement[bool]]:
        where = list(replace(self.base, q=None).clauses(now))
        where.append(col(WorkOrder.deleted_at).is_(None))
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValidationFailed("since must be before until", field="since")
        if self.since is not None:
            where.append(col(WorkOrder.first_reported_at) >= self.since)
        if self.until is not None:
            where.append(col(WorkOrder.first_reported_at) < self.until)
        if self.q is not None and self.q.strip():
            q = self.q.strip()
            if len(q) > _Q_MAX:
                raise ValidationFailed(f"q is at most {_Q_MAX} characters", field="q")
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(or_(
                col(WorkOrder.number).ilike(pattern, escape="\\"),
                col(WorkOrder.address).ilike(pattern, escape="\\"),
                exists().where(col(Case.work_order_id) == col(WorkOrder.id), col(Case.external_id) == q),
            ))
        return where


class BoardItem(msgspec.Struct, kw_only=True):
    id: int
    number: str
    status: str
    status_label: str
    priority: int
    emergency: bool
    overdue: bool
    service_code: str
    service_name: str
    address: str | None
    district_id: int | None
    district_name: str | None
    crew_id: int | None
    crew_name: str | None
    lat: float
    lon: float
    case_count: int
    first_reported_at: datetime
    sla_due_at: datetime | None
    route_position: int | None
    version: int


class BoardPage(msgspec.Struct, kw_only=True):
    items: list[BoardItem]
    next_cursor: str | None


_W = WorkOrder.__table__.c  # type: ignore[attr-defined]
_BOARD_SELECT = (
    select(
        _W.id, _W.number, _W.status, _W.priority, _W.emergency, _W.is_open, _W.service_code,
        col(ServiceType.name).label("service_name"), _W.address, _W.district_id,
        col(District.name).label("district_name"), _W.crew_id, col(Crew.name).label("crew_name"),
        _W.lat, _W.lon, _W.case_count, _W.first_reported_at, _W.sla_due_at, _W.route_position, _W.version,
    )
    .join(ServiceType, col(ServiceType.code) == _W.service_code)
    .outerjoin(District, col(District.id) == _W.district_id)
    .outerjoin(Crew, col(Crew.id) == _W.crew_id)
)
_LABELS = {s.value: info(s).label for s in Status}


def _item(row: Any, now: datetime) -> BoardItem:
    due = row.sla_due_at
    return BoardItem(
        id=row.id, number=row.number, status=row.status, status_label=_LABELS[row.status], priority=row.priority,
        emergency=bool(row.emergency), overdue=bool(row.is_open and due is not None and due < now),
        service_code=row.service_code, service_name=row.service_name, address=row.address,
        district_id=row.district_id, district_name=row.district_name, crew_id=row.crew_id, crew_name=row.crew_name,
        lat=row.lat, lon=row.lon, case_count=row.case_count, first_reported_at=row.first_reported_at,
        sla_due_at=due, route_position=row.route_position, version=row.version,
    )


def board_page(session: Session, *, filters: BoardFilters, limit: int = 100, cursor: str | None = None,
               now: datetime | None = None) -> BoardPage:
    """One page of matching work orders, newest first; `next_cursor` continues it."""
    now = now or utcnow()
    if not 1 <= limit <= BOARD_MAX:
        raise ValidationFailed(f"limit is 1 to {BOARD_MAX}", field="limit")
    after = decode_cursor(cursor)
    statement = _BOARD_SELECT.where(*filters.clauses(now))
    if after is not None:
        statement = statement.where(_W.id < after)
    rows = session.connection().execute(statement.order_by(_W.id.desc()).limit(limit + 1)).all()
    items = [_item(row, now) for row in rows[:limit]]
    return BoardPage(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)


# -- the map ------------------------------------------------------------------------------


def feed_position(session: Session) -> int:
    """The change feed's newest row id: any change to any work order moves it."""
    return int(session.connection().execute(select(func.coalesce(func.max(col(SyncChange.id)), 0))).scalar_one() or 0)


_encoder = msgspec.json.Encoder()


def _map_select(now: datetime) -> Any:
    # Flags are worked out by the database: parsing 100,000 due times in Python (SQLite keeps
    # them as text) cost most of the map's time.
    overdue = and_(_W.is_open, _W.sla_due_at.is_not(None), _W.sla_due_at < now)
    flags = case((_W.emergency, 1), else_=0) + case((overdue, 2), else_=0)
    return select(_W.id, _W.lat, _W.lon, _W.status, _W.priority, flags.label("flags"), _W.crew_id, _W.service_code)


def map_payload(session: Session, *, filters: BoardFilters, position: int, now: datetime | None = None) -> bytes:
    """Every matching work order as parallel arrays (a city's open work is tens of thousands
    of points: arrays of numbers are a fraction of the bytes of GeoJSON objects), JSON-encoded.

    `status` is an index into `statuses`; `flags` is 1 emergency + 2 overdue; `crew` 0 for none.
    Service types are indexes into `services`.
    """
    now = now or utcnow()
    rows = session.connection().execute(_map_select(now).where(*filters.clauses(now)).order_by(_W.id)).all()
    ids, lats, lons, statuses, priority, flags, crews, codes = (list(c) for c in zip(*rows, strict=True)) if rows else (
        [], [], [], [], [], [], [], [])
    services: dict[str, int] = {}
    return _encoder.encode({
        "position": position, "count": len(ids), "statuses": STATUS_CODES,
        "id": ids, "lat": [round(v, 6) for v in lats], "lon": [round(v, 6) for v in lons],
        "status": [_STATUS_INDEX[v] for v in statuses], "priority": priority, "flags": flags,
        "crew": [v or 0 for v in crews], "service": [services.setdefault(v, len(services)) for v in codes],
        "services": list(services),
    })


class MapCache:
    """Encoded map answers by (filters, feed position, minute) in a `ReadCache`: while nothing
    changes, a hundred dispatchers' refreshes cost one query, and concurrent misses of one key
    wait for one build. The minute in the key ages answers out (overdue flags follow the clock).
    """

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        self._answers = ReadCache(max_bytes=max_bytes)

    def get(self, engine: Engine, filters: BoardFilters) -> tuple[str | None, bytes]:
        """(the answer's version, the encoded answer). Kept by the feed position of
        server/readcache.py (the newest (txid, id) of the scopes), which a late commit on
        PostgreSQL moves where the newest id alone stays put. The version names that
        position, and is None for an answer read while an older writer still ran (it may
        change without the position moving: no client may keep it as current)."""
        with statement_session(engine) as session:
            row = session.connection().execute(_MAP_POSITION).one()
        position, token = int(row[0] or 0), position_from_row(tuple(row[1:]))
        key = answer_key("map", token, filters.key())
        version = "-".join("" if part is None else str(part) for part in token.token)
        body = self._answers.get(key) if key is not None else None
        if body is not None:
            return version, body
        with statement_session(engine) as session:
            # PostgreSQL hands out feed ids before commit: while an older writer still runs,
            # its commit would not move the position, so the answer is not kept.
            keep = settled(session.connection(), token)
            body = self._answers.build(key if keep else None,
                                       lambda: map_payload(session, filters=filters, position=position))
        return (version if keep else None), body


_MAP_POSITION = select(func.max(col(SyncChange.id)), *POSITION_COLUMNS)


# -- exports: every matching row, a page at a time ----------------------------------------

_EXPORT_SELECT = (
    select(
        _W.id, _W.number, _W.service_code, col(ServiceType.name).label("service_name"), _W.status, _W.priority,
        _W.emergency, _W.address, _W.description, col(District.name).label("district_name"),
        col(Crew.name).label("crew_name"), _W.lat, _W.lon, _W.case_count, _W.first_reported_at,
        _W.last_reported_at, _W.sla_due_at, _W.closed_at,
    )
    .join(ServiceType, col(ServiceType.code) == _W.service_code)
    .outerjoin(District, col(District.id) == _W.district_id)
    .outerjoin(Crew, col(Crew.id) == _W.crew_id)
)
EXPORT_COLUMNS = (
    "number", "id", "service_code", "service_name", "status", "priority", "emergency", "address", "description",
    "district", "crew", "lat", "lon", "case_count", "requested_at", "last_reported_at", "due_at", "closed_at",
)


def _export_rows(engine: Engine, filters: BoardFilters, now: datetime) -> Iterator[list[Any]]:
    """Pages of rows by id, each read in a short session of its own: a long export never
    holds a transaction open, and rows changed meanwhile neither repeat nor go missing."""
    clauses = filters.clauses(now)  # the handler validated them before the first byte went out
    after = 0
    while True:
        with read_session(engine) as session:
            rows = session.connection().execute(
                _EXPORT_SELECT.where(*clauses, _W.id > after).order_by(_W.id).limit(EXPORT_PAGE)
            ).all()
        if not rows:
            return
        yield list(rows)
        after = rows[-1].id
        if len(rows) < EXPORT_PAGE:
            return


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _values(row: Any) -> list[Any]:
    return [
        row.number, row.id, row.service_code, row.service_name, row.status, row.priority, row.emergency,
        row.address, row.description, row.district_name, row.crew_name, row.lat, row.lon, row.case_count,
        _iso(row.first_reported_at), _iso(row.last_reported_at), _iso(row.sla_due_at), _iso(row.closed_at),
    ]


def export_csv(engine: Engine, filters: BoardFilters, now: datetime | None = None) -> Iterator[bytes]:
    now = now or utcnow()
    pages = _export_rows(engine, filters, now)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for page in pages:
        for row in page:
            writer.writerow(_values(row))
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():  # the header line of an empty export
        yield buffer.getvalue().encode()


def export_geojson(engine: Engine, filters: BoardFilters, now: datetime | None = None) -> Iterator[bytes]:
    """An RFC 7946 FeatureCollection written feature by feature."""
    now = now or utcnow()
    pages = _export_rows(engine, filters, now)
    yield b'{"type":"FeatureCollection","features":['
    first = True
    for page in pages:
        chunk = []
        for row in page:
            values = dict(zip(EXPORT_COLUMNS, _values(row), strict=True))
            lon, lat = values.pop("lon"), values.pop("lat")
            feature = {"type": "Feature", "id": row.id, "geometry": {"type": "Point", "coordinates": [lon, lat]},
                       "properties": values}
            chunk.append(_encoder.encode(feature))
        if chunk:
            yield (b"" if first else b",") + b",".join(chunk)
            first = False
    yield b"]}"


# -- statistics ---------------------------------------------------------------------------


class GroupStats(msgspec.Struct, kw_only=True):
    key: str
    name: str
    open: int
    closed: int
    overdue: int
    sla_met: int  # closed by their due time
    sla_due: int  # closed with a due time
    median_hours_to_close: float | None


class Stats(msgspec.Struct, kw_only=True):
    total: GroupStats
    by_district: list[GroupStats]
    by_type: list[GroupStats]


def stats(session: Session, *, filters: BoardFilters, now: datetime | None = None) -> Stats:
    """Open and closed by district and by type, SLA compliance and median time to close."""
    now = now or utcnow()
    rows = session.connection().execute(
        select(_W.district_id, col(District.name).label("district_name"), _W.service_code,
               col(ServiceType.name).label("service_name"), _W.is_open, _W.status, _W.first_reported_at,
               _W.closed_at, _W.sla_due_at)
        .join(ServiceType, col(ServiceType.code) == _W.service_code)
        .outerjoin(District, col(District.id) == _W.district_id)
        .where(*filters.clauses(now))
    ).all()

    class _Acc:
        __slots__ = ("closed", "hours", "met", "name", "open", "overdue", "sla")

        def __init__(self, name: str) -> None:
            self.name, self.open, self.closed, self.overdue, self.met, self.sla = name, 0, 0, 0, 0, 0
            self.hours: list[float] = []

    total = _Acc("all")
    districts: dict[str, _Acc] = {}
    types: dict[str, _Acc] = {}
    for row in rows:
        district_key = str(row.district_id) if row.district_id is not None else "none"
        groups = (total, districts.setdefault(district_key, _Acc(row.district_name or "no district")),
                  types.setdefault(row.service_code, _Acc(row.service_name)))
        due = row.sla_due_at
        for acc in groups:
            if row.is_open:
                acc.open += 1
                if due is not None and due < now:
                    acc.overdue += 1
            elif row.status != Status.CANCELLED.value and row.closed_at is not None:
                acc.closed += 1
                acc.hours.append((row.closed_at - row.first_reported_at).total_seconds() / 3600)
                if due is not None:
                    acc.sla += 1
                    acc.met += row.closed_at <= due

    def out(key: str, acc: _Acc) -> GroupStats:
        return GroupStats(key=key, name=acc.name, open=acc.open, closed=acc.closed, overdue=acc.overdue,
                          sla_met=acc.met, sla_due=acc.sla,
                          median_hours_to_close=round(statistics.median(acc.hours), 2) if acc.hours else None)

    return Stats(
        total=out("all", total),
        by_district=sorted((out(k, a) for k, a in districts.items()), key=lambda g: (-g.open, g.name)),
        by_type=sorted((out(k, a) for k, a in types.items()), key=lambda g: (-g.open, g.name)),
    )

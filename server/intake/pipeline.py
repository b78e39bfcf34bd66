"""The intake pipeline: one code path from `IncomingCase` values to work orders.

Every channel (bulk import, Open311 POST, JSON API) hands a batch to `Pipeline.ingest`
inside its own write transaction. Steps, in order:

1. already present? (source, external id) seen before → nothing is written;
2. locate: a usable WGS84 point inside (or within tolerance of) the service areas, else the
   case is stored in the *unlocated* queue for a dispatcher;
3. district: point-in-polygon, vectorised over the batch (`server.geo.DistrictIndex`);
4. merge: an open work order of the same type within the type's radius and time window
   absorbs the case (one pothole reported five times is one job with five cases);
5. prioritise: the type's priority and SLA; an emergency keyword raises the flag;
6. route: (district, type) rules pick the crew.

Rows are written with bulk Core inserts, not one ORM object per row: a city export is
tens of thousands of rows.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, func, text, update
from sqlmodel import Session, select

from server.db import bulk_insert
from server.geo import DistrictIndex, PointGrid, valid_wgs84
from server.intake.numbers import format_number
from server.intake.records import IncomingCase
from server.intake.servicetypes import (
    EmergencyMatcher,
    apply_overrides,
    service_type_defaults,
)
from server.models import (
    Case,
    CaseContact,
    District,
    RoutingRule,
    ServiceType,
    WorkOrder,
    WorkOrderEvent,
    utcnow,
)
from server.status import Status
from server.workorders.changes import publish_orders, publish_reference

__all__ = ["CaseOutcome", "IngestResult", "Pipeline", "ReferenceData", "load_district_index"]

Outcome = Literal["created", "merged", "already_present", "unlocated"]


@dataclass(slots=True)
class CaseOutcome:
    outcome: Outcome
    case_id: int
    work_order_id: int | None
    tracking_token: str | None
    emergency: bool = False


@dataclass(slots=True)
class IngestResult:
    outcomes: list[CaseOutcome] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _OpenOrder:
    """What merging needs to know of an open work order (kept in a grid per type)."""

    id: int
    x: float
    y: float
    first_reported_at: datetime
    last_reported_at: datetime
    case_count: int
    version: int
    emergency: bool
    priority: int
    crew_id: int | None


_INDEX_CACHE: dict[tuple[str, float], tuple[tuple[int, int], DistrictIndex]] = {}


def load_district_index(session: Session, *, tolerance_m: float) -> DistrictIndex:
    """The primary layer's index, rebuilt only when the set of districts changes.

    Building it for the NYC community districts takes ~0.3 s, too slow for every Open311
    POST; a server keeps one per database and re-reads when districts are added or removed.
    """
    signature = tuple(
        session.exec(select(func.count(District.id), func.coalesce(func.max(District.id), 0)).where(District.primary)).one()
    )
    key = (str(session.get_bind().url), tolerance_m)
    cached = _INDEX_CACHE.get(key)
    if cached and cached[0] == signature:
        return cached[1]
    rows = session.exec(select(District.id, District.geometry).where(District.primary)).all()
    index = DistrictIndex([r[0] for r in rows], [r[1] for r in rows], tolerance_m=tolerance_m)
    _INDEX_CACHE[key] = (signature, index)  # type: ignore[assignment]
    return index


@dataclass
class ReferenceData:
    """Districts, service types and routing rules, loaded once per pipeline."""

    districts: DistrictIndex
    service_types: dict[str, dict[str, Any]]
    routing: dict[tuple[int | None, str | None], int]
    matchers: dict[str, EmergencyMatcher] = field(default_factory=dict)

    def matcher(self, code: str) -> EmergencyMatcher:
        if code not in self.matchers:
            self.matchers[code] = EmergencyMatcher(self.service_types[code]["emergency_keywords"] or [])
        return self.matchers[code]

    def crew_for(self, district_id: int | None, code: str) -> int | None:
        for key in ((district_id, code), (district_id, None), (None, code), (None, None)):
            if key in self.routing:
                return self.routing[key]
        return None


class Pipeline:
    """Runs batches through the intake steps. One instance per import run or request.

    In bulk mode the open work orders of each service type are loaded once and kept in a
    grid for the whole run; otherwise only those near the batch are read from the database.
    """

    def __init__(
        self,
        *,
        overrides: dict[str, dict[str, Any]] | None = None,
        tolerance_m: float = 50.0,
        bulk: bool = False,
        districts: DistrictIndex | None = None,
    ) -> None:
        self.overrides = overrides or {}
        self.tolerance_m = tolerance_m
        self.bulk = bulk
        self._districts = districts
        self._ref: ReferenceData | None = None
        self._grids: dict[str, PointGrid] = {}
        self._loaded_types: set[str] = set()

    # -- reference data -------------------------------------------------------------------

    def reference(self, session: Session) -> ReferenceData:
        if self._ref is None:
            districts = self._districts or load_district_index(session, tolerance_m=self.tolerance_m)
            types = _service_types(session)
            routing = {
                (r.district_id, r.service_code): r.crew_id
                for r in session.exec(select(RoutingRule)).all()
            }
            self._ref = ReferenceData(districts, types, routing)
        return self._ref

    def _ensure_service_types(self, session: Session, cases: list[IncomingCase]) -> None:
        ref = self.reference(session)
        new: dict[str, dict[str, Any]] = {}
        for case in cases:
            if case.service_code not in ref.service_types and case.service_code not in new:
                values = service_type_defaults(case.service_code, case.service_name)
                new[case.service_code] = apply_overrides(values, self.overrides)
        if new:
            # Another writer may have created the same type meanwhile: re-read, then insert.
            present = set(
                session.exec(select(ServiceType.code).where(ServiceType.code.in_(list(new)))).all()
            )
            rows = [v for k, v in new.items() if k not in present]
            if rows:
                _bulk_insert(session, ServiceType, rows)
                publish_reference(session, "service_type", [row["code"] for row in rows])
            ref.service_types.update(_service_types(session, codes=list(new)))

    # -- the steps ----------------------------------------------------------------------

    def ingest(
        self,
        session: Session,
        cases: list[IncomingCase],
        *,
        channel: str,
        actor: str = "system",
        actor_user_id: int | None = None,
        import_run_id: int | None = None,
        time_shift: timedelta | None = None,
        now: datetime | None = None,
    ) -> IngestResult:
        now = now or utcnow()
        result = IngestResult()
        if not cases:
            return result
        if time_shift:
            cases = [_shifted(c, time_shift, now) for c in cases]
        fresh, present = self._split_present(session, cases)
        for case, case_id in present:
            result.outcomes.append(CaseOutcome("already_present", case_id, None, None))
            result.counts["already_present"] += 1
        if not fresh:
            return result
        self._ensure_service_types(session, fresh)
        ref = self.reference(session)

        district_ids = self._locate(fresh, ref)
        case_ids = _allocate_ids(session, Case, len(fresh))
        case_rows: list[dict[str, Any]] = []
        contact_rows: list[dict[str, Any]] = []
        new_orders: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        pending: list[tuple[int, IncomingCase, int, str]] = []  # (index, case, district, token)

        tokens = _tracking_tokens(len(fresh))
        for index, case in enumerate(fresh):
            token = tokens[index]
            problem = district_ids[index][1]
            row = _case_row(case, case_ids[index], token, now, import_run_id, time_shift)
            row["district_id"] = district_ids[index][0]
            keyword = ref.matcher(case.service_code).find(f"{case.service_name} {case.description}")
            row["emergency"] = keyword is not None
            if problem:
                row["location_state"] = "unlocated"
                row["location_problem"] = problem
                result.outcomes.append(CaseOutcome("unlocated", case_ids[index], None, token, bool(keyword)))
                result.counts["unlocated"] += 1
            else:
                pending.append((index, case, district_ids[index][0], token))
            case_rows.append(row)
            if case.contact is not None and not case.contact.is_empty():
                contact_rows.append(
                    {
                        "case_id": case_ids[index],
                        "first_name": case.contact.first_name,
                        "last_name": case.contact.last_name,
                        "email": case.contact.email,
                        "phone": case.contact.phone,
                        "device_id": case.contact.device_id,
                    }
                )

        if self.bulk:
            self._preload_open_orders(session, {c.service_code for _, c, _, _ in pending if not c.is_closed}, ref)
        order_ids = iter(_allocate_ids(session, WorkOrder, len(pending)))
        merged_orders: dict[int, _OpenOrder] = {}
        for index, case, district_id, token in pending:
            stype = ref.service_types[case.service_code]
            keyword = ref.matcher(case.service_code).find(f"{case.service_name} {case.description}")
            target = None if case.is_closed else self._find_duplicate(session, case, stype, ref)
            if target is not None:
                target.case_count += 1
                target.version += 1
                target.last_reported_at = max(target.last_reported_at, case.requested_at)
                target.first_reported_at = min(target.first_reported_at, case.requested_at)
                case_rows[index]["work_order_id"] = target.id
                events.append(
                    _event(target.id, target.version, "merged", channel, actor, actor_user_id, now,
                           case.requested_at, data={"case_id": case_ids[index]})
                )
                if keyword and not target.emergency:
                    target.emergency = True
                    target.version += 1
                    events.append(
                        _event(target.id, target.version, "alert", channel, actor, actor_user_id, now,
                               case.requested_at, data={"reason": "emergency keyword", "keyword": keyword})
                    )
                merged_orders[target.id] = target
                result.outcomes.append(CaseOutcome("merged", case_ids[index], target.id, token, bool(keyword)))
                result.counts["merged"] += 1
                continue

            order_id = next(order_ids)
            order, order_events = _new_order(
                order_id, case, stype, district_id, keyword, ref.crew_for(district_id, case.service_code),
                channel, actor, actor_user_id, now, case_ids[index],
            )
            new_orders.append(order)
            events.extend(order_events)
            case_rows[index]["work_order_id"] = order_id
            if order["is_open"]:
                self._remember(case, order, ref)
            result.outcomes.append(CaseOutcome("created", case_ids[index], order_id, token, bool(keyword)))
            result.counts["created"] += 1

        memo: dict[datetime, str] = {}  # the same instants recur in cases, orders and events
        if new_orders:
            _bulk_insert(session, WorkOrder, new_orders, memo)
        if case_rows:
            _bulk_insert(session, Case, case_rows, memo)
        if contact_rows:
            _bulk_insert(session, CaseContact, contact_rows, memo)
        if merged_orders:
            _write_merges(session, list(merged_orders.values()), now)
        if events:
            _bulk_insert(session, WorkOrderEvent, events, memo)
        # Crews' devices and dispatchers' consoles hear of open work through the change feed.
        publish_orders(
            session,
            [(o["id"], o["crew_id"], o["version"]) for o in new_orders if o["is_open"]]
            + [(o.id, o.crew_id, o.version) for o in merged_orders.values()],
        )
        return result

    def _split_present(
        self, session: Session, cases: list[IncomingCase]
    ) -> tuple[list[IncomingCase], list[tuple[IncomingCase, int]]]:
        by_source: dict[str, set[str]] = {}
        for case in cases:
            by_source.setdefault(case.source, set()).add(case.external_id)
        known: dict[tuple[str, str], int] = {}
        for source, ids in by_source.items():
            rows = session.exec(
                select(Case.external_id, Case.id).where(
                    Case.source == source, Case.external_id.in_(list(ids))
                )
            ).all()
            known.update({(source, ext): cid for ext, cid in rows})
        fresh: list[IncomingCase] = []
        present: list[tuple[IncomingCase, int]] = []
        seen: dict[tuple[str, str], int] = {}
        for case in cases:
            key = (case.source, case.external_id)
            if key in known:
                present.append((case, known[key]))
            elif key in seen:
                # The same id twice in one batch (Chicago lists an SR once per crew outcome).
                present.append((case, -1))
            else:
                seen[key] = len(fresh)
                fresh.append(case)
        return fresh, present

    def _locate(self, cases: list[IncomingCase], ref: ReferenceData) -> list[tuple[int | None, str | None]]:
        """(district id, problem) per case; a problem sends the case to the unlocated queue."""
        located: list[tuple[int | None, str | None]] = [
            (None, valid_wgs84(c.lat, c.lon)) for c in cases
        ]
        usable = [i for i, (_, problem) in enumerate(located) if problem is None]
        if not usable:
            return located
        if not len(ref.districts):
            return [(None, p) for _, p in located]
        ids = ref.districts.assign([cases[i].lon for i in usable], [cases[i].lat for i in usable])
        for i, district_id in zip(usable, ids, strict=True):
            if district_id < 0:
                located[i] = (None, "outside the service areas")
            else:
                located[i] = (int(district_id), None)
        return located

    # -- merging -------------------------------------------------------------------------

    def _grid(self, code: str, radius: float) -> PointGrid:
        if code not in self._grids:
            self._grids[code] = PointGrid(radius)
        return self._grids[code]

    def _find_duplicate(
        self, session: Session, case: IncomingCase, stype: dict[str, Any], ref: ReferenceData
    ) -> _OpenOrder | None:
        radius = float(stype["duplicate_radius_m"])
        if radius <= 0:
            return None
        window = timedelta(hours=float(stype["duplicate_window_hours"]))
        grid = self._grid(case.service_code, radius)
        self._load_open_orders(session, case, radius, window, grid, ref)
        x, y = ref.districts.projection.point_xy(case.lon, case.lat)  # type: ignore[arg-type]
        for _, order in grid.near(x, y, radius):
            if (order.first_reported_at - window) <= case.requested_at <= (order.last_reported_at + window):
                return order
        return None

    def _load_open_orders(
        self,
        session: Session,
        case: IncomingCase,
        radius: float,
        window: timedelta,
        grid: PointGrid,
        ref: ReferenceData,
    ) -> None:
        code = case.service_code
        if self.bulk:
            if code in self._loaded_types:
                return
            self._loaded_types.add(code)
            where = [WorkOrder.service_code == code, WorkOrder.is_open]
        else:
            dlat, dlon = ref.districts.projection.degrees_for(radius)
            where = [
                WorkOrder.service_code == code,
                WorkOrder.is_open,
                WorkOrder.lat.between(case.lat - dlat, case.lat + dlat),  # type: ignore[operator]
                WorkOrder.lon.between(case.lon - dlon, case.lon + dlon),  # type: ignore[operator]
                WorkOrder.last_reported_at >= case.requested_at - window,
                WorkOrder.first_reported_at <= case.requested_at + window,
            ]
            grid.cells.clear()
        rows = session.exec(
            select(
                WorkOrder.id, WorkOrder.lon, WorkOrder.lat, WorkOrder.first_reported_at,
                WorkOrder.last_reported_at, WorkOrder.case_count, WorkOrder.version, WorkOrder.emergency,
                WorkOrder.priority, WorkOrder.crew_id,
            ).where(*where)
        ).all()
        for wid, lon, lat, first, last, count, version, emergency, priority, crew_id in rows:
            x, y = ref.districts.projection.point_xy(lon, lat)
            grid.add(x, y, _OpenOrder(wid, x, y, first, last, count, version, emergency, priority, crew_id))

    def _preload_open_orders(self, session: Session, codes: set[str], ref: ReferenceData) -> None:
        """Bulk mode: the open orders of every type first seen in this batch, in one query."""
        missing = sorted(codes - self._loaded_types)
        if not missing:
            return
        self._loaded_types.update(missing)
        for code in missing:
            self._grid(code, float(ref.service_types[code]["duplicate_radius_m"]))
        rows = session.exec(
            select(
                WorkOrder.id, WorkOrder.service_code, WorkOrder.lon, WorkOrder.lat, WorkOrder.first_reported_at,
                WorkOrder.last_reported_at, WorkOrder.case_count, WorkOrder.version, WorkOrder.emergency,
                WorkOrder.priority, WorkOrder.crew_id,
            ).where(WorkOrder.service_code.in_(missing), WorkOrder.is_open)  # type: ignore[attr-defined]
        ).all()
        for wid, code, lon, lat, first, last, count, version, emergency, priority, crew_id in rows:
            x, y = ref.districts.projection.point_xy(lon, lat)
            self._grids[code].add(x, y, _OpenOrder(wid, x, y, first, last, count, version, emergency, priority, crew_id))

    def _remember(self, case: IncomingCase, order: dict[str, Any], ref: ReferenceData) -> None:
        stype = ref.service_types[case.service_code]
        grid = self._grid(case.service_code, float(stype["duplicate_radius_m"]))
        x, y = ref.districts.projection.point_xy(case.lon, case.lat)  # type: ignore[arg-type]
        grid.add(
            x, y,
            _OpenOrder(order["id"], x, y, order["first_reported_at"], order["last_reported_at"], 1,
                       order["version"], order["emergency"], order["priority"], order["crew_id"]),
        )


# -- row builders ------------------------------------------------------------------------


def _shifted(case: IncomingCase, shift: timedelta, now: datetime) -> IncomingCase:
    closed = min(case.closed_at + shift, now) if case.closed_at else None
    return replace(case, requested_at=min(case.requested_at + shift, now), closed_at=closed)


def _case_row(
    case: IncomingCase,
    case_id: int,
    token: str,
    now: datetime,
    import_run_id: int | None,
    time_shift: timedelta | None,
) -> dict[str, Any]:
    return {
        "id": case_id,
        "source": case.source,
        "external_id": case.external_id,
        "service_code": case.service_code,
        "service_name": case.service_name,
        "description": case.description or "",
        "address": case.address,
        "lat": case.lat,
        "lon": case.lon,
        "location_state": "located",
        "location_problem": None,
        "emergency": False,
        "district_id": None,
        "reported_district": case.reported_district,
        "requested_at": case.requested_at,
        "original_requested_at": case.requested_at - time_shift if time_shift else None,
        "closed_at": case.closed_at,
        "status_received": case.status_received,
        "resolution": case.resolution,
        "agency": case.agency,
        "media_url": case.media_url,
        "attributes": case.attributes or None,
        "work_order_id": None,
        "tracking_token": token,
        "import_run_id": import_run_id,
        "received_at": now,
        "updated_at": now,
    }


def _tracking_tokens(count: int) -> list[str]:
    """Unguessable tokens (128 random bits each), drawn from the OS in one call per batch."""
    pool = secrets.token_bytes(16 * count)
    return [base64.urlsafe_b64encode(pool[i : i + 16]).rstrip(b"=").decode() for i in range(0, 16 * count, 16)]


_UID_PREFIX = uuid.uuid4().hex[:20]
_UID_COUNTER = itertools.count(1)  # next() on a count is atomic under the GIL


def _new_uid() -> str:
    """Unique event ids without a uuid4 per row: a random per-process prefix and a counter."""
    return f"{_UID_PREFIX}{next(_UID_COUNTER):012x}"


def _event(
    work_order_id: int,
    version: int,
    kind: str,
    channel: str,
    actor: str,
    actor_user_id: int | None,
    now: datetime,
    occurred_at: datetime,
    *,
    from_status: str | None = None,
    to_status: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "uid": _new_uid(),
        "work_order_id": work_order_id,
        "version": version,
        "kind": kind,
        "from_status": from_status,
        "to_status": to_status,
        "data": data,
        "channel": channel,
        "actor_user_id": actor_user_id,
        "actor": actor,
        "occurred_at": occurred_at,
        "recorded_at": now,
    }


def _new_order(
    order_id: int,
    case: IncomingCase,
    stype: dict[str, Any],
    district_id: int | None,
    keyword: str | None,
    crew_id: int | None,
    channel: str,
    actor: str,
    actor_user_id: int | None,
    now: datetime,
    case_id: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sla_hours = float(stype["sla_hours"])
    priority = int(stype["default_priority"])
    if keyword:
        priority, sla_hours = 1, min(sla_hours, 4.0)
    if case.is_closed:
        status = Status.COMPLETED
    elif crew_id is not None:
        status = Status.ASSIGNED
    else:
        status = Status.NEW
    order = {
        "id": order_id,
        "number": format_number(order_id),
        "service_code": case.service_code,
        "lat": case.lat,
        "lon": case.lon,
        "address": case.address,
        "description": case.description or "",
        "district_id": district_id,
        "priority": priority,
        "emergency": bool(keyword),
        "sla_due_at": case.requested_at + timedelta(hours=sla_hours),
        "crew_id": crew_id,
        "status": status.value,
        "is_open": not case.is_closed,
        "resolution": case.resolution if case.is_closed else None,
        "notes": "",
        "notes_version": 0,
        "deleted_at": None,
        "first_reported_at": case.requested_at,
        "last_reported_at": case.requested_at,
        "closed_at": case.closed_at,
        "case_count": 1,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    created_data: dict[str, Any] = {"case_id": case_id, "priority": priority}
    if crew_id is not None:
        created_data["crew_id"] = crew_id
        created_data["routed_by"] = "routing rule"
    events = [
        _event(order_id, 1, "created", channel, actor, actor_user_id, now, case.requested_at,
               to_status=Status.ASSIGNED.value if crew_id is not None and not case.is_closed else Status.NEW.value,
               data=created_data)
    ]
    if keyword:
        order["version"] += 1
        events.append(
            _event(order_id, order["version"], "alert", channel, actor, actor_user_id, now, case.requested_at,
                   data={"reason": "emergency keyword", "keyword": keyword})
        )
    if case.is_closed:
        order["version"] += 1
        events.append(
            _event(order_id, order["version"], "status", channel, actor, actor_user_id, now,
                   case.closed_at or case.requested_at, from_status=Status.NEW.value,
                   to_status=Status.COMPLETED.value, data={"resolution": case.resolution})
        )
    return order, events


def _write_merges(session: Session, orders: list[_OpenOrder], now: datetime) -> None:
    table = WorkOrder.__table__  # type: ignore[attr-defined]
    statement = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            case_count=bindparam("b_case_count"),
            version=bindparam("b_version"),
            first_reported_at=bindparam("b_first", type_=table.c.first_reported_at.type),
            last_reported_at=bindparam("b_last", type_=table.c.last_reported_at.type),
            emergency=bindparam("b_emergency"),
            priority=bindparam("b_priority"),
            updated_at=bindparam("b_now", type_=table.c.updated_at.type),
        )
    )
    session.connection().execute(
        statement,
        [
            {
                "b_id": o.id,
                "b_case_count": o.case_count,
                "b_version": o.version,
                "b_first": o.first_reported_at,
                "b_last": o.last_reported_at,
                "b_emergency": o.emergency,
                "b_priority": 1 if o.emergency else o.priority,
                "b_now": now,
            }
            for o in orders
        ],
    )


def _service_types(session: Session, codes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Service types as plain dicts (a Core read: ORM objects cost more than the rows)."""
    table = ServiceType.__table__  # type: ignore[attr-defined]
    query = table.select() if codes is None else table.select().where(table.c.code.in_(codes))
    return {row["code"]: dict(row) for row in session.connection().execute(query).mappings()}


def _bulk_insert(
    session: Session, model: type, rows: list[dict[str, Any]], memo: dict[datetime, str] | None = None
) -> None:
    """One driver-level executemany: several times faster than ORM objects for an export."""
    bulk_insert(session.connection(), model.__table__, rows, memo=memo)  # type: ignore[attr-defined]


def _allocate_ids(session: Session, model: type, count: int) -> list[int]:
    """Reserve `count` primary keys up front so related rows can be written in bulk.

    SQLite: the caller holds the writer lock (BEGIN IMMEDIATE), so max(id) is stable.
    PostgreSQL: draw from the table's own sequence.
    """
    if count == 0:
        return []
    table = model.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        rows = session.connection().execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
            {"table": table.name, "n": count},
        ).scalars()
        return list(rows)
    start = session.exec(select(func.coalesce(func.max(table.c.id), 0))).one()
    return list(range(start + 1, start + 1 + count))

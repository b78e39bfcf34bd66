"""The console's queues and the detail panel: a work order with everything a dispatcher
needs in one answer, the conflicts queue in people's words (crew, user, job number), the
unlocated queue with suggested positions, and emergency alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from server.auth.tokens import AuthUser
from server.errors import NotFound
from server.intake.geocode import suggest_position
from server.models import Case, CaseContact, Crew, District, User, WorkOrder, WorkOrderEvent
from server.workorders.changes import FACT_KINDS
from server.workorders.service import decode_cursor, encode_cursor, get_work_order
from sync.models import SyncConflict, SyncRejection

__all__ = ["alerts", "conflict_queue", "detail", "rejection_queue", "unlocated_queue"]


# -- detail -------------------------------------------------------------------------------


def detail(session: Session, *, viewer: AuthUser, work_order_id: int) -> dict[str, Any]:
    """The work order, its cases with reporters' contact details (dispatchers only: the
    route's guard), its timeline, the crews' facts by kind, and its open conflicts."""
    base = get_work_order(session, viewer=viewer, work_order_id=work_order_id)
    out = base.model_dump(mode="json")
    contacts = {
        c.case_id: {"first_name": c.first_name, "last_name": c.last_name, "email": c.email, "phone": c.phone}
        for c in session.exec(
            select(CaseContact).join(Case, col(Case.id) == col(CaseContact.case_id))
            .where(col(Case.work_order_id) == work_order_id)
        )
    }
    for case in out["cases"]:
        case["contact"] = contacts.get(case["id"])
    facts: dict[str, list[dict[str, Any]]] = {kind: [] for kind in sorted(FACT_KINDS)}
    for event in out["events"]:
        if event["kind"] in facts:
            facts[event["kind"]].append(event)
    out["facts"] = facts
    order = session.get(WorkOrder, work_order_id)
    out["route_position"] = order.route_position if order else None
    out["conflicts"] = [
        _conflict(row, names) for row, names in _with_names(session, session.exec(
            select(SyncConflict).where(col(SyncConflict.entity) == "work_order",
                                       col(SyncConflict.entity_id) == str(work_order_id))
            .order_by(col(SyncConflict.id))
        ).all())
    ]
    return out


# -- conflicts ----------------------------------------------------------------------------


class ConflictItem(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    status: str
    field: str
    mutation: str
    work_order_id: int | None
    work_order_number: str | None
    crew_name: str | None
    user_name: str | None
    server_value: Any
    client_value: Any
    base_version: int | None
    resolution: str | None
    resolved_by: str | None
    created_at: datetime


def _with_names(session: Session, rows: Any) -> list[tuple[SyncConflict, tuple[str | None, str | None, str | None]]]:
    rows = list(rows)
    user_ids = {int(r.user_key) for r in rows if r.user_key.isdigit()}
    order_ids = {int(r.entity_id) for r in rows if r.entity == "work_order" and r.entity_id.isdigit()}
    users = {
        u.id or 0: (u.display_name or u.username, u.username, u.crew_id)
        for u in session.exec(select(User).where(col(User.id).in_(list(user_ids))))
    } if user_ids else {}
    crews = {c.id: c.name for c in session.exec(select(Crew))}
    numbers: dict[int, str] = {
        (row[0] or 0): str(row[1]) for row in session.connection().execute(
            sa_select(col(WorkOrder.id), col(WorkOrder.number)).where(col(WorkOrder.id).in_(list(order_ids)))
        ).all()
    } if order_ids else {}
    out = []
    for row in rows:
        user = users.get(int(row.user_key)) if row.user_key.isdigit() else None
        number = numbers.get(int(row.entity_id)) if row.entity_id.isdigit() else None
        crew = crews.get(user[2]) if user and user[2] is not None else None
        out.append((row, (number, crew, f"{user[0]} ({user[1]})" if user else None)))
    return out


def _conflict(row: SyncConflict, names: tuple[str | None, str | None, str | None]) -> dict[str, Any]:
    number, crew, user = names
    return msgspec.to_builtins(ConflictItem(
        id=row.id, kind=row.kind, status=row.status, field=row.field, mutation=row.name,  # type: ignore[arg-type]
        work_order_id=int(row.entity_id) if row.entity == "work_order" and row.entity_id.isdigit() else None,
        work_order_number=number, crew_name=crew, user_name=user, server_value=row.server_value,
        client_value=row.client_value, base_version=row.base_version, resolution=row.resolution,
        resolved_by=row.resolved_by, created_at=row.created_at,
    ))


def conflict_queue(session: Session, *, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
    query = select(SyncConflict).order_by(col(SyncConflict.id).desc()).limit(limit)
    if status:
        query = query.where(col(SyncConflict.status) == status)
    return [_conflict(row, names) for row, names in _with_names(session, session.exec(query).all())]


class RejectionItem(msgspec.Struct, kw_only=True):
    id: int
    mutation: str
    work_order_id: int | None
    work_order_number: str | None
    crew_name: str | None
    user_name: str | None
    args: Any
    reason: str
    device_ts: datetime | None
    created_at: datetime


def rejection_queue(session: Session, *, limit: int = 100) -> list[RejectionItem]:
    """Crews' edits that could not apply (open ones), naming the crew, the user and the job."""
    rows = list(session.exec(
        select(SyncRejection).where(col(SyncRejection.status) == "open").order_by(col(SyncRejection.id).desc()).limit(limit)
    ))
    user_ids = {int(r.user_key) for r in rows if r.user_key.isdigit()}
    users = {
        u.id or 0: (u.display_name or u.username, u.username, u.crew_id)
        for u in session.exec(select(User).where(col(User.id).in_(list(user_ids))))
    } if user_ids else {}
    crews = {c.id: c.name for c in session.exec(select(Crew))}
    order_ids = {
        int(r.args["work_order_id"]) for r in rows
        if isinstance(r.args, dict) and isinstance(r.args.get("work_order_id"), int)
    }
    numbers: dict[int, str] = {
        (row[0] or 0): str(row[1]) for row in session.connection().execute(
            sa_select(col(WorkOrder.id), col(WorkOrder.number)).where(col(WorkOrder.id).in_(list(order_ids)))
        ).all()
    } if order_ids else {}
    out = []
    for row in rows:
        user = users.get(int(row.user_key)) if row.user_key.isdigit() else None
        wid = row.args.get("work_order_id") if isinstance(row.args, dict) else None
        wid = wid if isinstance(wid, int) else None
        out.append(RejectionItem(
            id=row.id or 0, mutation=row.name, work_order_id=wid, work_order_number=numbers.get(wid) if wid else None,
            crew_name=crews.get(user[2]) if user and user[2] is not None else None,
            user_name=f"{user[0]} ({user[1]})" if user else None, args=row.args, reason=row.reason,
            device_ts=row.device_ts, created_at=row.created_at,
        ))
    return out


# -- unlocated ----------------------------------------------------------------------------


class UnlocatedItem(msgspec.Struct, kw_only=True):
    id: int
    external_id: str
    service_code: str
    service_name: str
    description: str
    address: str | None
    location_problem: str | None
    reported_district: str | None
    emergency: bool
    requested_at: datetime
    suggested_lat: float | None
    suggested_lon: float | None
    suggested_from: str | None  # "the same address" | "its reported district"


class UnlocatedQueue(msgspec.Struct, kw_only=True):
    items: list[UnlocatedItem]
    next_cursor: str | None
    total: int


def _district_centres(session: Session) -> dict[str, tuple[float, float]]:
    from shapely.geometry import shape

    centres = {}
    for district in session.exec(select(District).where(col(District.primary))):
        if district.geometry:
            point = shape(district.geometry).representative_point()
            centres[district.code.lower()] = centres[district.name.lower()] = (point.y, point.x)
    return centres


def unlocated_queue(session: Session, *, limit: int = 50, cursor: str | None = None) -> UnlocatedQueue:
    """Open cases with no usable point, newest first, each with a position to start from:
    the city's own history of the address (server.intake.geocode: the same address, else
    between neighbouring house numbers), else a point inside its reported district."""
    after = decode_cursor(cursor)
    where = [col(Case.location_state) == "unlocated", col(Case.closed_at).is_(None)]
    total = session.exec(select(func.count()).select_from(Case).where(*where)).one()
    query = select(Case).where(*where)
    if after is not None:
        query = query.where(col(Case.id) < after)
    rows = list(session.exec(query.order_by(col(Case.id).desc()).limit(limit + 1)))
    centres: dict[str, tuple[float, float]] | None = None
    items = []
    for case in rows[:limit]:
        lat = lon = None
        source = None
        suggestion = suggest_position(session, case.address) if case.address else None
        if suggestion is not None:
            lat, lon = suggestion.lat, suggestion.lon
            source = ("the same address" if suggestion.method == "exact"
                      else f"between neighbouring numbers on the street ({suggestion.confidence:.0%} sure)")
        if lat is None and case.reported_district:
            centres = centres if centres is not None else _district_centres(session)
            centre = centres.get(case.reported_district.lower())
            if centre is not None:
                lat, lon, source = centre[0], centre[1], "its reported district"
        items.append(UnlocatedItem(
            id=case.id, external_id=case.external_id, service_code=case.service_code,  # type: ignore[arg-type]
            service_name=case.service_name, description=case.description, address=case.address,
            location_problem=case.location_problem, reported_district=case.reported_district,
            emergency=case.emergency, requested_at=case.requested_at, suggested_lat=lat, suggested_lon=lon,
            suggested_from=source,
        ))
    return UnlocatedQueue(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None,
                          total=int(total))


# -- emergency alerts ---------------------------------------------------------------------


class Alert(msgspec.Struct, kw_only=True):
    event_id: int
    work_order_id: int
    number: str
    address: str | None
    service_code: str
    words: str | None  # what raised it: the keyword found in the report
    reason: str | None
    recorded_at: datetime


def alerts(session: Session, *, after_id: int | None = None, limit: int = 50) -> list[Alert]:
    """Emergency alerts raised on open work orders, newest first (after_id: only newer)."""
    query = (
        sa_select(col(WorkOrderEvent.id), col(WorkOrderEvent.work_order_id), col(WorkOrderEvent.data),
                  col(WorkOrderEvent.recorded_at), col(WorkOrder.number), col(WorkOrder.address),
                  col(WorkOrder.service_code))
        .join(WorkOrder, col(WorkOrder.id) == col(WorkOrderEvent.work_order_id))
        .where(col(WorkOrderEvent.kind) == "alert", col(WorkOrder.is_open), col(WorkOrder.deleted_at).is_(None))
    )
    if after_id:
        query = query.where(col(WorkOrderEvent.id) > after_id)
    rows = session.connection().execute(query.order_by(col(WorkOrderEvent.id).desc()).limit(limit)).all()
    return [
        Alert(event_id=r[0], work_order_id=r[1], words=(r[2] or {}).get("keyword"), reason=(r[2] or {}).get("reason"),
              recorded_at=r[3], number=r[4], address=r[5], service_code=r[6])
        for r in rows
    ]


def latest_alert_id(session: Session) -> int:
    return int(session.connection().execute(
        sa_select(func.coalesce(func.max(col(WorkOrderEvent.id)), 0)).where(col(WorkOrderEvent.kind) == "alert")
    ).scalar_one() or 0)


def known_order(session: Session, work_order_id: int) -> WorkOrder:
    order = session.get(WorkOrder, work_order_id)
    if order is None or order.deleted_at is not None:
        raise NotFound(f"work order {work_order_id} does not exist", field="work_order_id")
    return order

"""Reading work orders, cases and reference data, with the viewer's role applied.

A crew viewer only ever sees its own crew's work orders: the restriction is added to every
query here, after the caller's filters, so no filter can widen it. A work order of another
crew answers Forbidden; an id that does not exist answers NotFound.

Lists are keyset-paginated on the id (newest first). The cursor is opaque to clients
(base64 of the last id seen) and stable: rows that change while a client pages through
neither repeat nor go missing.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from server.auth.tokens import AuthUser
from server.errors import Forbidden, NotFound, ValidationFailed
from server.intake.geocode import read_geocoded
from server.models import Case, CaseContact, Crew, District, ServiceType, WorkOrder, WorkOrderEvent, utcnow
from server.params import DB_INT_MAX
from server.status import Status, info
from server.workorders.schemas import (
    CaseForDispatcher,
    CasePublic,
    ContactPublic,
    DistrictCollection,
    DistrictFeature,
    DistrictPublic,
    EventPublic,
    PointGeometry,
    ServiceTypePublic,
    UnlocatedCase,
    UnlocatedPage,
    WorkOrderCollection,
    WorkOrderDetail,
    WorkOrderFeature,
    WorkOrderListItem,
    WorkOrderPage,
    WorkOrderProperties,
    WorkOrderPublic,
)

__all__ = [
    "GEOJSON_MAX",
    "PAGE_MAX",
    "WorkOrderFilters",
    "decode_cursor",
    "encode_cursor",
    "get_case_contact",
    "get_work_order",
    "list_districts",
    "list_service_types",
    "list_unlocated",
    "list_work_orders",
    "districts_geojson",
    "split_list",
    "work_orders_geojson",
]

log = logging.getLogger("fieldwork.workorders")

PAGE_MAX = 500
PAGE_DEFAULT = 100
GEOJSON_MAX = 20_000
_Q_MAX = 100
_CURSOR_MAX = 200
_STATUSES = frozenset(s.value for s in Status)


# -- filters -----------------------------------------------------------------------------


def split_list(raw: str | None) -> list[str]:
    """`"a, b,,c"` → `["a", "b", "c"]`; None → []."""
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class WorkOrderFilters:
    """What a dispatcher (or crew) asked for; every field narrows, None means any."""

    status: Sequence[str] = ()
    district_id: int | None = None
    service_code: Sequence[str] = ()
    priority: int | None = None
    emergency: bool | None = None
    overdue: bool | None = None
    crew_id: int | None = None
    open_only: bool = False
    q: str | None = None
    bbox: str | None = None  # "min_lon,min_lat,max_lon,max_lat"

    def clauses(self, now: datetime) -> list[ColumnElement[bool]]:
        """SQL conditions on WorkOrder; raises ValidationFailed naming the bad field."""
        where: list[ColumnElement[bool]] = []
        if self.status:
            bad = [s for s in self.status if s not in _STATUSES]
            if bad:
                raise ValidationFailed(
                    f"unknown status {bad[0]!r}; one of {', '.join(Status)}", field="status"
                )
            where.append(WorkOrder.status.in_(list(self.status)))  # type: ignore[attr-defined]
        if self.district_id is not None:
            where.append(WorkOrder.district_id == self.district_id)  # type: ignore[arg-type]
        if self.service_code:
            where.append(WorkOrder.service_code.in_(list(self.service_code)))  # type: ignore[attr-defined]
        if self.priority is not None:
            if not 1 <= self.priority <= 4:
                raise ValidationFailed("priority is 1 (most urgent) to 4", field="priority")
            where.append(WorkOrder.priority == self.priority)  # type: ignore[arg-type]
        if self.emergency is not None:
            where.append(WorkOrder.emergency == self.emergency)  # type: ignore[arg-type]
        if self.overdue is not None:
            late = _overdue_clause(now)
            where.append(late if self.overdue else not_(late))
        if self.crew_id is not None:
            where.append(WorkOrder.crew_id == self.crew_id)  # type: ignore[arg-type]
        if self.open_only:
            where.append(WorkOrder.is_open)  # type: ignore[arg-type]
        if self.q is not None and self.q.strip():
            q = self.q.strip()
            if len(q) > _Q_MAX:
                raise ValidationFailed(f"q is at most {_Q_MAX} characters", field="q")
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                or_(
                    WorkOrder.number.ilike(pattern, escape="\\"),  # type: ignore[attr-defined]
                    WorkOrder.address.ilike(pattern, escape="\\"),  # type: ignore[union-attr]
                )
            )
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = _parse_bbox(self.bbox)
            where.append(WorkOrder.lon.between(min_lon, max_lon))  # type: ignore[attr-defined]
            where.append(WorkOrder.lat.between(min_lat, max_lat))  # type: ignore[attr-defined]
        return where


def _overdue_clause(now: datetime) -> ColumnElement[bool]:
    return and_(
        col(WorkOrder.is_open),
        col(WorkOrder.sla_due_at).is_not(None),
        col(WorkOrder.sla_due_at) < now,
    )


def _parse_bbox(raw: str) -> tuple[float, float, float, float]:
    message = "bbox is min_lon,min_lat,max_lon,max_lat in degrees"
    parts = raw.split(",")
    if len(parts) != 4:
        raise ValidationFailed(message, field="bbox")
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in parts)
    except ValueError:
        raise ValidationFailed(message, field="bbox") from None
    values = (min_lon, min_lat, max_lon, max_lat)
    if not all(math.isfinite(v) for v in values):
        raise ValidationFailed(message, field="bbox")
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ValidationFailed(message + " (min before max, within range)", field="bbox")
    return values


def _scope(viewer: AuthUser) -> list[ColumnElement[bool]]:
    """What the viewer may see at all: live work orders; a crew only its own."""
    live = WorkOrder.deleted_at.is_(None)  # type: ignore[union-attr]
    if not viewer.is_crew:
        return [live]
    if viewer.crew_id is None:
        return [false()]
    return [live, col(WorkOrder.crew_id) == viewer.crew_id]


# -- cursors -----------------------------------------------------------------------------


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"id": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The last id of the previous page; ValidationFailed(field="cursor") if malformed."""
    if cursor is None or cursor == "":
        return None
    try:
        if len(cursor) > _CURSOR_MAX:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        last_id = value["id"]
        if type(last_id) is not int or not 0 <= last_id <= DB_INT_MAX:
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("cursor is not one this server handed out", field="cursor") from None
    return last_id


def _check_limit(limit: int, maximum: int) -> None:
    if not 1 <= limit <= maximum:
        raise ValidationFailed(f"limit is 1 to {maximum}", field="limit")


# -- work orders -------------------------------------------------------------------------


def _order_select():  # type: ignore[no-untyped-def]
    return (
        select(WorkOrder, ServiceType.name, District.name, Crew.name)
        .join(ServiceType, ServiceType.code == WorkOrder.service_code)  # type: ignore[arg-type]
        .outerjoin(District, District.id == WorkOrder.district_id)  # type: ignore[arg-type]
        .outerjoin(Crew, Crew.id == WorkOrder.crew_id)  # type: ignore[arg-type]
    )


def _is_overdue(order: WorkOrder, now: datetime) -> bool:
    return bool(order.is_open and order.sla_due_at is not None and order.sla_due_at < now)


def _public(
    order: WorkOrder, service_name: str, district_name: str | None, crew_name: str | None, now: datetime
) -> dict[str, Any]:
    status = info(order.status)
    return {
        **order.model_dump(exclude={"is_open"}),
        "service_name": service_name,
        "status_label": status.label,
        "status_kind": status.kind.value,
        "district_name": district_name,
        "crew_name": crew_name,
        "overdue": _is_overdue(order, now),
    }


def list_work_orders(
    session: Session,
    *,
    viewer: AuthUser,
    filters: WorkOrderFilters = WorkOrderFilters(),
    limit: int = PAGE_DEFAULT,
    cursor: str | None = None,
    now: datetime | None = None,
) -> WorkOrderPage:
    """One page of the work orders the viewer may see that match `filters`, newest first."""
    now = now or utcnow()
    _check_limit(limit, PAGE_MAX)
    after = decode_cursor(cursor)
    statement = _LIST_SELECT.where(*filters.clauses(now), *_scope(viewer))
    if after is not None:
        statement = statement.where(col(WorkOrder.id) < after)
    # Core rows straight from the session's connection: no ORM object or result machinery.
    rows = session.connection().execute(statement.order_by(WorkOrder.id.desc()).limit(limit + 1)).all()  # type: ignore[union-attr]
    items = [_list_item(row._mapping, now) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return WorkOrderPage(items=items, next_cursor=next_cursor)


# The list reads plain columns (no ORM objects) and builds WorkOrderListItem from them.
_LIST_COLUMNS = tuple(c for c in WorkOrder.__table__.columns if c.name in WorkOrderPublic.model_fields)  # type: ignore[attr-defined]


# Built once: building the joins costs a fifth of the list's CPU when done per request.
_LIST_SELECT = (
    sa_select(*_LIST_COLUMNS, col(WorkOrder.is_open).label("_is_open"),
              col(ServiceType.name).label("service_name"), col(District.name).label("district_name"),
              col(Crew.name).label("crew_name"))
    .join(ServiceType, col(ServiceType.code) == col(WorkOrder.service_code))
    .outerjoin(District, col(District.id) == col(WorkOrder.district_id))
    .outerjoin(Crew, col(Crew.id) == col(WorkOrder.crew_id))
)


def _list_item(row: Any, now: datetime) -> Any:
    values = dict(row)
    is_open = values.pop("_is_open")
    label, kind = _STATUS_TEXT[values["status"]]
    due = values["sla_due_at"]
    return WorkOrderListItem(
        **values, status_label=label, status_kind=kind, overdue=bool(is_open and due is not None and due < now)
    )


_STATUS_TEXT = {s.value: (info(s.value).label, info(s.value).kind.value) for s in Status}


def _visible_order(session: Session, viewer: AuthUser, work_order_id: int) -> tuple[Any, ...]:
    row = session.exec(_order_select().where(WorkOrder.id == work_order_id)).first()
    if row is None:
        raise NotFound(f"there is no work order {work_order_id}")
    order = row[0]
    if order.deleted_at is not None:
        raise NotFound(f"work order {order.number} was removed")
    if viewer.is_crew and (viewer.crew_id is None or order.crew_id != viewer.crew_id):
        raise Forbidden(f"work order {order.number} is not assigned to your crew")
    return tuple(row)


def get_work_order(
    session: Session, *, viewer: AuthUser, work_order_id: int, now: datetime | None = None
) -> WorkOrderDetail:
    """One work order with its cases and its history."""
    now = now or utcnow()
    row = _visible_order(session, viewer, work_order_id)
    order_cases = session.exec(
        select(Case, CaseContact.case_id)
        .outerjoin(CaseContact, CaseContact.case_id == Case.id)  # type: ignore[arg-type]
        .where(Case.work_order_id == work_order_id)
        .order_by(Case.requested_at, Case.id)  # type: ignore[arg-type]
    ).all()
    cases: list[CaseForDispatcher | CasePublic] = [
        _case_for(viewer, case, contact_id is not None) for case, contact_id in order_cases
    ]
    events = [
        EventPublic.model_validate(event, from_attributes=True)
        for event in session.exec(
            select(WorkOrderEvent)
            .where(WorkOrderEvent.work_order_id == work_order_id)
            .order_by(WorkOrderEvent.id)  # type: ignore[arg-type]
        ).all()
    ]
    return WorkOrderDetail.model_validate({**_public(*row, now), "cases": cases, "events": events})  # type: ignore[call-arg]


def _case_for(viewer: AuthUser, case: Case, has_contact: bool) -> CaseForDispatcher | CasePublic:
    guess = read_geocoded(case.attributes)
    fields = {**case.model_dump(), "geocoded": None if guess is None else {"method": guess[0], "confidence": guess[1]}}
    if viewer.is_crew:
        return CasePublic.model_validate(fields)
    return CaseForDispatcher.model_validate({**fields, "has_contact": has_contact})


def work_orders_geojson(
    session: Session,
    *,
    viewer: AuthUser,
    filters: WorkOrderFilters = WorkOrderFilters(),
    limit: int = GEOJSON_MAX,
    cursor: str | None = None,
    now: datetime | None = None,
) -> WorkOrderCollection:
    """The matching work orders as a GeoJSON FeatureCollection of points, newest first; when
    more match than `limit`, `next_cursor` fetches the next page (nothing is left out)."""
    now = now or utcnow()
    _check_limit(limit, GEOJSON_MAX)
    after = decode_cursor(cursor)
    statement = (
        select(  # type: ignore[call-overload]  # SQLModel's select is typed for up to four columns
            WorkOrder.id, WorkOrder.number, WorkOrder.status, WorkOrder.service_code, ServiceType.name,
            WorkOrder.priority, WorkOrder.emergency, District.name, Crew.name, WorkOrder.sla_due_at,
            WorkOrder.is_open, WorkOrder.lon, WorkOrder.lat, WorkOrder.address, WorkOrder.description,
            WorkOrder.first_reported_at, WorkOrder.closed_at,
        )
        .join(ServiceType, col(ServiceType.code) == WorkOrder.service_code)
        .outerjoin(District, col(District.id) == WorkOrder.district_id)
        .outerjoin(Crew, col(Crew.id) == WorkOrder.crew_id)
        .where(*filters.clauses(now), *_scope(viewer), *([col(WorkOrder.id) < after] if after is not None else []))
        .order_by(col(WorkOrder.id).desc())
        .limit(limit + 1)
    )
    rows = session.exec(statement).all()
    features = [
        WorkOrderFeature(
            id=wid,
            geometry=PointGeometry(coordinates=(lon, lat)),
            properties=WorkOrderProperties(
                id=wid,
                number=number,
                status=status,
                status_label=info(status).label,
                service_code=code,
                service=service,
                priority=priority,
                emergency=emergency,
                district=district,
                crew=crew,
                sla_due_at=due,
                overdue=bool(is_open and due is not None and due < now),
                address=address,
                description=description,
                requested_at=requested,
                closed_at=closed,
            ),
        )
        for (wid, number, status, code, service, priority, emergency, district, crew, due, is_open, lon, lat,
             address, description, requested, closed)
        in rows[:limit]
    ]
    more = len(rows) > limit
    return WorkOrderCollection(features=features, truncated=more,
                               next_cursor=encode_cursor(features[-1].id) if more and features else None)


# -- cases -------------------------------------------------------------------------------


def get_case_contact(session: Session, *, viewer: AuthUser, case_id: int) -> ContactPublic:
    """A reporter's contact details (dispatchers and admins; every read is logged, by id)."""
    if viewer.is_crew:  # the route's guard says so too; this is the service's own rule
        raise Forbidden("crews never see reporters' contact details")
    if session.get(Case, case_id) is None:
        raise NotFound(f"there is no case {case_id}")
    contact = session.get(CaseContact, case_id)
    if contact is None:
        raise NotFound(f"case {case_id} has no contact details")
    log.info("user %s read the contact details of case %s", viewer.id, case_id)
    return ContactPublic.model_validate(contact, from_attributes=True)


def list_unlocated(
    session: Session, *, viewer: AuthUser, limit: int = PAGE_DEFAULT, cursor: str | None = None
) -> UnlocatedPage:
    """Cases without a usable point, waiting for a dispatcher to place them; newest first."""
    if viewer.is_crew:
        raise Forbidden("the unlocated queue is for dispatchers")
    _check_limit(limit, PAGE_MAX)
    after = decode_cursor(cursor)
    has_contact = exists().where(col(CaseContact.case_id) == Case.id)
    # Closed history (a city's export of requests it already closed) is kept in the record,
    # not queued: only open cases wait for a dispatcher.
    statement = select(Case, has_contact).where(Case.location_state == "unlocated", col(Case.closed_at).is_(None))
    if after is not None:
        statement = statement.where(Case.id < after)  # type: ignore[operator]
    rows = session.exec(statement.order_by(Case.id.desc()).limit(limit + 1)).all()  # type: ignore[union-attr]
    items = [
        UnlocatedCase.model_validate({**case.model_dump(), "has_contact": bool(contact)})
        for case, contact in rows[:limit]
    ]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return UnlocatedPage(items=items, next_cursor=next_cursor)


# -- reference data ----------------------------------------------------------------------


def list_service_types(session: Session) -> list[ServiceTypePublic]:
    rows = session.exec(select(ServiceType).order_by(ServiceType.name, ServiceType.code)).all()
    return [ServiceTypePublic.model_validate(t, from_attributes=True) for t in rows]


def _districts(session: Session, layer: str | None) -> Sequence[District]:
    statement = select(District).order_by(col(District.layer), col(District.name), col(District.id))
    if layer:
        statement = statement.where(District.layer == layer)
    return session.exec(statement).all()


def list_districts(session: Session, *, layer: str | None = None) -> list[DistrictPublic]:
    return [DistrictPublic.model_validate(d, from_attributes=True) for d in _districts(session, layer)]


def districts_geojson(session: Session, *, layer: str | None = None) -> DistrictCollection:
    return DistrictCollection(
        features=[
            DistrictFeature(
                id=d.id,  # type: ignore[arg-type]
                geometry=d.geometry,
                properties={"id": d.id, "layer": d.layer, "code": d.code, "name": d.name, "primary": d.primary},
            )
            for d in _districts(session, layer)
        ]
    )

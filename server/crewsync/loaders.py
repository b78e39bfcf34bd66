"""What a crew's device receives on pull: current state, scoped to the crew, without any
reporter's contact details or tracking tokens."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlmodel import Session, select

from server.auth.tokens import AuthUser
from server.models import Case, Crew, ServiceType, WorkOrder, WorkOrderEvent
from server.status import info
from server.workorders.changes import FACT_KINDS

__all__ = ["DELTA_LOADERS", "LOADERS"]

Loaded = dict[str, tuple[int | None, dict[str, Any]] | None]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


_SENT_KINDS = [*FACT_KINDS, "status", "notes"]


def load_work_orders(session: Session, entity: str, ids: list[str], actor: AuthUser,
                     since: dict[str, int] | None = None) -> Loaded:
    """Work orders the crew holds, with their cases and the events a device shows.

    With `since` (an incremental pull), a job the device already holds comes with only the
    events from that version on (`events_from`); the device keeps the ones before. A job
    that entered the crew's scope in that range (created, or assigned to this crew) comes
    whole (`events_from` 0), as does every job of a device that primes.
    """
    numbers = [int(i) for i in ids if i.isdigit()]
    orders = session.exec(select(WorkOrder).where(WorkOrder.id.in_(numbers))).all()  # type: ignore[union-attr]
    visible: dict[int, WorkOrder] = {
        o.id: o for o in orders
        if o.id is not None and o.deleted_at is None and actor.crew_id is not None and o.crew_id == actor.crew_id
    }
    cases: dict[int, list[dict[str, Any]]] = defaultdict(list)
    facts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    start: dict[int, int] = {}  # work order id -> first event version sent (0: all)
    if visible:
        for case in session.exec(select(Case).where(Case.work_order_id.in_(list(visible)))).all():  # type: ignore[union-attr]
            cases[case.work_order_id].append(  # type: ignore[index]
                {"id": case.id, "service_name": case.service_name, "description": case.description,
                 "address": case.address, "requested_at": _iso(case.requested_at),
                 # the report's photo (a resident's upload or the Open311 client's link)
                 "media_url": case.media_url or None}
            )
        if since is not None:
            start = {wid: since.get(str(wid), 0) for wid in visible}
            partial = [wid for wid, version in start.items() if version > 0]
            if partial:
                low = min(start[wid] for wid in partial)
                for event in _events(session, partial, [*_SENT_KINDS, "created", "assigned"], low):
                    if event.version < start[event.work_order_id]:
                        continue
                    entered = event.kind == "created" or (
                        event.kind == "assigned" and (event.data or {}).get("crew_id") == actor.crew_id)
                    if entered:
                        start[event.work_order_id] = 0
                    elif event.kind in _SENT_KINDS:
                        facts[event.work_order_id].append(_event(event))
        whole = [wid for wid in visible if start.get(wid, 0) == 0]
        for wid in whole:
            facts.pop(wid, None)
        if whole:
            for event in _events(session, whole, _SENT_KINDS, 0):
                facts[event.work_order_id].append(_event(event))
    result: Loaded = {}
    for key in ids:
        order = visible.get(int(key)) if key.isdigit() else None
        if order is None:
            result[key] = None
            continue
        status = info(order.status)
        result[key] = (order.version, {
            "id": order.id, "number": order.number, "service_code": order.service_code,
            "status": order.status, "status_label": status.label, "status_kind": status.kind.value,
            "lat": order.lat, "lon": order.lon, "address": order.address, "description": order.description,
            "priority": order.priority, "emergency": order.emergency, "sla_due_at": _iso(order.sla_due_at),
            "crew_id": order.crew_id, "notes": order.notes, "notes_version": order.notes_version,
            "case_count": order.case_count, "version": order.version, "updated_at": _iso(order.updated_at),
            "route_position": order.route_position,  # the dispatcher's order of the crew's day (None: unplanned)
            "cases": cases.get(order.id, []),  # type: ignore[arg-type]
            "events": facts.get(order.id, []),  # type: ignore[arg-type]
            "events_from": start.get(order.id, 0),  # type: ignore[arg-type]
        })
    return result


def _events(session: Session, work_order_ids: list[int], kinds: list[str], low: int) -> list[WorkOrderEvent]:
    query = select(WorkOrderEvent).where(
        WorkOrderEvent.work_order_id.in_(work_order_ids), WorkOrderEvent.kind.in_(kinds))  # type: ignore[attr-defined]
    if low > 0:
        query = query.where(WorkOrderEvent.version >= low)
    return list(session.exec(query.order_by(WorkOrderEvent.id)).all())  # type: ignore[arg-type]


def _event(event: WorkOrderEvent) -> dict[str, Any]:
    return {"uid": event.uid, "kind": event.kind, "version": event.version, "to_status": event.to_status,
            "data": event.data, "actor": event.actor, "occurred_at": _iso(event.occurred_at)}


def load_service_types(session: Session, entity: str, ids: list[str], actor: AuthUser) -> Loaded:
    rows = {t.code: t for t in session.exec(select(ServiceType).where(ServiceType.code.in_(ids))).all()}  # type: ignore[attr-defined]
    return {
        key: (None, {"code": t.code, "name": t.name, "group": t.group, "priority": t.default_priority})
        if (t := rows.get(key)) is not None else None
        for key in ids
    }


def load_crews(session: Session, entity: str, ids: list[str], actor: AuthUser) -> Loaded:
    numbers = [int(i) for i in ids if i.isdigit()]
    rows = {str(c.id): c for c in session.exec(select(Crew).where(Crew.id.in_(numbers))).all()}  # type: ignore[union-attr]
    return {key: (None, {"id": c.id, "name": c.name}) if (c := rows.get(key)) else None for key in ids}


LOADERS = {"work_order": load_work_orders, "service_type": load_service_types, "crew": load_crews}
DELTA_LOADERS = {"work_order": load_work_orders}

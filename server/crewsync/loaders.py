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

__all__ = ["LOADERS"]

Loaded = dict[str, tuple[int | None, dict[str, Any]] | None]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def load_work_orders(session: Session, entity: str, ids: list[str], actor: AuthUser) -> Loaded:
    numbers = [int(i) for i in ids if i.isdigit()]
    orders = session.exec(select(WorkOrder).where(WorkOrder.id.in_(numbers))).all()  # type: ignore[union-attr]
    visible = {
        o.id: o for o in orders
        if o.deleted_at is None and actor.crew_id is not None and o.crew_id == actor.crew_id
    }
    cases: dict[int, list[dict[str, Any]]] = defaultdict(list)
    facts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if visible:
        for case in session.exec(select(Case).where(Case.work_order_id.in_(list(visible)))).all():  # type: ignore[union-attr]
            cases[case.work_order_id].append(  # type: ignore[index]
                {"id": case.id, "service_name": case.service_name, "description": case.description,
                 "address": case.address, "requested_at": _iso(case.requested_at)}
            )
        kinds = [*FACT_KINDS, "status", "notes"]
        for event in session.exec(
            select(WorkOrderEvent)
            .where(WorkOrderEvent.work_order_id.in_(list(visible)), WorkOrderEvent.kind.in_(kinds))  # type: ignore[attr-defined]
            .order_by(WorkOrderEvent.id)  # type: ignore[arg-type]
        ).all():
            facts[event.work_order_id].append(
                {"uid": event.uid, "kind": event.kind, "to_status": event.to_status, "data": event.data,
                 "actor": event.actor, "occurred_at": _iso(event.occurred_at)}
            )
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
            "cases": cases.get(order.id, []),  # type: ignore[arg-type]
            "events": facts.get(order.id, []),  # type: ignore[arg-type]
        })
    return result


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

"""Dispatchers' changes to work orders and their review of sync conflicts and rejections.

Every change goes through `server.workorders.changes`, so it is versioned, kept as an event
and published to the crews' change feed in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from server.auth.tokens import AuthUser
from server.dispatch.crews import load_after
from server.errors import Conflict, NotFound, ValidationFailed
from server.models import Case, Crew, WorkOrder
from server.status import Status
from server.workorders.changes import (
    Actor,
    assign,
    change_status,
    delete_work_order,
    load_for_update,
    merge_orders,
    set_due,
    set_notes,
    set_priority,
    set_route,
    split_case,
)
from sync import review
from sync.models import SyncConflict, SyncRejection

__all__ = [
    "Overload",
    "StaleVersion",
    "WorkOrderChange",
    "check_version",
    "lock_in_order",
    "merge",
    "reorder_route",
    "split",
    "assign_many",
    "dispatcher_actor",
    "remove_work_order",
    "resolve_conflict",
    "resolve_rejection",
    "update_work_order",
]

WorkOrderChange = dict[str, Any]
_FIELDS = {"crew_id", "status", "priority", "notes", "notes_base_version", "reason", "version", "sla_due_at"}


class StaleVersion(Conflict):
    """The work order changed since the dispatcher read it: 409 with its current version."""

    def __init__(self, order: WorkOrder, seen: int) -> None:
        super().__init__(f"work order {order.number} changed since you read it (version {seen}, now "
                         f"{order.version}); look again before changing it", field="version")
        self.extra = {"work_order_id": order.id, "current_version": order.version}


class Overload(Conflict):
    """A bulk assign would put more work on a crew than it has hours: 409 with the warning,
    unless the dispatcher confirms (force)."""

    def __init__(self, warning: str, check: Any) -> None:
        super().__init__(warning, field="force")
        self.extra = {"warning": warning, "hours_after": check.hours_after, "capacity_hours": check.capacity_hours}


def check_version(order: WorkOrder, seen: int | None) -> None:
    if seen is not None and seen != order.version:
        raise StaleVersion(order, seen)


def lock_in_order(session: Session, work_order_ids: Sequence[int]) -> list[WorkOrder]:
    """Lock live work orders in ascending id order (two dispatchers' bulk changes that share
    jobs then queue behind each other instead of deadlocking); returned in that order."""
    return [load_for_update(session, wid) for wid in sorted(set(work_order_ids))]


def dispatcher_actor(user: AuthUser) -> Actor:
    return Actor(user_id=user.id, label=f"{user.role}:{user.username}", channel="api")


def update_work_order(session: Session, *, user: AuthUser, work_order_id: int, change: WorkOrderChange) -> WorkOrder:
    """Apply the fields present in `change`, in a fixed order: crew, status, priority, notes."""
    unknown = set(change) - _FIELDS
    if unknown:
        raise ValidationFailed(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    order = load_for_update(session, work_order_id)
    check_version(order, change.get("version"))
    actor = dispatcher_actor(user)
    reason = change.get("reason")
    if change.get("status") == Status.CANCELLED.value and not (reason or "").strip():
        raise ValidationFailed("say why the job is cancelled", field="reason")
    if "crew_id" in change:
        assign(session, order, crew_id=change["crew_id"], actor=actor, reason=reason)
    if change.get("status") is not None:
        try:
            target = Status(change["status"])
        except ValueError:
            raise ValidationFailed(f"unknown status {change['status']!r}", field="status") from None
        if target != Status(order.status):
            try:
                change_status(session, order, to=target, actor=actor, reason=reason)
            except ValueError as exc:
                raise ValidationFailed(str(exc), field="status") from None
    if change.get("priority") is not None:
        set_priority(session, order, priority=int(change["priority"]), actor=actor)
    if change.get("sla_due_at") is not None:
        set_due(session, order, due_at=change["sla_due_at"], actor=actor)
    if "notes" in change:
        if change.get("notes_base_version") is None:
            raise ValidationFailed("send the notes_version you edited", field="notes_base_version")
        set_notes(session, order, text=str(change["notes"]), base_version=int(change["notes_base_version"]),
                  actor=actor)
    session.flush()
    return order


def assign_many(
    session: Session, *, user: AuthUser, work_order_ids: Sequence[int], crew_id: int | None,
    versions: Mapping[int, int] | None = None, force: bool = True, reason: str | None = None,
) -> list[WorkOrder]:
    """Assign (reassign, or unassign with crew None) several work orders at once: all or
    none. Rows are locked in id order; a version the dispatcher saw that is no longer
    current refuses the whole change (409); so does overloading the crew unless `force`."""
    if not work_order_ids:
        raise ValidationFailed("name at least one work order", field="work_order_ids")
    if len(work_order_ids) > 500:
        raise ValidationFailed("at most 500 work orders at once", field="work_order_ids")
    if crew_id is not None and session.get(Crew, crew_id) is None:
        raise ValidationFailed(f"no crew with id {crew_id}", field="crew_id")
    actor = dispatcher_actor(user)
    orders = lock_in_order(session, work_order_ids)
    for order in orders:
        check_version(order, (versions or {}).get(order.id))  # type: ignore[arg-type]
    if crew_id is not None and not force:
        check = load_after(session, crew_id=crew_id, work_order_ids=[o.id for o in orders])  # type: ignore[misc]
        if check.overloaded and check.warning:
            raise Overload(check.warning, check)
    for order in orders:
        if not order.is_open and crew_id is not None and order.crew_id != crew_id:
            raise ValidationFailed(f"work order {order.number} is closed; reopen it first", field="work_order_ids")
        assign(session, order, crew_id=crew_id, actor=actor, reason=reason)
    session.flush()
    return orders


def merge(session: Session, *, user: AuthUser, target_id: int, source_id: int,
          versions: Mapping[int, int] | None = None) -> WorkOrder:
    """Fold one work order into another (the source's cases move; the source is cancelled)."""
    if target_id == source_id:
        raise ValidationFailed("a work order cannot be merged into itself", field="source_id")
    orders = {o.id: o for o in lock_in_order(session, [target_id, source_id])}
    for order in orders.values():
        check_version(order, (versions or {}).get(order.id))  # type: ignore[arg-type]
    target, source = orders[target_id], orders[source_id]
    case_ids = list(session.exec(select(Case.id).where(Case.work_order_id == source_id).order_by(col(Case.id))).all())
    merge_orders(session, target, source, actor=dispatcher_actor(user), case_ids=case_ids)  # type: ignore[arg-type]
    session.exec(update(Case).where(col(Case.work_order_id) == source_id).values(work_order_id=target_id))
    session.flush()
    return target


def split(session: Session, *, user: AuthUser, work_order_id: int, case_id: int, version: int | None = None) -> WorkOrder:
    """A case merged into the wrong job becomes a work order of its own, at the case's point."""
    order = load_for_update(session, work_order_id)
    check_version(order, version)
    case = session.get(Case, case_id)
    if case is None or case.work_order_id != work_order_id:
        raise ValidationFailed(f"case {case_id} is not one of work order {order.number}'s cases", field="case_id")
    lat = case.lat if case.lat is not None else order.lat
    lon = case.lon if case.lon is not None else order.lon
    new_order = WorkOrder(
        number="", service_code=case.service_code, lat=lat, lon=lon, address=case.address,
        description=case.description, district_id=case.district_id or order.district_id, priority=order.priority,
        emergency=case.emergency, sla_due_at=order.sla_due_at, crew_id=None, status=Status.NEW.value,
        is_open=True, first_reported_at=case.requested_at, last_reported_at=case.requested_at, case_count=1,
    )
    split_case(session, order, case_id=case_id, actor=dispatcher_actor(user), new_order=new_order)
    case.work_order_id = new_order.id
    session.add(case)
    session.flush()
    return new_order


def reorder_route(session: Session, *, user: AuthUser, crew_id: int, work_order_ids: Sequence[int],
                  how: str = "manual") -> list[WorkOrder]:
    """Put the crew's open jobs in this order (1 first); jobs not named follow in their old order."""
    if session.get(Crew, crew_id) is None:
        raise NotFound(f"no crew with id {crew_id}", field="crew_id")
    if len(set(work_order_ids)) != len(work_order_ids):
        raise ValidationFailed("a job appears twice in the order", field="work_order_ids")
    held = [wid for wid in session.exec(
        select(WorkOrder.id).where(WorkOrder.crew_id == crew_id, col(WorkOrder.is_open),
                                   col(WorkOrder.deleted_at).is_(None))
    ).all() if wid is not None]
    stray = [wid for wid in work_order_ids if wid not in set(held)]
    if stray:
        raise ValidationFailed(f"work order {stray[0]} is not an open job of this crew", field="work_order_ids")
    orders = {o.id: o for o in lock_in_order(session, held)}
    rest = sorted((o for wid, o in orders.items() if wid not in set(work_order_ids)),
                  key=lambda o: (o.route_position is None, o.route_position or 0, o.id))
    ordered = [orders[wid] for wid in work_order_ids] + rest
    set_route(session, ordered, actor=dispatcher_actor(user), how=how)
    session.flush()
    return ordered


def remove_work_order(session: Session, *, user: AuthUser, work_order_id: int, reason: str | None) -> None:
    order = load_for_update(session, work_order_id)
    delete_work_order(session, order, actor=dispatcher_actor(user), reason=reason)


def resolve_conflict(
    session: Session, *, user: AuthUser, conflict_id: int, resolution: str
) -> SyncConflict:
    """Close a conflict: keep the server's value, or take the crew's (applied here)."""
    if resolution not in {"keep_server", "take_client"}:
        raise ValidationFailed("resolution is keep_server or take_client", field="resolution")
    conflict = session.get(SyncConflict, conflict_id)
    if conflict is None:
        raise NotFound(f"no conflict {conflict_id}", field="conflict_id")
    if conflict.status != "open":
        raise ValidationFailed("this conflict is already resolved", field="conflict_id")
    if resolution == "take_client" and conflict.entity == "work_order":
        _take_client_value(session, user, conflict)
    return review.resolve_conflict(session, conflict_id, resolution=resolution, resolved_by=user.username)


def _take_client_value(session: Session, user: AuthUser, conflict: SyncConflict) -> None:
    order = load_for_update(session, int(conflict.entity_id))
    actor = dispatcher_actor(user)
    value = conflict.client_value
    if conflict.field == "notes":
        set_notes(session, order, text=str(value), base_version=order.notes_version, actor=actor)
    elif conflict.field == "status":
        _override_status(session, order, Status(str(value)), actor)
    elif conflict.field == "priority":
        set_priority(session, order, priority=int(value["value"]), actor=actor)
    elif conflict.field == "crew_id":
        assign(session, order, crew_id=value["value"], actor=actor, reason=value.get("reason"))
    else:
        raise ValidationFailed(f"take the crew's {conflict.field} by editing the work order", field="resolution")


def _override_status(session: Session, order: WorkOrder, target: Status, actor: Actor) -> None:
    """A dispatcher's decision may leave the state machine's usual paths (completed after
    cancel: the work was done after all); it goes through a reopen so both steps are kept."""
    if target == Status(order.status):
        return
    try:
        change_status(session, order, to=target, actor=actor, reason="crew's report accepted")
    except ValueError:
        change_status(session, order, to=Status.ASSIGNED, actor=actor, reason="reopened to accept the crew's report")
        change_status(session, order, to=target, actor=actor, reason="crew's report accepted")


def resolve_rejection(session: Session, *, user: AuthUser, rejection_id: int, resolution: str) -> SyncRejection:
    if not resolution.strip():
        raise ValidationFailed("say how it was resolved", field="resolution")
    if session.get(SyncRejection, rejection_id) is None:
        raise NotFound(f"no rejection {rejection_id}", field="rejection_id")
    return review.resolve_rejection(session, rejection_id, resolution=resolution.strip(), resolved_by=user.username)



"""Dispatchers' changes to work orders and their review of sync conflicts and rejections.

Every change goes through `server.workorders.changes`, so it is versioned, kept as an event
and published to the crews' change feed in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from server.auth.tokens import AuthUser
from server.errors import NotFound, ValidationFailed
from server.models import WorkOrder
from server.status import Status
from server.workorders.changes import (
    Actor,
    assign,
    change_status,
    delete_work_order,
    load_for_update,
    set_notes,
    set_priority,
)
from sync import review
from sync.models import SyncConflict, SyncRejection

__all__ = [
    "WorkOrderChange",
    "assign_many",
    "dispatcher_actor",
    "remove_work_order",
    "resolve_conflict",
    "resolve_rejection",
    "update_work_order",
]

WorkOrderChange = dict[str, Any]
_FIELDS = {"crew_id", "status", "priority", "notes", "notes_base_version", "reason"}


def dispatcher_actor(user: AuthUser) -> Actor:
    return Actor(user_id=user.id, label=f"{user.role}:{user.username}", channel="api")


def update_work_order(session: Session, *, user: AuthUser, work_order_id: int, change: WorkOrderChange) -> WorkOrder:
    """Apply the fields present in `change`, in a fixed order: crew, status, priority, notes."""
    unknown = set(change) - _FIELDS
    if unknown:
        raise ValidationFailed(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    order = load_for_update(session, work_order_id)
    actor = dispatcher_actor(user)
    reason = change.get("reason")
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
    if "notes" in change:
        if change.get("notes_base_version") is None:
            raise ValidationFailed("send the notes_version you edited", field="notes_base_version")
        set_notes(session, order, text=str(change["notes"]), base_version=int(change["notes_base_version"]),
                  actor=actor)
    session.flush()
    return order


def assign_many(session: Session, *, user: AuthUser, work_order_ids: Sequence[int], crew_id: int | None) -> list[WorkOrder]:
    """Assign several work orders at once: all or none."""
    if not work_order_ids:
        raise ValidationFailed("name at least one work order", field="work_order_ids")
    if len(work_order_ids) > 500:
        raise ValidationFailed("at most 500 work orders at once", field="work_order_ids")
    actor = dispatcher_actor(user)
    orders = []
    for work_order_id in dict.fromkeys(work_order_ids):
        order = load_for_update(session, work_order_id)
        assign(session, order, crew_id=crew_id, actor=actor)
        orders.append(order)
    session.flush()
    return orders


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



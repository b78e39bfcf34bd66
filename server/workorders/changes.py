"""Changing a work order: the one place that bumps its version, keeps the event and tells
the sync change feed, all in the caller's transaction.

Dispatchers (HTTP), crews (sync mutations) and the intake pipeline all go through here, so
every change is an event with who, when (device time and server time) and which channel,
and every change reaches the crews whose view it touches: an `upsert` for the crew that
holds the job, an `evict` for the crew that lost it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, select

from server.errors import Conflict, NotFound, ValidationFailed
from server.models import Crew, WorkOrder, WorkOrderEvent, utcnow
from server.status import Status, check_transition, info
from sync import record_change, record_changes
from sync.feed import Op

__all__ = [
    "Actor",
    "DISPATCH_SCOPE",
    "REFERENCE_SCOPE",
    "publish_reference",
    "FACT_KINDS",
    "NewFact",
    "add_fact",
    "add_facts",
    "assign",
    "assignment_history",
    "change_status",
    "crew_scope",
    "delete_work_order",
    "publish_orders",
    "set_notes",
    "set_priority",
]

DISPATCH_SCOPE = "dispatch"
REFERENCE_SCOPE = "reference"  # service types and crews' names: every crew needs them
FACT_KINDS = frozenset({"note", "photo", "material", "time"})


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as events record it."""

    user_id: int | None
    label: str  # "dispatcher:ana", "crew:3:maria", "import:file.csv"
    channel: str  # api | sync | import | open311 | system


def crew_scope(crew_id: int) -> str:
    return f"crew:{crew_id}"


def _scopes(crew_id: int | None) -> list[str]:
    return [DISPATCH_SCOPE] + ([crew_scope(crew_id)] if crew_id is not None else [])


def publish_orders(session: Session, orders: Iterable[tuple[int, int | None, int]]) -> None:
    """Feed rows for new or changed orders: (id, crew id, version) each, in bulk."""
    rows = [
        ("work_order", str(order_id), "upsert", scope, version)
        for order_id, crew_id, version in orders
        for scope in _scopes(crew_id)
    ]
    record_changes(session, rows)


def publish_reference(session: Session, entity: str, ids: Iterable[str | int]) -> None:
    """Feed rows for new or changed reference data (service types, crews)."""
    record_changes(session, [(entity, str(key), "upsert", REFERENCE_SCOPE, None) for key in ids])


def _event_values(
    order: WorkOrder,
    actor: Actor,
    kind: str,
    *,
    occurred_at: datetime | None,
    now: datetime,
    uid: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    assert order.id is not None
    return {
        "uid": uid or uuid.uuid4().hex,
        "work_order_id": order.id,
        "version": order.version,
        "kind": kind,
        "from_status": from_status,
        "to_status": to_status,
        "data": data,
        "channel": actor.channel,
        "actor_user_id": actor.user_id,
        "actor": actor.label,
        "occurred_at": occurred_at or now,
        "recorded_at": now,
    }


def _event(order: WorkOrder, actor: Actor, kind: str, *, occurred_at: datetime | None, **fields: Any) -> WorkOrderEvent:
    return WorkOrderEvent(**_event_values(order, actor, kind, occurred_at=occurred_at, now=utcnow(), **fields))


def _bump(session: Session, order: WorkOrder, event_kind: str, actor: Actor, **event: Any) -> WorkOrderEvent:
    order.version += 1
    order.updated_at = utcnow()
    session.add(order)
    recorded = _event(order, actor, event_kind, **event)
    session.add(recorded)
    assert order.id is not None
    record_change(session, entity="work_order", entity_id=order.id, op="upsert",
                  scopes=_scopes(order.crew_id), version=order.version)
    return recorded


def load_for_update(session: Session, work_order_id: int) -> WorkOrder:
    """The live (not deleted) work order, locked for this transaction on PostgreSQL."""
    order = session.exec(
        select(WorkOrder).where(WorkOrder.id == work_order_id).with_for_update()
    ).first()
    if order is None or order.deleted_at is not None:
        raise NotFound(f"work order {work_order_id} does not exist", field="work_order_id")
    return order


def change_status(
    session: Session,
    order: WorkOrder,
    *,
    to: Status | str,
    actor: Actor,
    occurred_at: datetime | None = None,
    reason: str | None = None,
    uid: str | None = None,
) -> WorkOrderEvent:
    """Move along the state machine; every transition is kept as an event."""
    target = Status(to)
    current = Status(order.status)
    check_transition(current, target)
    order.status = target.value
    kind = info(target).kind
    order.is_open = kind == "open"
    if order.is_open:
        order.closed_at = None
    else:
        order.closed_at = occurred_at or utcnow()
        if reason:
            order.resolution = reason
    data = {"reason": reason} if reason else None
    return _bump(session, order, "status", actor, occurred_at=occurred_at, uid=uid,
                 from_status=current.value, to_status=target.value, data=data)


def assign(
    session: Session, order: WorkOrder, *, crew_id: int | None, actor: Actor, reason: str | None = None
) -> WorkOrderEvent | None:
    """Give the job to a crew (or take it back); the old crew's devices get an eviction."""
    if crew_id == order.crew_id:
        return None
    if crew_id is not None and session.get(Crew, crew_id) is None:
        raise ValidationFailed(f"no crew with id {crew_id}", field="crew_id")
    previous = order.crew_id
    order.crew_id = crew_id
    data: dict[str, Any] = {"crew_id": crew_id, "previous_crew_id": previous}
    if reason:
        data["reason"] = reason
    event = _bump(session, order, "assigned", actor, occurred_at=None, data=data)
    if previous is not None:
        assert order.id is not None
        record_change(session, entity="work_order", entity_id=order.id, op="evict",
                      scopes=[crew_scope(previous)], version=order.version)
    current = Status(order.status)
    if crew_id is not None and current == Status.NEW:
        change_status(session, order, to=Status.ASSIGNED, actor=actor)
    elif crew_id is None and info(current).kind == "open" and current != Status.ON_HOLD:
        if current in {Status.EN_ROUTE, Status.ON_SITE}:  # the crew stands down, then back to the queue
            change_status(session, order, to=Status.ASSIGNED, actor=actor)
        change_status(session, order, to=Status.NEW, actor=actor)
    elif crew_id is not None and current in {Status.EN_ROUTE, Status.ON_SITE}:
        # The new crew has not set out yet.
        change_status(session, order, to=Status.ASSIGNED, actor=actor)
    return event


def set_priority(session: Session, order: WorkOrder, *, priority: int, actor: Actor) -> WorkOrderEvent | None:
    if not 1 <= priority <= 4:
        raise ValidationFailed("priority must be 1 (most urgent) to 4", field="priority")
    if priority == order.priority:
        return None
    previous = order.priority
    order.priority = priority
    return _bump(session, order, "priority", actor, occurred_at=None,
                 data={"priority": priority, "previous": previous})


def set_notes(
    session: Session, order: WorkOrder, *, text: str, base_version: int, actor: Actor,
    occurred_at: datetime | None = None, uid: str | None = None,
) -> WorkOrderEvent:
    """Replace the shared notes if the editor saw the current ones; else raise Conflict."""
    if len(text) > 4000:
        raise ValidationFailed("notes are at most 4000 characters", field="notes")
    if base_version != order.notes_version:
        raise Conflict(
            f"the notes changed since you read them (version {base_version}, now {order.notes_version})",
            field="notes_base_version",
        )
    previous = order.notes
    order.notes = text
    order.notes_version += 1
    return _bump(session, order, "notes", actor, occurred_at=occurred_at, uid=uid,
                 data={"notes": text, "previous": previous, "notes_version": order.notes_version})


def add_fact(
    session: Session,
    order: WorkOrder,
    *,
    kind: str,
    uid: str,
    data: dict[str, Any],
    actor: Actor,
    occurred_at: datetime | None,
) -> tuple[WorkOrderEvent, bool]:
    """Append a crew fact (note, photo, material, time) keyed by its client id.

    Facts cannot conflict: the same uid twice is the same fact (returned, not doubled).
    """
    if kind not in FACT_KINDS:
        raise ValidationFailed(f"unknown fact kind {kind!r}", field="kind")
    existing = session.exec(select(WorkOrderEvent).where(WorkOrderEvent.uid == uid)).first()
    if existing is not None:
        if existing.work_order_id != order.id or existing.kind != kind:
            raise Conflict(f"id {uid} is already used by another entry", field="uid")
        return existing, False
    return _bump(session, order, kind, actor, occurred_at=occurred_at, uid=uid, data=data), True


@dataclass(frozen=True, slots=True)
class NewFact:
    """One crew fact for `add_facts`: its uid must not be in use yet."""

    order: WorkOrder
    kind: str
    uid: str
    data: dict[str, Any]
    actor: Actor
    occurred_at: datetime | None


def add_facts(session: Session, facts: Sequence[NewFact]) -> list[int]:
    """Append many new facts at once: the same rows as `add_fact` one by one, written in one
    insert of events and one of feed rows. Returns each fact's order version after it.

    For a phone that syncs a day of notes in one push; the caller has checked the uids
    (a replayed one goes through `add_fact`, which returns the existing fact).
    """
    now = utcnow()
    events: list[dict[str, Any]] = []
    feed: list[tuple[str, str | int, Op, str, int | None]] = []
    for fact in facts:
        if fact.kind not in FACT_KINDS:
            raise ValidationFailed(f"unknown fact kind {fact.kind!r}", field="kind")
        order = fact.order
        assert order.id is not None
        order.version += 1
        order.updated_at = now
        events.append(_event_values(order, fact.actor, fact.kind, occurred_at=fact.occurred_at, now=now,
                                    uid=fact.uid, data=fact.data))
        feed += [("work_order", order.id, "upsert", scope, order.version) for scope in _scopes(order.crew_id)]
    session.add_all({id(fact.order): fact.order for fact in facts}.values())
    session.flush()
    if events:
        session.connection().execute(insert(WorkOrderEvent.__table__), events)  # type: ignore[attr-defined]
    record_changes(session, feed)
    return [event["version"] for event in events]


def delete_work_order(session: Session, order: WorkOrder, *, actor: Actor, reason: str | None) -> None:
    """Remove a job from every view; its history stays for audit."""
    order.deleted_at = utcnow()
    order.is_open = False
    order.version += 1
    order.updated_at = utcnow()
    session.add(order)
    session.add(_event(order, actor, "deleted", occurred_at=None, data={"reason": reason} if reason else None))
    assert order.id is not None
    record_change(session, entity="work_order", entity_id=order.id, op="delete",
                  scopes=_scopes(order.crew_id), version=order.version)


def assignment_history(session: Session, work_order_id: int) -> list[tuple[datetime, str | None]]:
    """(from when, crew scope) of every holder of the job, oldest first, in server time."""
    events = session.exec(
        select(WorkOrderEvent)
        .where(WorkOrderEvent.work_order_id == work_order_id, WorkOrderEvent.kind.in_(["created", "assigned"]))  # type: ignore[attr-defined]
        .order_by(WorkOrderEvent.id)  # type: ignore[arg-type]
    ).all()
    history: list[tuple[datetime, str | None]] = []
    for event in events:
        crew_id = (event.data or {}).get("crew_id")
        history.append((event.recorded_at, crew_scope(crew_id) if crew_id is not None else None))
    return history

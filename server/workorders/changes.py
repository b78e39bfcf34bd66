"""Changing a work order: the one place that bumps its version, keeps the event and tells
the sync change feed, all in the caller's transaction.

Dispatchers (HTTP), crews (sync mutations) and the intake pipeline all go through here, so
every change is an event with who, when (device time and server time) and which channel,
and every change reaches the crews whose view it touches: an `upsert` for the crew that
holds the job, an `evict` for the crew that lost it.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, insert, literal, true, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from server.db import bulk_insert
from server.errors import Conflict, NotFound, ValidationFailed
from server.intake.numbers import format_number
from server.models import BlobRef, Crew, WorkOrder, WorkOrderEvent, utcnow
from server.notify.outbox import on_work_order_event
from server.status import Kind, Status, check_transition, info
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
    "set_due",
    "set_notes",
    "set_priority",
    "set_route",
    "merge_orders",
    "split_case",
    "EVENT_COLUMNS",
    "IntakeMerge",
    "IntakePlan",
    "NEEDS_CREW",
    "apply_intake",
    "check_invariants",
    "invariant_problem",
    "load_for_update",
    "new_event_uid",
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
    rows: list[tuple[str, str | int, Op, str, int | None]] = [
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


# Statuses in which a crew is on the job: they cannot stand without one.
NEEDS_CREW = frozenset({Status.ASSIGNED, Status.EN_ROUTE, Status.ON_SITE})


def invariant_problem(*, status: str, crew_id: int | None, is_open: bool, deleted: bool = False) -> tuple[str, str] | None:
    """(field, why) if a work order in this state would break the state machine's rules, else None.

    The rules `server.status` implies beyond its transitions: a status that means a crew is
    on the job needs a crew; `is_open` follows the status's kind; a removed job is not open.
    """
    target = Status(status)
    if target in NEEDS_CREW and crew_id is None:
        return "crew_id", f"status {target.value} needs a crew: assign one (crew_id) first"
    if is_open != (info(target).kind == Kind.OPEN):
        return "status", f"status {target.value} is {info(target).kind.value}, but the job is marked {'open' if is_open else 'closed'}"
    if deleted and is_open:
        return "status", "a removed job cannot be open"
    return None


def check_invariants(order: WorkOrder) -> None:
    """Raise ValidationFailed (naming the field) if `order` breaks the state machine's rules."""
    problem = invariant_problem(status=order.status, crew_id=order.crew_id, is_open=order.is_open,
                                deleted=order.deleted_at is not None)
    if problem is not None:
        raise ValidationFailed(problem[1], field=problem[0])


def _bump(session: Session, order: WorkOrder, event_kind: str, actor: Actor, **event: Any) -> WorkOrderEvent:
    order.version += 1
    order.updated_at = utcnow()
    session.add(order)
    recorded = _event(order, actor, event_kind, **event)
    session.add(recorded)
    assert order.id is not None
    record_change(session, entity="work_order", entity_id=order.id, op="upsert",
                  scopes=_scopes(order.crew_id), version=order.version)
    on_work_order_event(session, order, recorded)  # residents' and crews' push notices (the outbox)
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
    position: dict[str, float] | None = None,
) -> WorkOrderEvent:
    """Move along the state machine; every transition is kept as an event (with where the
    crew stood when it made the move, if its phone said and the crew allowed it).

    Raises InvalidTransition (a ValueError) for a move the machine does not have, and
    ValidationFailed (field `crew_id`) for a status that needs a crew on a job without one.
    """
    target = Status(to)
    if target in NEEDS_CREW and order.crew_id is None:
        raise ValidationFailed(f"status {target.value} needs a crew: assign one (crew_id) first", field="crew_id")
    event = _move(session, order, target, actor=actor, occurred_at=occurred_at, reason=reason, uid=uid,
                  position=position)
    check_invariants(order)
    return event


def _move(
    session: Session, order: WorkOrder, target: Status, *, actor: Actor, occurred_at: datetime | None = None,
    reason: str | None = None, uid: str | None = None, position: dict[str, float] | None = None,
) -> WorkOrderEvent:
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
    data: dict[str, Any] | None = {"reason": reason} if reason else None
    if position:
        data = {**(data or {}), "position": position}
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
    order.route_position = None  # a new crew plans its own day
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
        _move(session, order, Status.ASSIGNED, actor=actor)
    elif crew_id is None and info(current).kind == "open" and current != Status.ON_HOLD:
        if current in {Status.EN_ROUTE, Status.ON_SITE}:  # the crew stands down, then back to the queue
            _move(session, order, Status.ASSIGNED, actor=actor)
        _move(session, order, Status.NEW, actor=actor)
    elif crew_id is not None and current in {Status.EN_ROUTE, Status.ON_SITE}:
        # The new crew has not set out yet.
        _move(session, order, Status.ASSIGNED, actor=actor)
    check_invariants(order)
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
        if (existing.data or {}) != data:
            raise Conflict(f"uid {uid} is already used by a {kind} with different content; "
                           "a correction is a new entry with a new id", field="uid")
        return existing, False
    event = _bump(session, order, kind, actor, occurred_at=occurred_at, uid=uid, data=data)
    if kind == "photo":
        _refer_photos(session, [(str(data["sha256"]), order.id)])  # type: ignore[list-item]
    return event, True


def _refer_photos(session: Session, refs: Sequence[tuple[str, int]]) -> None:
    """Photos referenced by a job: whoever may see the job may see them."""
    connection = session.connection()
    table = BlobRef.__table__  # type: ignore[attr-defined]
    rows = [{"sha256": sha, "work_order_id": wid} for sha, wid in dict.fromkeys(refs)]
    insert_ref = (pg_insert if connection.dialect.name == "postgresql" else sqlite_insert)(table)
    connection.execute(insert_ref.on_conflict_do_nothing(index_elements=["sha256", "work_order_id"]), rows)


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
    photos = [(str(f.data["sha256"]), f.order.id) for f in facts if f.kind == "photo"]
    if photos:
        _refer_photos(session, photos)  # type: ignore[arg-type]
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



# -- the dispatcher's changes: due time, route order, merge and split ----------------------


def set_due(session: Session, order: WorkOrder, *, due_at: datetime, actor: Actor) -> WorkOrderEvent | None:
    """A new due time (the SLA's is only the default)."""
    if due_at.tzinfo is None:
        raise ValidationFailed("give the due time with its time zone", field="sla_due_at")
    if order.sla_due_at is not None and order.sla_due_at == due_at:
        return None
    previous = order.sla_due_at
    order.sla_due_at = due_at
    return _bump(session, order, "due", actor, occurred_at=None,
                 data={"sla_due_at": due_at.isoformat(), "previous": previous.isoformat() if previous else None})


def set_route(session: Session, orders: Sequence[WorkOrder], *, actor: Actor, how: str) -> int:
    """Number a crew's jobs 1..n in the given order; only the jobs whose place changed are
    bumped (their crew's devices get them again with the new `route_position`)."""
    changed = 0
    for position, order in enumerate(orders, start=1):
        if order.route_position == position:
            continue
        previous = order.route_position
        order.route_position = position
        _bump(session, order, "route", actor, occurred_at=None,
              data={"route_position": position, "previous": previous, "how": how})
        changed += 1
    return changed


def merge_orders(session: Session, target: WorkOrder, source: WorkOrder, *, actor: Actor,
                 case_ids: Sequence[int]) -> None:
    """Fold `source` into `target`: its cases move over (the caller moved them: `case_ids`),
    the target widens its reporting window and keeps the more urgent priority, and the
    source is cancelled with a reason that names the target. Both are open jobs."""
    if target.id == source.id:
        raise ValidationFailed("a work order cannot be merged into itself", field="source_id")
    for which, order in (("target_id", target), ("source_id", source)):
        if not order.is_open:
            raise ValidationFailed(f"work order {order.number} is closed; reopen it first", field=which)
    target.case_count += source.case_count
    target.first_reported_at = min(target.first_reported_at, source.first_reported_at)
    target.last_reported_at = max(target.last_reported_at, source.last_reported_at)
    target.priority = min(target.priority, source.priority)
    target.emergency = target.emergency or source.emergency
    if source.sla_due_at is not None and (target.sla_due_at is None or source.sla_due_at < target.sla_due_at):
        target.sla_due_at = source.sla_due_at
    _bump(session, target, "merged", actor, occurred_at=None,
          data={"from_work_order_id": source.id, "from_number": source.number, "case_ids": list(case_ids)})
    source.case_count = 0
    _move(session, source, Status.CANCELLED, actor=actor, reason=f"merged into {target.number}")
    check_invariants(source)


def split_case(session: Session, order: WorkOrder, *, case_id: int, actor: Actor, new_order: WorkOrder) -> WorkOrder:
    """A case wrongly merged into `order` becomes a job of its own (`new_order`, built by the
    caller from the case, not yet added); the caller moves the case row."""
    if order.case_count <= 1:
        raise ValidationFailed("the work order has only this case: nothing to split", field="case_id")
    new_order.version = 1
    new_order.number = f"tmp-{uuid.uuid4().hex[:16]}"  # unique until the id is known
    session.add(new_order)
    session.flush()
    assert new_order.id is not None
    new_order.number = format_number(new_order.id)
    order.case_count -= 1
    _bump(session, order, "split", actor, occurred_at=None,
          data={"case_id": case_id, "to_work_order_id": new_order.id})
    session.add(_event(new_order, actor, "created", occurred_at=None, to_status=new_order.status,
                       data={"case_id": case_id, "split_from": order.id, "split_from_number": order.number}))
    publish_orders(session, [(new_order.id, new_order.crew_id, new_order.version)])
    check_invariants(new_order)
    return new_order


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


# -- intake: the pipeline decides, the writer writes ---------------------------------------

# Unique event ids without a uuid4 per row: a random per-process prefix and a counter.
_UID_PREFIX = uuid.uuid4().hex[:20]
_UID_COUNTER = itertools.count(1)  # next() on a count is atomic under the GIL

EVENT_COLUMNS = (
    "uid", "work_order_id", "version", "kind", "from_status", "to_status", "data", "channel", "actor_user_id",
    "actor", "occurred_at", "recorded_at",
)


def new_event_uid() -> str:
    return f"{_UID_PREFIX}{next(_UID_COUNTER):012x}"


@dataclass(slots=True)
class IntakeMerge:
    """Cases the pipeline decided to merge into one existing open work order."""

    work_order_id: int
    case_ids: list[int] = field(default_factory=list)
    reported_at: list[datetime] = field(default_factory=list)
    keywords: list[str | None] = field(default_factory=list)  # an emergency keyword per case, if any


@dataclass(slots=True)
class IntakePlan:
    """What the intake pipeline decided for one batch: new work orders (whole rows in
    `order_columns` order, with their events in `EVENT_COLUMNS` order) and merges into
    existing ones. `published` is (id, crew id, version) of the new open orders."""

    actor: Actor
    now: datetime
    order_columns: tuple[str, ...]
    new_orders: list[tuple[Any, ...]] = field(default_factory=list)
    new_order_events: list[tuple[Any, ...]] = field(default_factory=list)
    published: list[tuple[int, int | None, int]] = field(default_factory=list)
    merges: dict[int, IntakeMerge] = field(default_factory=dict)


@dataclass(slots=True)
class _Target:
    """A merge target's state under its row lock."""

    version: int
    emergency: bool
    crew_id: int | None


_OPEN_STATUSES = frozenset(s.value for s in Status if info(s).kind == Kind.OPEN)
_NEEDS_CREW_VALUES = frozenset(s.value for s in NEEDS_CREW)


def apply_intake(session: Session, plan: IntakePlan, *, memo: dict[datetime, str] | None = None) -> set[int]:
    """Write an intake plan: new orders, merges (relative updates under row locks), their
    events and feed rows. Returns the merge targets that are no longer open (closed,
    cancelled or removed since the pipeline read them): then nothing is written and the
    pipeline decides again for those cases.
    """
    table = WorkOrder.__table__  # type: ignore[attr-defined]
    columns = plan.order_columns
    status_at, crew_at, open_at = columns.index("status"), columns.index("crew_id"), columns.index("is_open")
    # A case may merge into an order created earlier in the same batch: it is written first.
    id_at, version_at, emergency_at = columns.index("id"), columns.index("version"), columns.index("emergency")
    locked: dict[int, _Target] = {
        row[id_at]: _Target(row[version_at], bool(row[emergency_at]), row[crew_at])
        for row in plan.new_orders if row[id_at] in plan.merges
    }
    existing = sorted(set(plan.merges) - set(locked))
    if existing:
        rows = session.connection().execute(
            sa_select(table.c.id, table.c.version, table.c.is_open, table.c.deleted_at, table.c.emergency,
                      table.c.crew_id)
            .where(table.c.id.in_(existing))
            .order_by(table.c.id)
            .with_for_update()
        ).all()
        stale = set(existing) - {row.id for row in rows}
        for row in rows:
            if not row.is_open or row.deleted_at is not None:
                stale.add(row.id)
            else:
                locked[row.id] = _Target(row.version, bool(row.emergency), row.crew_id)
        if stale:
            return stale
    for values in plan.new_orders:
        status, crew_id, is_open = values[status_at], values[crew_at], values[open_at]
        if (status in _NEEDS_CREW_VALUES and crew_id is None) or ((status in _OPEN_STATUSES) != bool(is_open)):
            problem = invariant_problem(status=status, crew_id=crew_id, is_open=bool(is_open))
            raise ValidationFailed(problem[1] if problem else "invalid new work order", field=problem[0] if problem else "status")

    memo = {} if memo is None else memo
    connection = session.connection()
    bulk_insert(connection, table, columns, plan.new_orders, memo=memo)
    events = list(plan.new_order_events)
    feed: list[tuple[int, int | None, int]] = list(plan.published)
    updates: list[dict[str, Any]] = []
    for wid, merge in plan.merges.items():
        current = locked[wid]
        version, emergency = current.version, current.emergency
        raised = False
        for case_id, reported_at, keyword in zip(merge.case_ids, merge.reported_at, merge.keywords, strict=True):
            version += 1
            events.append((new_event_uid(), wid, version, "merged", None, None, {"case_id": case_id},
                           plan.actor.channel, plan.actor.user_id, plan.actor.label, reported_at, plan.now))
            if keyword and not emergency:
                emergency = raised = True
                version += 1
                events.append((new_event_uid(), wid, version, "alert", None, None,
                               {"reason": "emergency keyword", "keyword": keyword},
                               plan.actor.channel, plan.actor.user_id, plan.actor.label, reported_at, plan.now))
        updates.append({
            "b_id": wid, "b_steps": version - current.version, "b_cases": len(merge.case_ids),
            "b_first": min(merge.reported_at), "b_last": max(merge.reported_at), "b_raise": raised, "b_now": plan.now,
        })
        feed.append((wid, current.crew_id, version))
    if updates:
        when = table.c.first_reported_at.type
        first, last = bindparam("b_first", type_=when), bindparam("b_last", type_=when)
        raise_flag = bindparam("b_raise", type_=table.c.emergency.type)
        connection.execute(
            update(table).where(table.c.id == bindparam("b_id")).values(
                version=table.c.version + bindparam("b_steps"),
                case_count=table.c.case_count + bindparam("b_cases"),
                first_reported_at=case((table.c.first_reported_at > first, first), else_=table.c.first_reported_at),
                last_reported_at=case((table.c.last_reported_at < last, last), else_=table.c.last_reported_at),
                emergency=case((raise_flag == true(), literal(True)), else_=table.c.emergency),
                priority=case((raise_flag == true(), literal(1)), else_=table.c.priority),
                updated_at=bindparam("b_now", type_=table.c.updated_at.type),
            ),
            updates,
        )
    bulk_insert(connection, WorkOrderEvent.__table__, EVENT_COLUMNS, events, memo=memo)  # type: ignore[attr-defined]
    publish_orders(session, feed)
    return set()

"""The work-order mutations crews push from their phones, and the policy each field follows.

    status        state machine; every transition kept; "completed after cancel" → conflict
    note, photo,
    material, time append-only facts keyed by client ids: they cannot conflict
    notes         shared free text: optimistic check on the version the crew saw
    request       assignment, priority, schedule, location: server-owned; the crew's wish is
                  recorded as a conflict for a dispatcher, never applied

Policy never looks at device clocks to pick a winner; `device_ts` only tells whether the
crew held the job when it made the edit (crews reassigned away while offline keep their
facts), within a bounded grace for clock skew.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
from sqlmodel import Session, select

from server.auth.tokens import AuthUser
from server.errors import Conflict
from server.models import Blob, WorkOrder, WorkOrderEvent
from server.status import Status, can_transition
from server.workorders.changes import (
    Actor,
    NewFact,
    add_fact,
    add_facts,
    assignment_history,
    change_status,
    crew_scope,
    set_notes,
)
from sync import Applied, MutationContext, Mutator, MutatorRegistry, Rejected
from sync.policies import held_at, optimistic_text, server_owned

__all__ = ["HOLD_GRACE", "build_registry"]

# Device clocks drift and crews sync late: an edit made up to this long after the job was
# reassigned away still counts as made while holding it.
HOLD_GRACE = timedelta(minutes=15)

# What one crew can plausibly use on one job in one entry: a made-up 99,999 "gold bars" is
# rejected with the field named; a real larger delivery is several entries or a dispatcher's job.
MAX_QUANTITY = 1000

Uid = Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Text = Annotated[str, msgspec.Meta(max_length=4000)]
OrderId = Annotated[int, msgspec.Meta(ge=1)]


class Position(msgspec.Struct, forbid_unknown_fields=True):
    """Where the crew stood when it made a move (its phone's fix, when the crew allows it)."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    accuracy_m: Annotated[float, msgspec.Meta(ge=0, le=100_000)] | None = None


class StatusArgs(msgspec.Struct, forbid_unknown_fields=True):
    work_order_id: OrderId
    to: Literal["en_route", "on_site", "on_hold", "completed", "cannot_complete", "assigned"]
    reason: Text | None = None
    position: Position | None = None


class NoteArgs(msgspec.Struct, forbid_unknown_fields=True):
    work_order_id: OrderId
    uid: Uid
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]


class PhotoArgs(msgspec.Struct, forbid_unknown_fields=True):
    work_order_id: OrderId
    uid: Uid
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    caption: Annotated[str, msgspec.Meta(max_length=500)] = ""


class MaterialArgs(msgspec.Struct, forbid_unknown_fields=True):
    work_order_id: OrderId
    uid: Uid
    item: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    quantity: Annotated[float, msgspec.Meta(gt=0, le=MAX_QUANTITY)]
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[^\x00-\x1f]+$")] = "each"


class TimeArgs(msgspec.Struct, forbid_unknown_fields=True):
    work_order_id: OrderId
    uid: Uid
    minutes: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)]
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class NotesArgs(msgspec.Struct, forbid_unknown_fields=True):
    work_order_id: OrderId
    text: Text
    base_version: Annotated[int, msgspec.Meta(ge=0)]


class RequestArgs(msgspec.Struct, forbid_unknown_fields=True):
    work_order_id: OrderId
    field: Literal["crew_id", "priority", "sla_due_at", "location", "schedule"]
    value: Any
    reason: Text = ""


def _actor(ctx: MutationContext) -> Actor:
    user: AuthUser = ctx.actor
    return Actor(user_id=user.id, label=f"crew:{user.crew_id}:{user.username}", channel="sync")


def _order(session: Session, work_order_id: int) -> WorkOrder:
    order = session.exec(select(WorkOrder).where(WorkOrder.id == work_order_id).with_for_update()).first()
    if order is None:
        raise Rejected(f"work order {work_order_id} does not exist")
    if order.deleted_at is not None:
        raise Rejected(f"work order {work_order_id} was removed by a dispatcher")
    return order


def _holds_now(ctx: MutationContext, order: WorkOrder) -> bool:
    return ctx.actor.crew_id is not None and order.crew_id == ctx.actor.crew_id


def _held_when_made(session: Session, ctx: MutationContext, order: WorkOrder) -> bool:
    """Did the crew hold the job when it made this edit (by device time, with grace)?"""
    if _holds_now(ctx, order):
        return True
    if ctx.actor.crew_id is None:
        return False
    made = ctx.occurred_at  # device time, but never later than it arrived
    assert order.id is not None
    return held_at(assignment_history(session, order.id), crew_scope(ctx.actor.crew_id), made, HOLD_GRACE)


def _ever_held(session: Session, ctx: MutationContext, order: WorkOrder) -> bool:
    """Did the crew hold the job at any time? (Shared state it sends for a job it held once
    becomes a conflict for review, whatever its clock says; for any other job it is refused.)"""
    if ctx.actor.crew_id is None:
        return False
    assert order.id is not None
    scope = crew_scope(ctx.actor.crew_id)
    return any(holder == scope for _, holder in assignment_history(session, order.id))


def apply_status(session: Session, ctx: MutationContext, args: StatusArgs) -> Applied:
    order = _order(session, args.work_order_id)
    if not _holds_now(ctx, order) and not _ever_held(session, ctx, order):
        raise Rejected(f"work order {order.number} is not assigned to your crew")
    target = Status(args.to)
    current = Status(order.status)
    if not _holds_now(ctx, order) or current == Status.CANCELLED:
        # Reassigned away or cancelled while the crew was offline: the crew's report is
        # kept for review, the dispatcher's decision stands.
        ctx.conflict(entity="work_order", entity_id=str(order.id), field="status", kind="transition",
                     base_version=None, server_value=current.value, client_value=target.value)
        return Applied(server_version=order.version, conflicted=True,
                       result={"status": current.value, "kept": "server"})
    if current == target:
        return Applied(server_version=order.version, result={"status": current.value})
    if not can_transition(current, target):
        raise Rejected(f"status cannot go from {current.value} to {target.value}")
    change_status(session, order, to=target, actor=_actor(ctx), occurred_at=ctx.occurred_at,
                  reason=args.reason, uid=ctx.mid,
                  position=msgspec.structs.asdict(args.position) if args.position else None)
    return Applied(server_version=order.version, result={"status": order.status})


def _fact(kind: str, fields: tuple[str, ...]) -> tuple[Any, Any]:
    """The mutator of one kind of append-only fact, keeping `fields` of its arguments: one
    at a time, and many at once for a run of them in one push."""

    def apply(session: Session, ctx: MutationContext, args: Any) -> Applied:
        order = _order(session, args.work_order_id)
        if not _held_when_made(session, ctx, order):
            raise Rejected(f"work order {order.number} is not assigned to your crew")
        if kind == "photo" and session.get(Blob, args.sha256) is None:
            raise Rejected(f"photo {args.sha256} was not uploaded (PUT /sync/v1/blobs/{args.sha256} first)")
        values = {name: getattr(args, name) for name in fields}
        try:
            event, _ = add_fact(session, order, kind=kind, uid=args.uid, data=values, actor=_actor(ctx),
                                occurred_at=ctx.occurred_at)
        except Conflict as exc:  # a reused uid: the first entry stands, this one is kept for review
            raise Rejected(exc.message) from None
        return Applied(server_version=order.version, result={"event_uid": event.uid})

    def apply_many(session: Session, contexts: list[MutationContext], many: list[Any]) -> list[Applied]:
        # The common case only: new uids on jobs the crew holds now. Anything else is
        # Rejected here and the engine applies the run one by one, with exact reasons.
        uids = [args.uid for args in many]
        if len(set(uids)) < len(uids) or session.exec(
                select(WorkOrderEvent.uid).where(WorkOrderEvent.uid.in_(uids))).first():  # type: ignore[attr-defined]
            raise Rejected("a uid is used twice")
        orders = _orders_held_now(session, contexts[0], {args.work_order_id for args in many})
        if kind == "photo":
            hashes = {args.sha256 for args in many}
            if len(session.exec(select(Blob.sha256).where(Blob.sha256.in_(hashes))).all()) < len(hashes):  # type: ignore[attr-defined]
                raise Rejected("a photo was not uploaded")
        actor = _actor(contexts[0])
        versions = add_facts(session, [
            NewFact(orders[args.work_order_id], kind, args.uid, {name: getattr(args, name) for name in fields},
                    actor, ctx.occurred_at)
            for ctx, args in zip(contexts, many, strict=True)
        ])
        return [Applied(server_version=version, result={"event_uid": args.uid})
                for version, args in zip(versions, many, strict=True)]

    return apply, apply_many


def _orders_held_now(session: Session, ctx: MutationContext, ids: set[int]) -> dict[int, WorkOrder]:
    """The live jobs `ids`, locked, if the crew holds every one of them now; else Rejected."""
    # Locked in id order, as the intake writer locks its merge targets: no deadlock between them.
    orders = session.exec(select(WorkOrder).where(WorkOrder.id.in_(ids))  # type: ignore[union-attr]
                          .order_by(WorkOrder.id).with_for_update()).all()  # type: ignore[arg-type]
    if len(orders) < len(ids) or any(o.deleted_at is not None or not _holds_now(ctx, o) for o in orders):
        raise Rejected("a job is missing or not held")
    return {order.id: order for order in orders}  # type: ignore[misc]


def apply_notes(session: Session, ctx: MutationContext, args: NotesArgs) -> Applied:
    order = _order(session, args.work_order_id)
    if not _holds_now(ctx, order) and not _ever_held(session, ctx, order):
        raise Rejected(f"work order {order.number} is not assigned to your crew")
    assert order.id is not None
    if not _holds_now(ctx, order):
        # Shared state of a job the crew no longer holds: the new crew's notes stand, the
        # text is kept for review, whatever the device's clock says.
        ctx.conflict(entity="work_order", entity_id=str(order.id), field="notes", kind="not_held",
                     base_version=args.base_version, server_value=order.notes, client_value=args.text)
        return Applied(server_version=order.version, conflicted=True,
                       result={"notes_version": order.notes_version, "kept": "server"})
    if not optimistic_text(ctx, entity="work_order", entity_id=str(order.id), field="notes",
                           base_version=args.base_version, current_version=order.notes_version,
                           server_value=order.notes, client_value=args.text):
        return Applied(server_version=order.version, conflicted=True,
                       result={"notes_version": order.notes_version, "kept": "server"})
    set_notes(session, order, text=args.text, base_version=order.notes_version, actor=_actor(ctx),
              occurred_at=ctx.occurred_at, uid=ctx.mid)
    return Applied(server_version=order.version, result={"notes_version": order.notes_version})


def apply_request(session: Session, ctx: MutationContext, args: RequestArgs) -> Applied:
    order = _order(session, args.work_order_id)
    if not _held_when_made(session, ctx, order):
        raise Rejected(f"work order {order.number} is not assigned to your crew")
    current: Any = {
        "crew_id": order.crew_id,
        "priority": order.priority,
        "sla_due_at": order.sla_due_at.isoformat() if order.sla_due_at else None,
        "location": [order.lon, order.lat],
        "schedule": None,
    }[args.field]
    assert order.id is not None
    server_owned(ctx, entity="work_order", entity_id=str(order.id), field=args.field,
                 server_value=current, client_value={"value": args.value, "reason": args.reason})
    return Applied(server_version=order.version, conflicted=True, result={"recorded": True})


def build_registry() -> MutatorRegistry:
    registry = MutatorRegistry()
    registry.register(Mutator("status", 1, StatusArgs, apply_status))
    for kind, args, fields in (("note", NoteArgs, ("text",)), ("photo", PhotoArgs, ("sha256", "caption")),
                               ("material", MaterialArgs, ("item", "quantity", "unit")),
                               ("time", TimeArgs, ("minutes", "note"))):
        apply, apply_many = _fact(kind, fields)
        registry.register(Mutator(kind, 1, args, apply, apply_many))
    registry.register(Mutator("notes", 1, NotesArgs, apply_notes))
    registry.register(Mutator("request", 1, RequestArgs, apply_request))
    return registry


"""The notification outbox: rows written in the same transaction as the change they tell of.

`on_work_order_event` is the one hook the work-order writer (server/workorders/changes.py)
calls for every event it writes. It decides whether the event matters to someone:

    status change                          resident notice (every subscribed reporter of
      new → on_hold                          every case of the work order, once each)
        acknowledged
      new / on_hold → assigned   scheduled
      → completed                completed
      → cannot_complete          cannot_complete (with the reason)
      → cancelled                cancelled (with the reason)
      fixed or closed → open     reopened
    assigned to a crew           crew notice (every subscribed member of the crew)

and writes one `PushNotification` per (subscription, event); the sender does the rest. A
subscriber is not told the same kind twice in a row (a job unassigned and assigned again
is still "scheduled"). Imports never notify: a city export is history.

`purge_finished` deletes notices that are done with (server/housekeeping.py runs it once a
day): a resident's notices are not kept longer than their use.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, update
from sqlmodel import Session, col, select

from server.db import write_session
from server.models import Case, PushNotification, PushSubscription, User, WorkOrder, WorkOrderEvent, utcnow
from server.notify.messages import crew_payload, resident_payload
from server.notify.wakeup import poke_after_commit
from server.settings import PushSettings
from server.status import Kind, Status, info

__all__ = ["FINISHED_STATES", "crew_job_assigned", "on_work_order_event", "purge_finished", "resident_kind"]

_DEFAULTS = PushSettings()
_N = PushNotification.__table__  # type: ignore[attr-defined]
# What a sender will never touch again (server/notify/sender.py).
FINISHED_STATES = ("sent", "failed", "expired", "unknown")
_SCHEDULED_FROM = frozenset({Status.NEW, Status.ON_HOLD})
_CLOSING = {
    Status.COMPLETED: "completed",
    Status.CANNOT_COMPLETE: "cannot_complete",
    Status.CANCELLED: "cancelled",
}


def resident_kind(from_status: str | None, to_status: str | None) -> str | None:
    """The resident notice a status change calls for, if any."""
    if to_status is None or from_status == to_status:
        return None
    target = Status(to_status)
    source = Status(from_status) if from_status else None
    if target in _CLOSING:
        return _CLOSING[target]
    if source is not None and info(source).kind != Kind.OPEN and info(target).kind == Kind.OPEN:
        return "reopened"
    if target == Status.ON_HOLD and source == Status.NEW:
        return "acknowledged"
    if target == Status.ASSIGNED and source in _SCHEDULED_FROM:
        return "scheduled"
    return None


def on_work_order_event(session: Session, order: WorkOrder, event: WorkOrderEvent) -> None:
    """The writer's hook: queue the notices this event calls for (usually none)."""
    if event.channel == "import":
        return
    if event.kind == "status":
        kind = resident_kind(event.from_status, event.to_status)
        if kind is not None:
            reason = (event.data or {}).get("reason") or (order.resolution if kind != "reopened" else None)
            _queue_residents(session, order, kind=kind, event_uid=event.uid, reason=reason)
    elif event.kind == "assigned":
        crew_id = (event.data or {}).get("crew_id")
        if crew_id is not None and order.is_open:
            _queue_crew(session, order, crew_id=int(crew_id), event_uid=event.uid)


def crew_job_assigned(session: Session, orders: Iterable[WorkOrder]) -> None:
    """New jobs routed to a crew at intake (Open311, the resident page): tell the crew."""
    for order in orders:
        if order.crew_id is not None and order.is_open and order.id is not None:
            _queue_crew(session, order, crew_id=order.crew_id, event_uid=f"routed:{order.id}")


def _write(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    session.connection().execute(insert(PushNotification.__table__), rows)  # type: ignore[attr-defined]
    poke_after_commit(session)


def _row(subscription_id: int, event_uid: str, kind: str, payload: dict[str, Any], *, urgency: str, ttl: int,
         now: Any) -> dict[str, Any]:
    return {
        "subscription_id": subscription_id, "event_uid": event_uid, "kind": kind, "payload": payload,
        "urgency": urgency, "ttl_seconds": ttl, "state": "pending", "attempts": 0, "next_attempt_at": now,
        "created_at": now,
    }


def _queue_residents(session: Session, order: WorkOrder, *, kind: str, event_uid: str, reason: str | None) -> None:
    found = session.exec(
        select(PushSubscription, Case.id, Case.service_name, Case.tracking_token)
        .join(Case, col(Case.id) == col(PushSubscription.case_id))
        .where(col(Case.work_order_id) == order.id)
        .order_by(col(PushSubscription.id))
    ).all()
    now = utcnow()
    rows: list[dict[str, Any]] = []
    told: list[int] = []
    for subscription, case_id, service, token in found:
        assert subscription.id is not None and case_id is not None
        if subscription.last_kind == kind:
            continue
        payload = resident_payload(kind, language=subscription.language, case_id=case_id, service=service,
                                   token=token, reason=reason if kind != "scheduled" else None)
        urgency = "high" if order.emergency else "normal"
        rows.append(_row(subscription.id, event_uid, kind, payload, urgency=urgency,
                         ttl=_DEFAULTS.resident_ttl_seconds, now=now))
        told.append(subscription.id)
    if told:
        session.connection().execute(
            update(PushSubscription.__table__)  # type: ignore[attr-defined]
            .where(col(PushSubscription.id).in_(told)).values(last_kind=kind)
        )
    _write(session, rows)


def _queue_crew(session: Session, order: WorkOrder, *, crew_id: int, event_uid: str) -> None:
    assert order.id is not None
    found = session.exec(
        select(PushSubscription)
        .join(User, col(User.id) == col(PushSubscription.user_id))
        .where(col(User.crew_id) == crew_id, col(User.active).is_(True))
        .order_by(col(PushSubscription.id))
    ).all()
    if not found:
        return
    service = session.exec(select(Case.service_name).where(col(Case.work_order_id) == order.id)).first() \
        or order.service_code
    now = utcnow()
    rows = []
    for subscription in found:
        assert subscription.id is not None
        payload = crew_payload(language=subscription.language, work_order_id=order.id, number=order.number,
                               service=service, address=order.address, emergency=order.emergency)
        rows.append(_row(subscription.id, event_uid, "assigned", payload,
                         urgency="high" if order.emergency else "normal", ttl=_DEFAULTS.crew_ttl_seconds, now=now))
    _write(session, rows)


def purge_finished(engine: Engine, *, before: datetime, batch: int = 5000) -> int:
    """Delete the finished notices queued before `before`; returns how many.

    A batch per transaction, so that a first purge of a long history never holds SQLite's
    one writer for long. Nothing is queued twice for lack of the row: a notice is queued
    once, when its event is written, never again later.
    """
    total = 0
    while True:
        with write_session(engine) as session:
            oldest = (select(_N.c.id).where(_N.c.state.in_(FINISHED_STATES), _N.c.created_at < before)
                      .order_by(_N.c.id).limit(batch))
            deleted = int(session.connection().execute(
                delete(_N).where(_N.c.id.in_(oldest.scalar_subquery()))).rowcount or 0)
        total += deleted
        if deleted < batch:
            return total

"""Helpers for the push tests: settings that allow the loopback push service, a case made
through the real intake (Open311's submit), a subscriber bound to it, status changes
through the real work-order writer, and a sender run to completion."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine, insert
from sqlmodel import Session, select

from server.db import write_session
from server.intake.servicetypes import service_type_defaults
from server.models import Crew, PushNotification, PushSubscription, ServiceType, WorkOrder, utcnow
from server.notify.sender import Sender, SendStats
from server.notify.subscriptions import bind_to_case, endpoint_hash, parse_subscription
from server.notify.vapid import VapidIdentity, ensure_keys
from server.open311.service import Submitted, submit_request
from server.settings import PushSettings, Settings
from server.workorders.changes import Actor, assign, change_status, load_for_update
from tests.conftest import make_settings
from tests.notify.pushservice import Subscriber, b64url

DISPATCHER = Actor(user_id=None, label="dispatcher:test", channel="api")
# A corner of downtown LA, and points a few metres away (the same pothole).
HERE = (34.0522, -118.2437)


def push_settings(database_url: str, **push: Any) -> Settings:
    settings = make_settings(database_url)
    values: dict[str, Any] = {"allow_loopback_http": True, "retry_base_seconds": 0.3, "lease_seconds": 30.0,
                              "poll_seconds": 0.2, "timeout_seconds": 5.0}
    values.update(push)
    return replace(settings, push=replace(PushSettings(), **values))


def prepare(engine: Engine, codes: tuple[str, ...] = ("pothole", "street-light-out")) -> VapidIdentity:
    """Service types, a crew ("Crew A") and the VAPID key pair."""
    names = {"pothole": "Pothole", "street-light-out": "Street Light Out"}
    with write_session(engine) as session:
        for code in codes:
            if session.get(ServiceType, code) is None:
                session.add(ServiceType(**service_type_defaults(code, names.get(code, code))))
        if session.exec(select(Crew).where(Crew.name == "Crew A")).first() is None:
            session.add(Crew(name="Crew A", skills=[], home_districts=[]))
        identity, _ = ensure_keys(session)
    return identity


def crew_a(engine: Engine) -> int:
    with Session(engine) as session:
        crew = session.exec(select(Crew).where(Crew.name == "Crew A")).one()
        assert crew.id is not None
        return crew.id


def complete(engine: Engine, work_order_id: int, *, reason: str | None = None) -> None:
    """Give the job to Crew A (if nobody has it) and mark it completed."""
    with write_session(engine) as session:
        order = load_for_update(session, work_order_id)
        if order.crew_id is None:
            assign(session, order, crew_id=crew_a(engine), actor=DISPATCHER)
        change_status(session, order, to="completed", actor=DISPATCHER, reason=reason)


def report(engine: Engine, settings: Settings, *, code: str = "pothole", lat: float = HERE[0],
           lon: float = HERE[1], description: str = "Deep hole in the right lane") -> Submitted:
    with write_session(engine) as session:
        return submit_request(session, form={"service_code": code, "lat": str(lat), "long": str(lon),
                                             "description": description},
                              settings=settings, source="web", channel="web", actor="test resident")


def subscribe(engine: Engine, submitted: Submitted, subscriber: Subscriber, language: str = "en") -> int:
    with write_session(engine) as session:
        info = parse_subscription(subscriber.subscription(), allow_loopback_http=True)
        bound = bind_to_case(session, case_id=submitted.case_id, info=info, language=language)
        assert bound.id is not None
        return bound.id


def set_status(engine: Engine, work_order_id: int, to: str, *, reason: str | None = None) -> None:
    with write_session(engine) as session:
        order = load_for_update(session, work_order_id)
        change_status(session, order, to=to, actor=DISPATCHER, reason=reason)


def set_crew(engine: Engine, work_order_id: int, crew_id: int | None) -> None:
    with write_session(engine) as session:
        order = load_for_update(session, work_order_id)
        assign(session, order, crew_id=crew_id, actor=DISPATCHER)


def drain(engine: Engine, settings: Settings, name: str | None = None) -> SendStats:
    """Run a sender until nothing is due, on an event loop of its own thread (Playwright's
    sync API, once started, keeps a loop running in the main thread)."""
    sender = Sender(engine, settings.push, name=name)
    try:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, sender.drain()).result()
    finally:
        sender.close()


def outbox(engine: Engine) -> list[PushNotification]:
    with Session(engine) as session:
        return list(session.exec(select(PushNotification).order_by(PushNotification.id)).all())  # type: ignore[arg-type]


def subscriptions(engine: Engine) -> list[PushSubscription]:
    with Session(engine) as session:
        return list(session.exec(select(PushSubscription).order_by(PushSubscription.id)).all())  # type: ignore[arg-type]


def order_of(engine: Engine, submitted: Submitted) -> WorkOrder:
    with Session(engine) as session:
        order = session.get(WorkOrder, submitted.work_order_id)
        assert order is not None
        return order


def queue_many(engine: Engine, subscribers: list[Subscriber], *, kind: str = "completed",
               body: str = "Report 1: fixed.") -> list[int]:
    """One subscription and one due notice per subscriber, written straight to the outbox
    (the sender's tests and benchmark: the writer's hook is tested on its own)."""
    subs = PushSubscription.__table__  # type: ignore[attr-defined]
    notes = PushNotification.__table__  # type: ignore[attr-defined]
    now = utcnow()
    with write_session(engine) as session:
        connection = session.connection()
        ids = connection.execute(insert(subs).returning(subs.c.id, sort_by_parameter_order=True), [
            {"endpoint": s.endpoint, "endpoint_hash": endpoint_hash(s.endpoint), "p256dh": s.p256dh,
             "auth": b64url(s.auth_secret), "language": "en", "created_at": now}
            for s in subscribers
        ]).scalars().all()
        connection.execute(insert(notes), [
            {"subscription_id": sid, "event_uid": f"bulk-{sid}", "kind": kind,
             "payload": {"title": "Fixed: Pothole", "body": body, "url": f"/track/t{sid}?lang=en",
                         "tag": f"case-{sid}", "lang": "en", "dir": "ltr"},
             "urgency": "normal", "ttl_seconds": 3600, "state": "pending", "attempts": 0,
             "next_attempt_at": now, "created_at": now}
            for sid in ids
        ])
    return list(ids)

"""Push notices end to end: a change through the work-order writer, the outbox row written
in its transaction, the sender, and a push-service stand-in on loopback that checks the
VAPID JWT and decrypts what it gets (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from datetime import timedelta
from itertools import count

from sqlalchemy import Engine, update
from sqlmodel import Session, select

from server.auth.users import create_user
from server.db import write_session
from server.models import PushNotification, PushSubscription, RoutingRule, utcnow
from server.notify.catalog import catalog
from server.notify.messages import MAX_PAYLOAD_BYTES, encode_payload
from server.notify.subscriptions import bind_to_user, parse_subscription
from server.notify.vapid import VapidIdentity, load_identity
from server.settings import Settings
from tests.notify.pushservice import PushService
from tests.notify.support import (
    HERE,
    complete,
    crew_a,
    drain,
    order_of,
    outbox,
    report,
    set_crew,
    set_status,
    subscribe,
    subscriptions,
)

_SPOT = count()


def spot() -> tuple[float, float]:
    """A place of its own for each test (1 km apart: nothing merges across tests)."""
    n = next(_SPOT)
    return HERE[0] + 0.01 * n, HERE[1]


def test_completed_job_tells_the_reporter_in_their_language(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    lat, lon = spot()
    case = report(engine, settings, lat=lat, lon=lon)
    phone = push.subscriber()
    subscribe(engine, case, phone, "es")
    assert case.work_order_id is not None
    complete(engine, case.work_order_id, reason="Bache rellenado con asfalto")

    stats = drain(engine, settings)
    assert stats.sent >= 2 and stats.failed == 0
    scheduled, fixed = push.wait_for(2, subscriber=phone)
    spanish = catalog("resident")
    assert scheduled.payload == {
        "title": spanish.t("es", "push.scheduled.title", service="Pothole", number=case.case_id),
        "body": spanish.t("es", "push.scheduled.body", service="Pothole", number=case.case_id),
        "url": f"/track/{case.token}?lang=es", "tag": f"case-{case.case_id}", "lang": "es", "dir": "ltr",
    }
    assert fixed.payload is not None
    assert fixed.payload["title"] == spanish.t("es", "push.completed.title", service="Pothole")
    assert "Bache rellenado con asfalto" in fixed.payload["body"]
    assert fixed.payload["title"] != catalog("resident").t("en", "push.completed.title", service="Pothole")
    # What the push service saw: an explicit TTL, an urgency, a topic per case.
    assert fixed.ttl == settings.push.resident_ttl_seconds and fixed.urgency == "normal"
    assert fixed.topic == f"case-{case.case_id}"
    assert not [r for r in push.refused if r[0] == phone.id]
    # Sent once: another round sends nothing more.
    drain(engine, settings)
    assert len(push.messages(phone)) == 2
    assert {n.state for n in outbox(engine) if n.subscription_id in _ids(engine, case.case_id)} == {"sent"}


def _ids(engine: Engine, case_id: int) -> set[int]:
    with Session(engine) as session:
        return {s.id for s in session.exec(select(PushSubscription).where(PushSubscription.case_id == case_id))}  # type: ignore[misc]


def test_three_reports_of_one_pothole_each_hear_once(engine: Engine, settings: Settings, push: PushService) -> None:
    lat, lon = spot()
    first = report(engine, settings, lat=lat, lon=lon, description="Big pothole")
    second = report(engine, settings, lat=lat + 0.00005, lon=lon, description="Pothole, tyre burst")
    third = report(engine, settings, lat=lat, lon=lon + 0.00005, description="Hole in road")
    assert (second.outcome, third.outcome) == ("merged", "merged")
    assert first.work_order_id == second.work_order_id == third.work_order_id
    assert third.reports == 3
    phones = {"en": push.subscriber(), "ar": push.subscriber(), "ko": push.subscriber()}
    for case, (language, phone) in zip((first, second, third), phones.items(), strict=True):
        subscribe(engine, case, phone, language)
    assert first.work_order_id is not None
    set_crew(engine, first.work_order_id, crew_a(engine))
    drain(engine, settings)
    for phone in phones.values():  # "scheduled", once each
        assert len(push.wait_for(1, subscriber=phone)) == 1
    complete(engine, first.work_order_id)
    drain(engine, settings)
    for (language, phone), case in zip(phones.items(), (first, second, third), strict=True):
        got = push.wait_for(2, subscriber=phone)
        assert len(got) == 2
        fixed = got[1].payload
        assert fixed is not None
        assert fixed["lang"] == language and fixed["url"] == f"/track/{case.token}?lang={language}"
        assert fixed["title"] == catalog("resident").t(language, "push.completed.title", service="Pothole")
    assert push.messages(phones["ar"])[1].payload["dir"] == "rtl"  # type: ignore[index]
    drain(engine, settings)
    assert [len(push.messages(p)) for p in phones.values()] == [2, 2, 2]


def test_notice_kinds_follow_the_state_machine(engine: Engine, settings: Settings, push: PushService) -> None:
    lat, lon = spot()
    case = report(engine, settings, lat=lat, lon=lon)
    phone = push.subscriber()
    subscribe(engine, case, phone)
    order_id = case.work_order_id
    assert order_id is not None
    set_status(engine, order_id, "on_hold")  # acknowledged
    set_crew(engine, order_id, crew_a(engine))  # a crew, still on hold
    set_status(engine, order_id, "assigned")  # on_hold → assigned: scheduled
    set_crew(engine, order_id, None)  # back to the queue: not worth a notice
    set_crew(engine, order_id, crew_a(engine))  # scheduled again: not told twice in a row
    set_status(engine, order_id, "en_route")  # the timeline shows it; no notice
    set_status(engine, order_id, "cannot_complete", reason="Gas main underneath: utility must dig first")
    set_status(engine, order_id, "assigned")  # reopened
    set_status(engine, order_id, "cancelled", reason="Duplicate of an earlier report")
    drain(engine, settings)
    kinds = [n.kind for n in outbox(engine) if n.subscription_id in _ids(engine, case.case_id)]
    assert kinds == ["acknowledged", "scheduled", "cannot_complete", "reopened", "cancelled"]
    got = push.wait_for(5, subscriber=phone)
    assert "Gas main underneath" in got[2].payload["body"]  # type: ignore[index]


def test_a_gone_subscription_is_removed(engine: Engine, settings: Settings, push: PushService) -> None:
    lat, lon = spot()
    case = report(engine, settings, lat=lat, lon=lon)
    gone, fine = push.subscriber(), push.subscriber()
    subscribe(engine, case, gone)
    subscribe(engine, case, fine, "fr")
    push.unsubscribe(gone, 410)
    assert case.work_order_id is not None
    set_crew(engine, case.work_order_id, crew_a(engine))
    stats = drain(engine, settings)
    assert stats.gone == 1
    assert push.wait_for(1, subscriber=fine)[0].payload["lang"] == "fr"  # type: ignore[index]
    assert push.messages(gone) == []
    remaining = [s for s in subscriptions(engine) if s.case_id == case.case_id]
    assert [s.endpoint for s in remaining] == [fine.endpoint]
    # Later changes reach only the browser still subscribed.
    complete(engine, case.work_order_id)
    drain(engine, settings)
    assert len(push.wait_for(2, subscriber=fine)) == 2


def test_404_removes_every_binding_of_that_browser(engine: Engine, settings: Settings, push: PushService) -> None:
    (lat, lon), (lat2, lon2) = spot(), spot()
    one, other = report(engine, settings, lat=lat, lon=lon), report(engine, settings, lat=lat2, lon=lon2)
    phone = push.subscriber()
    subscribe(engine, one, phone)
    subscribe(engine, other, phone)  # the same browser follows two reports
    push.unsubscribe(phone, 404)
    assert one.work_order_id is not None
    set_crew(engine, one.work_order_id, crew_a(engine))
    drain(engine, settings)
    assert not [s for s in subscriptions(engine) if s.endpoint == phone.endpoint]


def test_429_and_500_are_retried_later(engine: Engine, settings: Settings, push: PushService) -> None:
    (lat, lon), (lat2, lon2) = spot(), spot()
    slow_case, flaky_case = report(engine, settings, lat=lat, lon=lon), report(engine, settings, lat=lat2, lon=lon2)
    # The 429 comes from the one push service all of them share: the sender holds back every
    # notice to it for Retry-After seconds.
    throttled, broken = push.subscriber(), push.subscriber()
    subscribe(engine, slow_case, throttled)
    subscribe(engine, flaky_case, broken)
    push.answer(throttled, 429, retry_after="1")
    push.answer(broken, 500, 503)
    assert slow_case.work_order_id is not None and flaky_case.work_order_id is not None
    set_crew(engine, slow_case.work_order_id, crew_a(engine))
    set_crew(engine, flaky_case.work_order_id, crew_a(engine))
    started = time.monotonic()
    first = drain(engine, settings)
    assert first.retried >= 1 and push.messages(throttled) == []
    rows = {n.subscription_id: n for n in outbox(engine)}
    throttled_row = rows[_ids(engine, slow_case.case_id).pop()]
    assert throttled_row.state == "pending" and throttled_row.last_status == 429
    assert throttled_row.next_attempt_at >= utcnow() + timedelta(seconds=0.5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (push.messages(throttled) and push.messages(broken)):
        drain(engine, settings)
        time.sleep(0.2)
    assert len(push.messages(throttled)) == 1 and len(push.messages(broken)) == 1
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    broken_row = {n.subscription_id: n for n in outbox(engine)}[_ids(engine, flaky_case.case_id).pop()]
    assert broken_row.state == "sent" and broken_row.attempts == 3  # 500, 503, then 201


def test_413_and_refusals_fail_without_retry(engine: Engine, settings: Settings, push: PushService) -> None:
    lat, lon = spot()
    case = report(engine, settings, lat=lat, lon=lon)
    phone = push.subscriber()
    subscribe(engine, case, phone)
    push.answer(phone, 413)
    assert case.work_order_id is not None
    set_crew(engine, case.work_order_id, crew_a(engine))
    stats = drain(engine, settings)
    assert stats.failed == 1
    (row,) = [n for n in outbox(engine) if n.subscription_id in _ids(engine, case.case_id)]
    assert (row.state, row.last_status) == ("failed", 413)
    drain(engine, settings)
    assert push.messages(phone) == []


def test_a_long_reason_is_cut_to_fit_the_push_size_limit(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    lat, lon = spot()
    case = report(engine, settings, lat=lat, lon=lon)
    phone = push.subscriber()
    subscribe(engine, case, phone, "ru")
    assert case.work_order_id is not None
    complete(engine, case.work_order_id, reason="Заделали яму. " * 140)
    drain(engine, settings)
    fixed = push.wait_for(2, subscriber=phone)[1]
    assert fixed.payload is not None and fixed.payload["body"].endswith("…")
    assert len(encode_payload(fixed.payload)) <= MAX_PAYLOAD_BYTES and fixed.size <= 4096


def test_crews_hear_of_a_job_assigned_to_them(engine: Engine, settings: Settings, push: PushService) -> None:
    lat, lon = spot()
    case = report(engine, settings, lat=lat, lon=lon)
    phone = push.subscriber()
    with write_session(engine) as session:
        user = create_user(session, username=f"crew-{case.case_id}", password="a long enough password",
                           role="crew", crew_id=crew_a(engine))
        assert user.id is not None
        bind_to_user(session, user_id=user.id, info=parse_subscription(phone.subscription(), allow_loopback_http=True),
                     language="es")
    assert case.work_order_id is not None
    set_crew(engine, case.work_order_id, crew_a(engine))
    drain(engine, settings)
    (notice,) = push.wait_for(1, subscriber=phone)
    order = order_of(engine, case)
    assert notice.payload is not None and set(notice.payload) == {"title", "body", "url"}
    assert notice.payload["url"] == f"/crew/#/jobs/{order.id}"
    assert order.number in notice.payload["body"]
    assert notice.payload["title"] == catalog("crew").t("es", "assigned.title", service="Pothole")


def test_claims_of_a_dead_sender_return_and_its_attempts_are_not_repeated(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    (lat, lon), (lat2, lon2) = spot(), spot()
    waiting, in_flight = report(engine, settings, lat=lat, lon=lon), report(engine, settings, lat=lat2, lon=lon2)
    phone_a, phone_b = push.subscriber(), push.subscriber()
    subscribe(engine, waiting, phone_a)
    subscribe(engine, in_flight, phone_b)
    assert waiting.work_order_id is not None and in_flight.work_order_id is not None
    set_crew(engine, waiting.work_order_id, crew_a(engine))
    set_crew(engine, in_flight.work_order_id, crew_a(engine))
    # A sender claimed both and died: one row only claimed, the other's POST under way.
    past = utcnow() - timedelta(seconds=1)
    table = PushNotification.__table__  # type: ignore[attr-defined]
    with write_session(engine) as session:
        ids_a, ids_b = _ids(engine, waiting.case_id), _ids(engine, in_flight.case_id)
        session.execute(update(table).where(table.c.subscription_id.in_(ids_a), table.c.state == "pending")
                        .values(state="claimed", claimed_by="dead", lease_until=past))
        session.execute(update(table).where(table.c.subscription_id.in_(ids_b), table.c.state == "pending")
                        .values(state="sending", claimed_by="dead", lease_until=past))
    stats = drain(engine, settings)
    assert stats.recovered >= 1 and stats.unknown >= 1
    assert len(push.wait_for(1, subscriber=phone_a)) == 1
    assert push.messages(phone_b) == []  # it may have arrived: never sent twice
    (row,) = [n for n in outbox(engine) if n.subscription_id in ids_b]
    assert row.state == "unknown"


def test_the_stored_key_is_the_one_pushes_are_signed_with(engine: Engine, identity: VapidIdentity) -> None:
    with Session(engine) as session:
        stored = load_identity(session)
    assert stored is not None and stored.public_key == identity.public_key
    assert "PRIVATE" not in repr(stored)


def test_a_job_routed_to_a_crew_at_intake_tells_the_crew(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    phone = push.subscriber()
    with write_session(engine) as session:
        user = create_user(session, username="crew-routed", password="a long enough password", role="crew",
                           crew_id=crew_a(engine))
        assert user.id is not None
        bind_to_user(session, user_id=user.id, info=parse_subscription(phone.subscription(), allow_loopback_http=True),
                     language="en")
        session.add(RoutingRule(district_id=None, service_code="street-light-out", crew_id=crew_a(engine)))
    lat, lon = spot()
    case = report(engine, settings, code="street-light-out", lat=lat, lon=lon, description="Sparking wire at the pole")
    order = order_of(engine, case)
    assert order.crew_id == crew_a(engine) and order.status == "assigned" and order.emergency
    drain(engine, settings)
    (notice,) = push.wait_for(1, subscriber=phone)
    assert notice.payload == {
        "title": catalog("crew").t("en", "assigned.emergency.title", service="Street Light Out"),
        "body": catalog("crew").t("en", "assigned.body_no_address", number=order.number),
        "url": f"/crew/#/jobs/{order.id}",
    }
    assert notice.urgency == "high"

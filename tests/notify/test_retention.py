"""Finished push notices are deleted after `keep_days`, once a day, by one worker at a time;
notices still on their way are never touched (server/housekeeping.py, SQLite and
PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from server.db import write_session
from server.housekeeping import purge_outbox_if_due
from server.models import PushNotification, utcnow
from server.notify.outbox import purge_finished
from server.settings import PushSettings, settings_from_env
from tests.notify.pushservice import PushService
from tests.notify.support import outbox, queue_many

STATES = ("sent", "failed", "expired", "unknown", "pending", "claimed", "sending")


def notices_in_every_state(engine: Engine, push: PushService, *, days_old: float) -> dict[int, str]:
    """One notice per state, queued `days_old` days ago: {id: state}."""
    phones = [push.subscriber() for _ in STATES]
    subscription_ids = queue_many(engine, phones)
    rows = {n.subscription_id: n.id for n in outbox(engine) if n.subscription_id in subscription_ids}
    queued = utcnow() - timedelta(days=days_old)
    with write_session(engine) as session:
        for subscription_id, state in zip(subscription_ids, STATES, strict=True):
            session.exec(update(PushNotification).where(PushNotification.id == rows[subscription_id])  # type: ignore[call-overload,arg-type]
                         .values(state=state, created_at=queued))
    return {rows[sid]: state for sid, state in zip(subscription_ids, STATES, strict=True)}


def test_finished_notices_go_after_keep_days_and_the_rest_stay(engine: Engine, push: PushService) -> None:
    old = notices_in_every_state(engine, push, days_old=31)
    recent = notices_in_every_state(engine, push, days_old=20)
    now = utcnow()  # the module's first purge: due

    purged = purge_outbox_if_due(engine, PushSettings(keep_days=30), now=now)

    assert purged is not None and purged >= 4
    left = {n.id: n.state for n in outbox(engine)}
    assert sorted(nid for nid in old if nid in left) == \
        sorted(nid for nid, state in old.items() if state in ("pending", "claimed", "sending"))
    assert all(nid in left for nid in recent)
    # Once a day: a second worker an hour later finds it done; the next day it runs again.
    assert purge_outbox_if_due(engine, PushSettings(keep_days=30), now=now + timedelta(hours=1)) is None
    assert purge_outbox_if_due(engine, PushSettings(keep_days=30), now=now + timedelta(hours=25)) is not None
    assert purge_outbox_if_due(engine, PushSettings(keep_days=0), now=now + timedelta(days=30)) is None
    assert all(nid in {n.id for n in outbox(engine)} for nid in recent)


def test_a_long_history_goes_in_batches(engine: Engine, push: PushService) -> None:
    phones = [push.subscriber() for _ in range(23)]
    subscription_ids = queue_many(engine, phones)
    with write_session(engine) as session:
        session.exec(update(PushNotification).where(PushNotification.subscription_id.in_(subscription_ids))  # type: ignore[call-overload,attr-defined]
                     .values(state="sent", created_at=utcnow() - timedelta(days=90)))

    assert purge_finished(engine, before=utcnow() - timedelta(days=30), batch=5) >= 23
    assert not [n for n in outbox(engine) if n.subscription_id in subscription_ids]


def test_two_workers_purge_once(engine: Engine, push: PushService) -> None:
    notices_in_every_state(engine, push, days_old=60)
    now = utcnow() + timedelta(days=800)
    results: list[int | None] = []
    threads = [threading.Thread(target=lambda: results.append(purge_outbox_if_due(engine, PushSettings(), now=now)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and sum(r is not None for r in results) == 1


def test_the_setting_names_a_bad_value() -> None:
    with pytest.raises(ValueError, match="FIELDWORK_PUSH_KEEP_DAYS"):
        settings_from_env({"FIELDWORK_PUSH_KEEP_DAYS": "a month"})
    assert settings_from_env({"FIELDWORK_PUSH_KEEP_DAYS": "0"}).push.keep_days == 0
    assert settings_from_env({}).push.keep_days == 30

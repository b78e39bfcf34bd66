"""The feed's compaction runs on its own: once per interval, by one worker at a time."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, update
from sqlmodel import Session, select

from server.db import write_session
from server.housekeeping import compact_if_due
from server.models import utcnow
from server.settings import SyncSettings, settings_from_env
from sync import SyncChange, record_change


def feed_rows(engine: Engine, scope: str) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(SyncChange).where(SyncChange.scope == scope)).one())


def old_changes(engine: Engine, scope: str) -> None:
    """Ten versions of one job, recorded ten days ago: nine are superseded."""
    with write_session(engine) as session:
        for version in range(1, 11):
            record_change(session, entity="work_order", entity_id=424242, op="upsert", scopes=[scope], version=version)
        session.exec(update(SyncChange).where(SyncChange.scope == scope)  # type: ignore[call-overload]
                     .values(recorded_at=utcnow() - timedelta(days=10)))


def test_the_feed_is_compacted_once_per_interval(engine: Engine) -> None:
    scope = "crew:housekeeping-once"
    old_changes(engine, scope)
    settings = SyncSettings(compact_every_hours=24, keep_days=7)
    now = utcnow() + timedelta(days=400)  # later than any run of another test in this module
    done = compact_if_due(engine, settings, now=now)
    assert done is not None and done.deleted >= 9
    assert feed_rows(engine, scope) == 1
    assert compact_if_due(engine, settings, now=now + timedelta(hours=23)) is None
    assert compact_if_due(engine, settings, now=now + timedelta(hours=25)) is not None
    assert compact_if_due(engine, SyncSettings(compact_every_hours=0), now=now + timedelta(days=30)) is None


def test_two_workers_never_compact_at_once(engine: Engine) -> None:
    old_changes(engine, "crew:housekeeping-race")
    settings = SyncSettings(compact_every_hours=24, keep_days=7)
    now = utcnow() + timedelta(days=800)
    results: list[object] = []
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait()
        results.append(compact_if_due(engine, settings, now=now))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 2
    assert sum(result is not None for result in results) == 1


def test_the_settings_name_a_bad_value() -> None:
    with pytest.raises(ValueError, match="FIELDWORK_SYNC_COMPACT_EVERY_HOURS"):
        settings_from_env({"FIELDWORK_SYNC_COMPACT_EVERY_HOURS": "daily"})
    with pytest.raises(ValueError, match="FIELDWORK_SYNC_KEEP_DAYS"):
        settings_from_env({"FIELDWORK_SYNC_KEEP_DAYS": "-1"})
    assert settings_from_env({"FIELDWORK_SYNC_KEEP_DAYS": "2.5"}).sync.keep_days == 2.5

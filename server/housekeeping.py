"""Upkeep every server does on its own: compacting the sync feed, and deleting finished
push notices.

The feed grows with every change (sync/feed.py); `compact_feed` keeps it small. The push
outbox grows with every notice; `purge_finished` (server/notify/outbox.py) deletes those
finished more than `FIELDWORK_PUSH_KEEP_DAYS` ago, once a day. Every `fieldwork serve`
worker runs `run_housekeeping`, and whichever finds a job due first does it: the time of
its last run is a shared value, taken under a row lock (PostgreSQL) or in SQLite's one
write transaction, so two workers or hosts never do it at once and the work is done once
per interval, not once per worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from server.db import write_session
from server.models import SharedValue, utcnow
from server.notify.outbox import purge_finished
from server.settings import PushSettings, SyncSettings
from sync import compact_feed

__all__ = ["COMPACTED_KEY", "PURGED_KEY", "Compacted", "compact_if_due", "purge_outbox_if_due", "run_housekeeping"]

log = logging.getLogger("fieldwork.housekeeping")

COMPACTED_KEY = "sync:feed-compacted-at"
PURGED_KEY = "push:outbox-purged-at"
PURGE_EVERY_HOURS = 24.0
CHECK_SECONDS = 3600.0  # how often a worker looks whether a job is due


@dataclass(frozen=True, slots=True)
class Compacted:
    at: datetime
    deleted: int


def compact_if_due(engine: Engine, settings: SyncSettings, *, now: datetime | None = None) -> Compacted | None:
    """Compact the feed if no worker did in the last `compact_every_hours`; None if not due."""
    if settings.compact_every_hours <= 0:
        return None
    now = now or utcnow()
    with write_session(engine) as session:
        if not _take_if_due(session, COMPACTED_KEY, timedelta(hours=settings.compact_every_hours), now):
            return None
        deleted = compact_feed(session, before=now - timedelta(days=settings.keep_days))
    return Compacted(at=now, deleted=deleted)


def purge_outbox_if_due(engine: Engine, settings: PushSettings, *, now: datetime | None = None) -> int | None:
    """Delete the push notices finished more than `keep_days` ago, if no worker did in the
    last day: how many; None if not due."""
    if settings.keep_days <= 0:
        return None
    now = now or utcnow()
    with write_session(engine) as session:
        if not _take_if_due(session, PURGED_KEY, timedelta(hours=PURGE_EVERY_HOURS), now):
            return None
    # In batches after the mark: a worker stopped halfway leaves the rest to the next day.
    return purge_finished(engine, before=now - timedelta(days=settings.keep_days))


def _take_if_due(session: Session, key: str, every: timedelta, now: datetime) -> bool:
    """True, and the job's time set to `now`, if its last run was `every` ago or more. The
    row lock makes a second worker wait here, then find the job done."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.exec(insert(SharedValue).values(key=key, value=b"", expires_at=None)
                 .on_conflict_do_nothing(index_elements=["key"]))
    row = session.exec(select(SharedValue).where(SharedValue.key == key).with_for_update()).one()
    last = datetime.fromisoformat(row.value.decode()) if row.value else None
    if last is not None and now - last < every:
        return False
    row.value = now.isoformat().encode()
    session.add(row)
    return True


async def run_housekeeping(engine: Engine, sync: SyncSettings, push: PushSettings, stop: asyncio.Event) -> None:
    """Until `stop`: look every hour (workers spread over the first minutes) whether a job
    is due, and do it in a worker thread."""
    if sync.compact_every_hours <= 0 and push.keep_days <= 0:
        return
    wait = random.uniform(30.0, 300.0)  # noqa: S311 (spreading workers, not secrecy)
    check = min(CHECK_SECONDS, sync.compact_every_hours * 3600) if sync.compact_every_hours > 0 else CHECK_SECONDS
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
            return
        except TimeoutError:
            pass
        wait = check
        try:
            done = await anyio.to_thread.run_sync(compact_if_due, engine, sync)
            if done is not None:
                log.info("sync feed compacted: %d rows deleted", done.deleted)
        except Exception:
            log.exception("compacting the sync feed failed; trying again at the next check")
        try:
            purged = await anyio.to_thread.run_sync(purge_outbox_if_due, engine, push)
            if purged is not None:
                log.info("push outbox: %d finished notices deleted", purged)
        except Exception:
            log.exception("deleting finished push notices failed; trying again at the next check")

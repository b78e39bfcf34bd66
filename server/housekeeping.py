"""Upkeep every server does on its own: compacting the sync feed.

The feed grows with every change (sync/feed.py); `compact_feed` keeps it small. Every
`fieldwork serve` worker runs `run_housekeeping`, and whichever finds the compaction due
first does it: the time of the last one is a shared value, taken under a row lock
(PostgreSQL) or in SQLite's one write transaction, so two workers or hosts never compact
at once and the work is done once per interval, not once per worker.
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
from sqlmodel import select

from server.db import write_session
from server.models import SharedValue, utcnow
from server.settings import SyncSettings
from sync import compact_feed

__all__ = ["COMPACTED_KEY", "Compacted", "compact_if_due", "run_housekeeping"]

log = logging.getLogger("fieldwork.housekeeping")

COMPACTED_KEY = "sync:feed-compacted-at"
CHECK_SECONDS = 3600.0  # how often a worker looks whether the compaction is due


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
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.exec(insert(SharedValue).values(key=COMPACTED_KEY, value=b"", expires_at=None)
                     .on_conflict_do_nothing(index_elements=["key"]))
        # The row lock makes a second worker wait here, then find the compaction done.
        row = session.exec(select(SharedValue).where(SharedValue.key == COMPACTED_KEY).with_for_update()).one()
        last = datetime.fromisoformat(row.value.decode()) if row.value else None
        if last is not None and now - last < timedelta(hours=settings.compact_every_hours):
            return None
        deleted = compact_feed(session, before=now - timedelta(days=settings.keep_days))
        row.value = now.isoformat().encode()
        session.add(row)
    return Compacted(at=now, deleted=deleted)


async def run_housekeeping(engine: Engine, settings: SyncSettings, stop: asyncio.Event) -> None:
    """Until `stop`: look every hour (workers spread over the first minutes) whether the
    feed's compaction is due, and do it in a worker thread."""
    if settings.compact_every_hours <= 0:
        return
    wait = random.uniform(30.0, 300.0)  # noqa: S311 (spreading workers, not secrecy)
    check = min(CHECK_SECONDS, settings.compact_every_hours * 3600)
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
            return
        except TimeoutError:
            pass
        wait = check
        try:
            done = await anyio.to_thread.run_sync(compact_if_due, engine, settings)
        except Exception:
            log.exception("compacting the sync feed failed; trying again at the next check")
            continue
        if done is not None:
            log.info("sync feed compacted: %d rows deleted", done.deleted)

"""Live "pull now" hints for connected devices, from the database change feed.

One poller per process reads which scopes changed in the last minute (so a change that
commits late on PostgreSQL is still noticed) and wakes the streams waiting on them. It
goes through the database, so a change made on any worker or host reaches every client;
it only starts when the first stream connects. Nothing depends on it: clients also pull
on a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import timedelta

import anyio
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from server.models import utcnow
from sync.models import SyncChange

__all__ = ["EventHub"]

log = logging.getLogger("fieldwork.sync")
_WINDOW = timedelta(seconds=60)


class EventHub:
    def __init__(self, engine: Engine, *, interval: float = 1.0) -> None:
        self.engine = engine
        self.interval = interval
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._seen: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        since = utcnow() - _WINDOW
        with Session(self.engine) as session:
            rows = session.exec(
                select(SyncChange.scope, func.max(SyncChange.id), func.count())
                .where(SyncChange.recorded_at >= since)
                .group_by(SyncChange.scope)
            ).all()
        return {scope: (int(top), int(count)) for scope, top, count in rows}

    async def _poll(self) -> None:
        while True:
            try:
                current = await anyio.to_thread.run_sync(self._snapshot)
                for scope, mark in current.items():
                    if self._seen.get(scope) != mark:
                        for waiter in self._waiters.get(scope, ()):
                            waiter.set()
                self._seen = current
            except Exception:  # a passing database error must not end the live stream
                log.exception("change-feed poll failed")
            await asyncio.sleep(self.interval)

    async def wait(self, scopes: list[str], timeout: float) -> bool:
        """True when one of `scopes` changed within `timeout` seconds."""
        if self._task is None or self._task.done():
            self._seen = await anyio.to_thread.run_sync(self._snapshot)
            self._task = asyncio.create_task(self._poll())
        event = asyncio.Event()
        for scope in scopes:
            self._waiters[scope].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            for scope in scopes:
                self._waiters[scope].discard(event)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

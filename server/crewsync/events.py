"""Live "pull now" hints for connected devices, from the database change feed.

The cost of a hint does not grow with the feed:

- PostgreSQL: every transaction that records feed rows also sends `NOTIFY fieldwork_sync`
  with the scopes it touched (`sync.feed.record_changes`); the notice is delivered when the
  transaction commits, so a change that commits late is announced when it becomes visible.
  One listening connection per process wakes the streams waiting on those scopes.
- SQLite: one poller per process reads the feed's highest id (the primary key's last entry)
  every `interval` seconds and, only when it moved, the scopes of the rows after the last
  one it saw (a range of the primary key).

It goes through the database, so a change made on any worker or host reaches every client;
it starts when the first stream connects. Nothing depends on it: clients also pull on a timer.

A stream reads the feed, then waits for news. A change announced in between must not be
lost until the next keep-alive: the hub counts its wake-ups, a stream takes `mark()` before
it reads, and `wait(..., since=mark)` returns at once when one of its scopes woke after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable

import anyio
from sqlalchemy import Engine, func, select

from sync.feed import NOTIFY_CHANNEL
from sync.models import SyncChange

__all__ = ["EventHub"]

log = logging.getLogger("fieldwork.sync")
_CHANGES = SyncChange.__table__  # type: ignore[attr-defined]
_EVERY_SCOPE = "*"


class EventHub:
    def __init__(self, engine: Engine, *, interval: float = 1.0) -> None:
        self.engine = engine
        self.interval = interval
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_id = 0
        self._wakes = 0  # wake-ups so far (see mark)
        self._woke_at: dict[str, int] = {}  # scope → the wake-up that last touched it

    # -- waking ------------------------------------------------------------------------------

    def mark(self) -> int:
        """The hub's count of wake-ups: take it before reading the feed, pass it to `wait`."""
        self._start()
        return self._wakes

    def _wake(self, scopes: Iterable[str]) -> None:
        scopes = set(scopes)
        self._wakes += 1
        for scope in scopes:
            self._woke_at[scope] = self._wakes
        targets = list(self._waiters) if _EVERY_SCOPE in scopes else scopes
        for scope in targets:
            for waiter in self._waiters.get(scope, ()):
                waiter.set()

    def _changed_since(self, scopes: list[str], since: int) -> bool:
        marks = [self._woke_at.get(scope, 0) for scope in scopes] + [self._woke_at.get(_EVERY_SCOPE, 0)]
        return max(marks) > since

    def _start(self) -> None:
        if self.engine.dialect.name == "postgresql":
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._listen, args=(asyncio.get_running_loop(),),
                                                name="sync-listen", daemon=True)
                self._thread.start()
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())

    async def wait(self, scopes: list[str], timeout: float, *, since: int | None = None) -> bool:
        """True when one of `scopes` changed within `timeout` seconds, or after the wake-up
        count `since` (from `mark`) already."""
        self._start()
        if since is not None and self._changed_since(scopes, since):
            return True
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
                if not self._waiters[scope]:
                    del self._waiters[scope]

    # -- PostgreSQL: LISTEN ------------------------------------------------------------------

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        import psycopg

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Anything committed before LISTEN took hold was not announced: wake all once.
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(self._wake, {_EVERY_SCOPE})
                    while not self._stop.is_set():
                        scopes: set[str] = set()
                        for notice in connection.notifies(timeout=1.0):
                            scopes.update(notice.payload.split(","))
                        if scopes and not loop.is_closed():
                            loop.call_soon_threadsafe(self._wake, scopes)
            except Exception:  # a passing database error must not end the live stream
                log.exception("change-feed listener failed; reconnecting")
                self._stop.wait(self.interval)

    # -- SQLite: a poll of the primary key ------------------------------------------------------

    def _top(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.max(_CHANGES.c.id))).scalar() or 0)

    def _changed_scopes(self) -> set[str]:
        with self.engine.connect() as connection:
            top = connection.execute(select(func.max(_CHANGES.c.id))).scalar() or 0
            if top == self._last_id:
                return set()
            if top < self._last_id:  # another database under the same URL (a restore)
                self._last_id = top
                return {_EVERY_SCOPE}
            rows = connection.execute(
                select(_CHANGES.c.scope).where(_CHANGES.c.id > self._last_id, _CHANGES.c.id <= top).distinct()
            ).scalars().all()
            self._last_id = top
            return set(rows)

    async def _poll(self) -> None:
        first = True
        while True:
            try:
                if first:  # streams may have read the feed before the poller knew where it was
                    self._last_id = await anyio.to_thread.run_sync(self._top)
                    self._wake({_EVERY_SCOPE})
                    first = False
                else:
                    scopes = await anyio.to_thread.run_sync(self._changed_scopes)
                    if scopes:
                        self._wake(scopes)
            except Exception:  # a passing database error must not end the live stream
                log.exception("change-feed poll failed")
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join, 3.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

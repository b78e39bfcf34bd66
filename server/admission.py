"""Admission: how many requests one worker serves at once, and what the rest get.

Every request that can touch the database (`/api`, `/sync`, `/open311`) is admitted here
before anything else runs for it (authentication included). At most `threads` requests are
in flight per process; each runs its database work in one of `threads` worker threads with
one pooled connection, so a request that is in never waits for a thread or a connection
held by a request that is not running. The others wait here, on the event loop, in
arrival order:

- at most `queue_limit` of them: one more is answered 503 at once;
- at most `queue_timeout` seconds each: then 503.

Both 503s carry `Retry-After` (an estimate from the recent service time and the queue
length), so clients back off instead of hammering; the queue never outlasts the load by
more than `queue_timeout`. The Server-Sent Events streams (`/sync/v1/events`, `/api/dispatch/live`) and the API
docs hold no database session and are not counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from server.errors import Overloaded
from server.settings import ServerSettings

__all__ = ["ADMITTED_PREFIXES", "Admission", "AdmissionMiddleware"]

ADMITTED_PREFIXES = ("/api/", "/sync/", "/open311/")
_NOT_ADMITTED = ("/sync/v1/events", "/api/dispatch/live", "/api/docs")
_RETRY_AFTER_MAX = 60


class Admission:
    """A fair, bounded waiting room in front of `capacity` request slots (one event loop)."""

    def __init__(self, *, capacity: int, queue_limit: int, queue_timeout: float) -> None:
        self.capacity = capacity
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout
        self._slots = asyncio.Semaphore(capacity)
        self.in_flight = 0
        self.waiting = 0
        self.refused = 0
        self._service_time = 0.05  # seconds a request holds its slot; a moving average

    @classmethod
    def of(cls, settings: ServerSettings) -> Admission:
        return cls(capacity=settings.threads, queue_limit=settings.queue_limit, queue_timeout=settings.queue_timeout)

    def retry_after(self) -> int:
        """Seconds until the queue in front of a new request has likely drained."""
        estimate = (self.waiting + 1) * self._service_time / self.capacity
        return max(1, min(_RETRY_AFTER_MAX, math.ceil(estimate)))

    def _refuse(self, why: str) -> Overloaded:
        self.refused += 1
        retry_after = self.retry_after()
        return Overloaded(f"the server is busy ({why}); try again in {retry_after} s", retry_after=retry_after)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the slots for the duration of the block, or raise Overloaded."""
        if self._slots.locked() and self.waiting >= self.queue_limit:
            raise self._refuse("too many requests waiting")
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise self._refuse(f"waited {self.queue_timeout:g} s for a turn") from None
        finally:
            self.waiting -= 1
        self.in_flight += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()
            self._service_time += (time.monotonic() - started - self._service_time) * 0.05


class AdmissionMiddleware(ASGIMiddleware):
    """Admits HTTP requests under ADMITTED_PREFIXES through `app.state.admission`.

    Added outermost (before authentication): the token check reads the database too.
    """

    scopes = (ScopeType.HTTP,)

    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        path: str = scope.get("path", "")
        return not path.startswith(ADMITTED_PREFIXES) or path.startswith(_NOT_ADMITTED)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        admission: Admission = scope["app"].state.admission
        async with admission.slot():
            await next_app(scope, receive, send)


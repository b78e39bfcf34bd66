"""Encoded answers of the busiest reads, kept while the database says nothing changed.

The work-order list (`GET /api/workorders`) and the dispatcher's board
(`GET /api/dispatch/board`) are read far more often than work orders change. Their JSON
answers are kept here, per process, by everything that decides them:

    (route, what the viewer may see, filters, limit, cursor, the minute, the feed position)

- *what the viewer may see*: "all" for dispatchers and admins, "crew:<id>" for a crew (a
  crew's answer never serves anybody else; the board is for dispatchers and admins only);
- *the minute*: overdue flags and the `overdue` filter follow the clock, so an answer is
  never older than a minute;
- *the feed position*: where the change feed stands (`sync_change`, see sync/feed.py). Every
  change the application makes to a work order records a row in the `dispatch` scope, and
  every change to a crew or a service type (whose names the rows show) one in `reference`,
  in the same transaction as the change, whichever process or host makes it (a server
  worker, the CLI, an import). The position is read from the database on every request, in
  the same statement that checks the signed-in user (server/auth/tokens.py): one round trip
  answers both "who is this" and "is what I hold still true".

A position is the newest (txid, id) of each of the two scopes. On SQLite writers take turns
and ids are handed out in commit order, so a change that commits always moves it. On
PostgreSQL ids come from a sequence before commit: a transaction that took an older id may
commit after a newer one and leave the newest row where it was. So a position there also
carries the feed's horizon (the oldest transaction of this database still running) and an
answer is only kept when the newest rows sit below it ("settled"): every transaction that
can still commit a feed row is then newer than the position, and moves it when it commits.
While a writer runs, answers are built fresh and not kept.

What stays per process (server/sharedstate.py): the cache is rebuilt from the database and
answers only for positions the database gives; nothing here must agree between workers.
A change written by hand in SQL that bypasses the feed is not seen by crews' phones either;
here it shows within a minute.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.concurrency import sync_to_thread
from sqlalchemy import Connection, Engine, select
from sqlalchemy.sql.selectable import ScalarSelect
from sqlmodel import Session

from server.db import statement_session
from sync.feed import _PG_HORIZON
from sync.models import SyncChange

__all__ = [
    "POSITION_PATHS",
    "Position",
    "ReadCache",
    "answer_key",
    "app_cache",
    "cached_json",
    "POSITION_COLUMNS",
    "position_from_row",
    "request_position",
    "settled",
    "viewer_scope",
]

# The routes whose answers are cached: the token check reads the feed position for them.
POSITION_PATHS = frozenset({"/api/workorders", "/api/dispatch/board"})
# Where the token check leaves the position for the handler (the request's scope state).
STATE_KEY = "fieldwork.read_position"
_SCOPES = ("dispatch", "reference")
_C = SyncChange.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Position:
    """Where the change feed stood when a request was checked in."""

    token: tuple[int | None, ...]  # the newest (txid, id) of each scope; part of cache keys
    newest_txid: int  # the newest of their txids (0 on SQLite, -1 for an empty feed)


def _newest(scope: str, column: Any) -> ScalarSelect[Any]:
    return (
        select(column).where(_C.scope == scope).order_by(_C.txid.desc(), _C.id.desc()).limit(1).scalar_subquery()
    )


# Columns to add to a one-row select (the token check's): the feed position, read back by
# `position_from_row`. Each is one probe of the (scope, txid, id) index.
POSITION_COLUMNS = [_newest(scope, column) for scope in _SCOPES for column in (_C.txid, _C.id)]
_HORIZON = select(_PG_HORIZON)


def position_from_row(values: tuple[Any, ...]) -> Position:
    """The Position of the trailing values of a row selected with POSITION_COLUMNS."""
    return Position(tuple(values), max((t for t in values[0::2] if t is not None), default=-1))


def settled(connection: Connection, position: Position) -> bool:
    """May an answer read now on `connection` be kept under `position`?

    On SQLite always: writers take turns, ids are handed out in commit order. On PostgreSQL
    when no transaction of this database that is still running is older than the position's
    newest feed row: every transaction that can still commit a feed row then gets a newer
    txid and moves the position when it commits. Read before the answer's own rows (a
    transaction running then is still running, or has committed, when they are read); the
    lookup of a kept answer needs no such check (it was settled when kept, and any commit
    since would have moved the position).
    """
    if connection.dialect.name != "postgresql":
        return True
    horizon = connection.execute(_HORIZON).scalar_one()
    return position.newest_txid < int(horizon)


def request_position(state: dict[str, Any]) -> Position | None:
    """The position the token check read for this request, if it read one."""
    position = state.get(STATE_KEY)
    return position if isinstance(position, Position) else None


def viewer_scope(role: str, crew_id: int | None) -> str:
    """What a viewer may see of the work-order list, as a cache key part."""
    return f"crew:{crew_id}" if role == "crew" else "all"


def app_cache(state: Any) -> ReadCache:
    """The app's cache (one per app and process), made on first use."""
    cache = state.get("read_cache")
    if cache is None:
        cache = state["read_cache"] = ReadCache()
    return cache


def minute() -> int:
    return int(time.time() // 60)


class ReadCache:
    """Encoded answers by key, least recently used first out, bounded in bytes.

    Single flight: when many requests miss the same key at once (a change just moved the
    position, the minute turned), one of them builds the answer and the others wait for it
    instead of each reading the same rows. Thread-safe: hits are looked up on the event loop,
    answers built in the app's worker threads.
    """

    def __init__(self, max_bytes: int = 32 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[Any, ...], threading.Lock] = {}

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            body = self._entries.get(key)
            if body is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return body

    def _put(self, key: tuple[Any, ...], body: bytes) -> None:
        if len(body) > self.max_bytes // 8:
            return  # a huge page would push out everything else
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._entries[key] = body
            self.size += len(body)
            while self.size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.size -= len(evicted)

    def build(self, key: tuple[Any, ...] | None, make: Callable[[], bytes]) -> bytes:
        """`make()`'s answer, kept under `key` (None: not kept). Call from a worker thread."""
        if key is None:
            return make()
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        try:
            with building:  # the first builds; the rest wait here and then find its answer
                with self._lock:
                    body = self._entries.get(key)
                if body is None:
                    body = make()
                    self._put(key, body)
                return body
        finally:
            with self._lock:
                self._building.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.size = 0


def answer_key(route: str, position: Position | None, *parts: Any) -> tuple[Any, ...] | None:
    """The key of an answer: the route, the feed position, the minute and `parts` (what the
    viewer may see, filters, limit, cursor); None without a position (nothing is cached)."""
    if position is None:
        return None
    return (route, position.token, minute(), *parts)


_encoder = msgspec.json.Encoder()


async def cached_json(
    state: Any, engine: Engine, key: tuple[Any, ...] | None, position: Position | None, read: Callable[[Session], Any]
) -> bytes:
    """The JSON answer under `key` from the app's cache, or else `read`'s value encoded (in a
    worker thread, in a session of one statement) and kept if the position is settled."""
    cache = app_cache(state)
    if key is not None and (body := cache.get(key)) is not None:
        return body  # a hit costs no thread and no session: the token check read the position

    def build() -> bytes:
        with statement_session(engine) as session:
            keep = position is not None and settled(session.connection(), position)
            return cache.build(key if keep else None, lambda: _encoder.encode(read(session)))

    return await sync_to_thread(build)

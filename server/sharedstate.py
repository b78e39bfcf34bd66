"""State that every worker and host must share, kept in the database.

A server runs as several Hypercorn workers, maybe on several hosts; nothing that must
agree between them may live in one process's memory. Two things need it:

- the token signing secret, when FIELDWORK_AUTH_SECRET is not set: created once (by
  whichever worker starts first, race-free) and read by every other worker and after
  every restart, also when the app is started directly through Hypercorn's factory;
- Litestar stores whose counts must hold across workers (the per-address sign-in rate
  limit): `DatabaseStore`, a Litestar `Store` over the same table.

What stays per process, on purpose: caches that are rebuilt from the database (the
district index), the SQLite writer lock (SQLite itself serialises writers across
processes), admission counters (each process guards its own threads and connections).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from litestar.concurrency import sync_to_thread
from litestar.datastructures import State
from litestar.stores.base import NamespacedStore
from sqlalchemy import Engine, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from server.db import read_session, write_session
from server.models import SharedValue, utcnow

__all__ = ["SECRET_KEY", "DatabaseStore", "load_or_create_secret"]

SECRET_KEY = "auth:token-secret"  # noqa: S105 (the row's key, not the secret)


def _upsert(session: Session, key: str, value: bytes, expires_at: datetime | None) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(SharedValue).values(key=key, value=value, expires_at=expires_at)
    session.exec(statement.on_conflict_do_update(
        index_elements=["key"], set_={"value": value, "expires_at": expires_at}
    ))


def _insert_if_absent(session: Session, key: str, value: bytes) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(SharedValue).values(key=key, value=value, expires_at=None)
    session.exec(statement.on_conflict_do_nothing(index_elements=["key"]))


def load_or_create_secret(engine: Engine) -> str:
    """The token signing secret kept in the database; the first caller creates it."""
    with write_session(engine) as session:
        _insert_if_absent(session, SECRET_KEY, secrets.token_urlsafe(48).encode())
    with read_session(engine) as session:
        row = session.get(SharedValue, SECRET_KEY)
        assert row is not None
        return row.value.decode()


def _expiry(expires_in: int | timedelta | None, now: datetime) -> datetime | None:
    if expires_in is None:
        return None
    return now + (expires_in if isinstance(expires_in, timedelta) else timedelta(seconds=expires_in))


class DatabaseStore(NamespacedStore):
    """A Litestar store in the `shared_value` table, for counts that every worker must see.

    Each call is one short transaction in the app's worker threads. Like Litestar's Redis
    store, a read-modify-write by the caller (the rate limiter's get then set) is not
    atomic: two workers racing may each count one request fewer. Bounded and good enough
    for a brake; the per-username sign-in limit is exact (server.auth.users).
    """

    def __init__(self, state: State, namespace: str) -> None:
        self.state = state  # the app's state: its engine exists once the app has started
        self.namespace = namespace

    @property
    def engine(self) -> Engine:
        engine: Engine = self.state.engine
        return engine

    def with_namespace(self, namespace: str) -> DatabaseStore:
        return DatabaseStore(self.state, f"{self.namespace}:{namespace}")

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        await sync_to_thread(self._set, self._key(key), data, expires_in)

    def _set(self, key: str, value: bytes, expires_in: int | timedelta | None) -> None:
        now = utcnow()
        with write_session(self.engine) as session:
            _upsert(session, key, value, _expiry(expires_in, now))
            # Keep the table small: expired rows of this namespace go on every write.
            session.exec(delete(SharedValue).where(
                col(SharedValue.key).startswith(f"{self.namespace}:", autoescape=True),
                col(SharedValue.expires_at) <= now,
            ))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        result: bytes | None = await sync_to_thread(self._get, self._key(key), renew_for)
        return result

    def _get(self, key: str, renew_for: int | timedelta | None) -> bytes | None:
        now = utcnow()
        with read_session(self.engine) as session:
            row = session.get(SharedValue, key)
            if row is None or (row.expires_at is not None and row.expires_at <= now):
                return None
            value, expires_at = row.value, row.expires_at
        if renew_for is not None and expires_at is not None:
            with write_session(self.engine) as session:
                session.exec(update(SharedValue).where(col(SharedValue.key) == key)
                             .values(expires_at=_expiry(renew_for, now)))
        return value

    async def delete(self, key: str) -> None:
        await sync_to_thread(self._delete_where, col(SharedValue.key) == self._key(key))

    async def delete_all(self) -> None:
        await sync_to_thread(
            self._delete_where, col(SharedValue.key).startswith(f"{self.namespace}:", autoescape=True)
        )

    def _delete_where(self, condition: Any) -> None:
        with write_session(self.engine) as session:
            session.exec(delete(SharedValue).where(condition))

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        result: int | None = await sync_to_thread(self._expires_in, self._key(key))
        return result

    def _expires_in(self, key: str) -> int | None:
        with read_session(self.engine) as session:
            row = session.exec(select(SharedValue.expires_at).where(SharedValue.key == key)).first()
        if row is None:
            return None
        return max(0, int((row - utcnow()).total_seconds()))

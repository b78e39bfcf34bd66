"""The engine's own tables (all named ``sync_*``), defined once on `SQLModel.metadata`.

Every datetime is aware UTC. JSON columns hold exactly what the client sent or the
mutator returned, so a rejected or conflicting edit can be reviewed and replayed by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel import Field, SQLModel

__all__ = ["SyncChange", "SyncClient", "SyncConflict", "SyncIdentity", "SyncMutation", "SyncRejection"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class current_txid(FunctionElement):
    """The writing transaction's id on PostgreSQL, 0 elsewhere: the feed row's `txid`.

    An insert-time default (not a DDL default), so migrations stay the same on both
    databases while every insert, ORM or Core, one row or many, gets the right value.
    """

    type = BigInteger()
    inherit_cache = True


@compiles(current_txid)
def _txid_elsewhere(element: current_txid, compiler: Any, **kw: Any) -> str:
    return "0"


@compiles(current_txid, "postgresql")
def _txid_postgresql(element: current_txid, compiler: Any, **kw: Any) -> str:
    return "pg_current_xact_id()::text::bigint"


def _json() -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=True))


class SyncClient(SQLModel, table=True):
    """One device install: who first used it, and the last seq it has had acknowledged."""

    __tablename__ = "sync_client"

    client_id: str = Field(primary_key=True, max_length=64)
    user_key: str = Field(max_length=120, index=True)
    last_seq: int = Field(default=0, sa_type=BigInteger)
    schema_version: int = 0
    app_version: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    # What the server believes of the device's clock: the latest (trusted) time of an edit it
    # sent, and when the server last acknowledged a push of it. Edits are never older.
    device_floor: datetime | None = None
    last_push_at: datetime | None = None


class SyncMutation(SQLModel, table=True):
    """Every mutation at or below a client's last_seq, with the answer it got."""

    __tablename__ = "sync_mutation"
    __table_args__ = (UniqueConstraint("client_id", "seq", name="uq_sync_mutation_client_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(max_length=64)
    seq: int = Field(sa_type=BigInteger)
    mid: str = Field(max_length=64)
    name: str = Field(max_length=64)
    args: dict[str, Any] | None = _json()
    device_ts: datetime | None = None
    received_at: datetime = Field(default_factory=utcnow)
    status: str = Field(max_length=16)  # applied | rejected | conflict
    result: dict[str, Any] | None = _json()
    reason: str | None = Field(default=None, max_length=2000)
    server_version: int | None = None


class SyncChange(SQLModel, table=True):
    """The change feed: one row per (change, scope). Read in (txid, id) order, see feed.py."""

    __tablename__ = "sync_change"
    __table_args__ = (
        Index("ix_sync_change_scope_txid_id", "scope", "txid", "id"),
        # compaction: the later rows of the same entity in the same scope
        Index("ix_sync_change_entity", "scope", "entity", "entity_id", "txid", "id"),
        Index("ix_sync_change_recorded", "recorded_at"),
        {"sqlite_autoincrement": True},  # ids never reused, so a cursor never goes stale
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    txid: int | None = Field(default=None, sa_column=Column(
        BigInteger, nullable=False, server_default="0", default=current_txid()))
    scope: str = Field(max_length=120)
    entity: str = Field(max_length=64)
    entity_id: str = Field(max_length=64)
    op: str = Field(max_length=8)  # upsert | delete | evict
    version: int | None = None
    recorded_at: datetime = Field(default_factory=utcnow)


class SyncConflict(SQLModel, table=True):
    """An edit that lost: the server value stayed, the client's value is kept here."""

    __tablename__ = "sync_conflict"
    __table_args__ = (Index("ix_sync_conflict_status_id", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(default="optimistic", max_length=20)  # optimistic | server_owned | transition | …
    client_id: str = Field(max_length=64)
    user_key: str = Field(default="", max_length=120)
    seq: int = Field(sa_type=BigInteger)
    mid: str = Field(max_length=64)
    name: str = Field(max_length=64)  # the mutation's name
    entity: str = Field(max_length=64)
    entity_id: str = Field(max_length=64)
    field: str = Field(max_length=64)
    base_version: int | None = None
    server_value: Any = _json()
    client_value: Any = _json()
    status: str = Field(default="open", max_length=16)  # open | resolved
    resolution: str | None = Field(default=None, max_length=2000)
    resolved_by: str | None = Field(default=None, max_length=120)
    resolved_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class SyncRejection(SQLModel, table=True):
    """A mutation that could not apply, with its whole payload, for a dispatcher to review."""

    __tablename__ = "sync_rejection"
    __table_args__ = (Index("ix_sync_rejection_status_id", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(max_length=64)
    user_key: str = Field(max_length=120)
    seq: int = Field(sa_type=BigInteger)
    mid: str = Field(max_length=64)
    name: str = Field(max_length=64)
    args: dict[str, Any] | None = _json()
    device_ts: datetime | None = None
    reason: str = Field(max_length=2000)
    status: str = Field(default="open", max_length=16)  # open | resolved
    resolution: str | None = Field(default=None, max_length=2000)
    resolved_by: str | None = Field(default=None, max_length=120)
    resolved_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class SyncIdentity(SQLModel, table=True):
    """One row, created with the database: the name every cursor carries, and the horizon
    below which the feed has been compacted (cursors behind it must re-prime)."""

    __tablename__ = "sync_identity"

    id: int = Field(default=1, primary_key=True)
    database_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    horizon_txid: int = Field(default=0, sa_type=BigInteger)
    horizon_id: int = Field(default=0, sa_type=BigInteger)
    compacted_at: datetime | None = None

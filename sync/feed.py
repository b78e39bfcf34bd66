"""The change feed: what changed, in which scope, in an order a cursor can walk safely.

Writers record one row per (change, scope) in the same transaction as the change itself.
Readers walk the rows of their scopes in (txid, id) order, strictly after their cursor.

Why not just `ORDER BY id`? On PostgreSQL ids come from a sequence when a row is inserted,
not when its transaction commits: a transaction that took id 10 may commit after one that
took id 11, and a reader that has already moved past 11 would never see 10. So every row
also stores its transaction id (`pg_current_xact_id()`, see models.current_txid), and a
reader only takes rows whose txid is below a horizon computed from the statement's own
snapshot, in the same statement: the oldest transaction still running (the snapshot's
xmin). Every transaction below it has ended, and any new one gets a higher txid, so no row
can still appear behind the cursor. A transaction still running holds back everything
from its txid up until it ends: a long writer delays the feed but never loses a change.

One refinement: xmin counts every database of the cluster, and a transaction connected to
another database cannot write our rows, so the horizon skips running txids that
`pg_stat_activity` shows belonging to another database (ours, our own and unknown ones
still count). Another application's long transaction then does not stall this feed.

On SQLite there is a single writer: ids are handed out and committed in the same order, and
txid stays 0.

The cursor is "v2.<database id>.<txid>.<id>", opaque to clients. The database id is created
with the database (`sync_identity`), so a cursor names the feed it walks: a cursor from
another database (another server, a restore of something else), one ahead of anything this
feed has issued (a forged or restored-over counter), or one behind the compaction horizon
is refused with `UnknownCursor` (422): the client drops what it holds and primes again.

Compaction (`compact_feed`) keeps the feed small: below a horizon it deletes every row that
a later row of the same entity in the same scope supersedes, and the deletes and evictions
(a device that primes does not need them), and marks what stays as "send whole" (version
0). Cursors behind the horizon must re-prime.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, exists, func, insert, literal_column, or_, select, tuple_, union_all, update
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from sync.errors import UnknownCursor
from sync.models import SyncChange, SyncIdentity, utcnow

__all__ = [
    "FeedRow", "compact_feed", "current_cursor", "database_id", "ensure_identity", "read_feed", "record_change",
    "record_changes",
]

Op = Literal["upsert", "delete", "evict"]
OPS = frozenset({"upsert", "delete", "evict"})
_CHANGES = SyncChange.__table__  # type: ignore[attr-defined]
_PG_HORIZON: ColumnElement[int] = literal_column("""(
    SELECT least(min(running.txid), pg_current_xact_id_if_assigned()::text::bigint,
                 pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
    FROM (SELECT xip::text::bigint AS txid FROM pg_snapshot_xip(pg_current_snapshot()) AS xip) AS running
    WHERE running.txid % 4294967296 NOT IN (
        SELECT backend_xid::text::bigint FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()))""")
_CURSOR = re.compile(r"v2\.([0-9a-f]{32})\.(\d{1,18})\.(\d{1,18})")
NOTIFY_CHANNEL = "fieldwork_sync"  # PostgreSQL: NOTIFY with the scopes a transaction touched
_IDENTITY = SyncIdentity.__table__  # type: ignore[attr-defined]
_PG_NEXT_TXID: ColumnElement[int] = literal_column("pg_snapshot_xmax(pg_current_snapshot())::text::bigint")


@dataclass(frozen=True, slots=True)
class FeedRow:
    txid: int
    id: int
    scope: str
    entity: str
    entity_id: str
    op: str
    version: int | None


def record_change(session: Session, *, entity: str, entity_id: str | int, op: Op,
                  scopes: Iterable[str], version: int | None = None) -> None:
    """Record one change of `entity` `entity_id`, visible to each of `scopes`."""
    record_changes(session, ((entity, entity_id, op, scope, version) for scope in scopes))


def record_changes(session: Session, rows: Iterable[tuple[str, str | int, Op, str, int | None]]) -> None:
    """Record many changes, rows of (entity, entity_id, op, scope, version), in one statement."""
    now = utcnow()
    params = []
    for entity, entity_id, op, scope, version in rows:
        if op not in OPS:
            raise ValueError(f"op must be one of {sorted(OPS)}, not {op!r}")
        params.append({"scope": scope, "entity": entity, "entity_id": str(entity_id), "op": op,
                       "version": version, "recorded_at": now})
    if not params:
        return
    connection = session.connection()
    connection.execute(insert(_CHANGES), params)  # txid: see current_txid
    if connection.dialect.name == "postgresql":
        # Delivered to listeners when (and only if) this transaction commits.
        scopes = ",".join(sorted({str(p["scope"]) for p in params}))
        connection.execute(select(func.pg_notify(NOTIFY_CHANNEL, scopes if len(scopes) < 7000 else "*")))


def read_feed(session: Session, *, scopes: Sequence[str], cursor: str | None,
              limit: int) -> tuple[list[FeedRow], str, bool]:
    """Up to `limit` rows of `scopes` after `cursor`: (rows, next cursor, has_more).

    UnknownCursor for a cursor that is malformed, from another database, ahead of anything
    this feed issued, or behind its compaction horizon.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    identity = _identity(session)
    after = _check_cursor(session, identity, cursor)
    name = identity.database_id
    if not scopes:
        return [], encode_cursor(name, *after), False
    c = _CHANGES.c
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    # One seek per scope along its (scope, txid, id) index, each already in order and cut
    # at the limit, merged in one statement: the cost follows the rows a device lacks, not
    # the size of the feed (a single `scope IN (...)` range had to sort every row of its
    # scopes past the cursor). PostgreSQL's horizon applies once, to the merged rows: in
    # each scope's (txid, id) order the rows below it come first, so cutting the merge
    # there hides nothing. SQLite's txid is always 0, where `id > ?` seeks and the
    # row-value form does not.
    after_clause = tuple_(c.txid, c.id) > tuple_(*after) if postgres else (c.txid == 0) & (c.id > after[1])
    per_scope = []
    for scope in dict.fromkeys(scopes):
        seek = (
            select(c.txid, c.id, c.scope, c.entity, c.entity_id, c.op, c.version)
            .where(c.scope == scope, after_clause)
            .order_by(c.txid, c.id)
            .limit(limit + 1)
        )
        per_scope.append(select(seek.subquery()))
    merged = union_all(*per_scope).subquery() if len(per_scope) > 1 else per_scope[0].subquery()
    query = select(merged).order_by(merged.c.txid, merged.c.id).limit(limit + 1)
    if postgres:
        query = query.where(merged.c.txid < _PG_HORIZON)
    rows = [FeedRow(*row) for row in connection.execute(query)]
    has_more = len(rows) > limit
    del rows[limit:]
    end = (rows[-1].txid, rows[-1].id) if rows else after
    return rows, encode_cursor(name, *end), has_more


def _identity(session: Session) -> SyncIdentity:
    row = session.connection().execute(select(_IDENTITY).where(_IDENTITY.c.id == 1)).first()
    if row is None:
        raise RuntimeError("the sync feed has no identity: run the database migrations (or ensure_identity)")
    return SyncIdentity(**row._mapping)


def database_id(session: Session) -> str:
    """The name of this database's feed, created with it."""
    return _identity(session).database_id


def ensure_identity(session: Session) -> str:
    """Create the feed's identity if the database has none (the migration creates it)."""
    row = session.connection().execute(select(_IDENTITY.c.database_id).where(_IDENTITY.c.id == 1)).first()
    if row is not None:
        return str(row[0])
    name = uuid.uuid4().hex
    session.connection().execute(insert(_IDENTITY).values(id=1, database_id=name, created_at=utcnow(),
                                                          horizon_txid=0, horizon_id=0))
    return name


def _check_cursor(session: Session, identity: SyncIdentity, cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise UnknownCursor()
    if match[1] != identity.database_id:
        raise UnknownCursor("this cursor is from another database: drop what you hold and pull again without one")
    after = int(match[2]), int(match[3])
    if after < (identity.horizon_txid, identity.horizon_id):
        raise UnknownCursor("this cursor is behind the compacted feed: drop what you hold and pull again without one")
    connection = session.connection()
    top = connection.execute(select(func.max(_CHANGES.c.id))).scalar() or 0
    ahead = after[1] > top
    if connection.dialect.name == "postgresql":
        ahead = ahead or after[0] >= connection.execute(select(_PG_NEXT_TXID)).scalar_one()
    elif after[0] != 0:
        ahead = True  # SQLite's feed has no transaction ids
    if ahead:
        raise UnknownCursor("this cursor is ahead of anything this database issued (another or a restored "
                            "database?): drop what you hold and pull again without one")
    return after


def current_cursor(session: Session, scopes: Sequence[str]) -> str:
    """The cursor at the end of what `scopes` can read now. Take it *before* reading the
    data of a snapshot: a change racing with the snapshot is then delivered again, never lost."""
    c = _CHANGES.c
    name = _identity(session).database_id
    query = select(c.txid, c.id).where(c.scope.in_(list(scopes))).order_by(c.txid.desc(), c.id.desc()).limit(1)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        query = query.where(c.txid < _PG_HORIZON)
    row = connection.execute(query).first() if scopes else None
    return encode_cursor(name, *row) if row else encode_cursor(name, 0, 0)


def compact_feed(session: Session, *, before: datetime) -> int:
    """Compact the feed below the last row recorded before `before`: delete rows that a
    later row of the same entity and scope supersedes, and deletes and evictions. Moves the
    horizon there (cursors behind it must re-prime). Returns the number of rows deleted.

    Run it in a write transaction; on PostgreSQL only rows of ended transactions are
    touched (the same horizon as readers use)."""
    c = _CHANGES.c
    connection = session.connection()
    query = select(c.txid, c.id).where(c.recorded_at < before)
    if connection.dialect.name == "postgresql":
        query = query.where(c.txid < _PG_HORIZON)
    top = connection.execute(query.order_by(c.txid.desc(), c.id.desc()).limit(1)).first()
    if top is None:
        return 0
    horizon = (int(top[0]), int(top[1]))
    identity = _identity(session)
    if horizon <= (identity.horizon_txid, identity.horizon_id):
        return 0
    later = aliased(_CHANGES)
    superseded = exists().where(
        later.c.scope == c.scope, later.c.entity == c.entity, later.c.entity_id == c.entity_id,
        tuple_(later.c.txid, later.c.id) > tuple_(c.txid, c.id),
    )
    deleted = connection.execute(
        delete(_CHANGES).where(tuple_(c.txid, c.id) <= tuple_(*horizon), or_(c.op != "upsert", superseded))
    ).rowcount
    # Only a device that primes reads below the horizon: what it gets there, it gets whole
    # (version 0 tells a delta loader to send everything).
    connection.execute(update(_CHANGES).where(tuple_(c.txid, c.id) <= tuple_(*horizon), c.version != 0)
                       .values(version=0))
    connection.execute(update(_IDENTITY).where(_IDENTITY.c.id == 1).values(
        horizon_txid=horizon[0], horizon_id=horizon[1], compacted_at=utcnow()))
    return int(deleted or 0)


def encode_cursor(name: str, txid: int, row_id: int) -> str:
    return f"v2.{name}.{txid}.{row_id}"

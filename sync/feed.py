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
txid stays 0. The cursor is "v1.<txid>.<id>", opaque to clients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, insert, literal_column, select, tuple_
from sqlmodel import Session

from sync.errors import UnknownCursor
from sync.models import SyncChange, utcnow

__all__ = ["FeedRow", "current_cursor", "read_feed", "record_change", "record_changes"]

Op = Literal["upsert", "delete", "evict"]
OPS = frozenset({"upsert", "delete", "evict"})
_CHANGES = SyncChange.__table__  # type: ignore[attr-defined]
_PG_HORIZON = literal_column("""(
    SELECT least(min(running.txid), pg_current_xact_id_if_assigned()::text::bigint,
                 pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
    FROM (SELECT xip::text::bigint AS txid FROM pg_snapshot_xip(pg_current_snapshot()) AS xip) AS running
    WHERE running.txid % 4294967296 NOT IN (
        SELECT backend_xid::text::bigint FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()))""")
_CURSOR = re.compile(r"v1\.(\d{1,18})\.(\d{1,18})")


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
    session.connection().execute(insert(_CHANGES), params)  # txid: see current_txid


def read_feed(session: Session, *, scopes: Sequence[str], cursor: str | None,
              limit: int) -> tuple[list[FeedRow], str, bool]:
    """Up to `limit` rows of `scopes` after `cursor`: (rows, next cursor, has_more).

    UnknownCursor for a cursor that is malformed or points past the end of this feed.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    after = parse_cursor(cursor)
    if not scopes:
        return [], encode_cursor(*after), False
    c = _CHANGES.c
    query = (
        select(c.txid, c.id, c.scope, c.entity, c.entity_id, c.op, c.version)
        .where(c.scope.in_(list(scopes)), tuple_(c.txid, c.id) > tuple_(*after))
        .order_by(c.txid, c.id)
        .limit(limit + 1)
    )
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        query = query.where(c.txid < _PG_HORIZON)
    rows = [FeedRow(*row) for row in connection.execute(query)]
    if not rows and after[1] > (connection.execute(select(func.max(c.id))).scalar() or 0):
        raise UnknownCursor("this cursor is past the end of the feed (another or a restored "
                            "database?): pull again without one")
    has_more = len(rows) > limit
    del rows[limit:]
    end = (rows[-1].txid, rows[-1].id) if rows else after
    return rows, encode_cursor(*end), has_more


def current_cursor(session: Session, scopes: Sequence[str]) -> str:
    """The cursor at the end of what `scopes` can read now. Take it *before* reading the
    data of a snapshot: a change racing with the snapshot is then delivered again, never lost."""
    c = _CHANGES.c
    query = select(c.txid, c.id).where(c.scope.in_(list(scopes))).order_by(c.txid.desc(), c.id.desc()).limit(1)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        query = query.where(c.txid < _PG_HORIZON)
    row = connection.execute(query).first() if scopes else None
    return encode_cursor(*row) if row else encode_cursor(0, 0)


def encode_cursor(txid: int, row_id: int) -> str:
    return f"v1.{txid}.{row_id}"


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise UnknownCursor()
    return int(match[1]), int(match[2])

"""The feed under concurrent writers: a change that commits late is never skipped.

Writers commit overlapping, deliberately slow transactions (insert, sleep, commit), and a
few stragglers take their ids early and commit long after others; pullers page the feed
all along. Every puller must see every committed change exactly once, in one stable order.
The same race run with a naive `ORDER BY id` reader shows why the txid order exists: on
PostgreSQL it misses the late commits; on SQLite (one writer) it happens not to.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from server.db import read_session, write_session
from sync import FeedRow, SyncChange, read_feed, record_change, record_changes
from tests.conftest import PG_ADMIN_URL

Reader = Callable[..., tuple[list[FeedRow], str, bool]]
WRITERS, TRANSACTIONS, STRAGGLERS, PULLERS = 5, 20, 3, 3


def naive_read_feed(session: Session, *, scopes: list[str], cursor: str | None, limit: int):
    """What not to do: a bare id is not commit-ordered on PostgreSQL."""
    c = SyncChange.__table__.c  # type: ignore[attr-defined]
    after = int(cursor or 0)
    rows = [FeedRow(*row) for row in session.connection().execute(
        select(c.txid, c.id, c.scope, c.entity, c.entity_id, c.op, c.version)
        .where(c.scope.in_(scopes), c.id > after).order_by(c.id).limit(limit + 1))]
    more = len(rows) > limit
    del rows[limit:]
    return rows, str(rows[-1].id if rows else after), more


@dataclass
class Race:
    committed: set[str] = field(default_factory=set)
    seen: list[list[str]] = field(default_factory=list)
    feed_order: list[str] = field(default_factory=list)  # the final read, in (txid, id) order
    commit_order: list[str] = field(default_factory=list)
    late: int = 0  # changes that committed after a change with a higher id


def run_race(engine: Engine, reader: Reader, *, drain_seconds: float) -> Race:
    scope, race, lock = f"race-{uuid.uuid4().hex[:8]}", Race(), threading.Lock()
    writing_done = threading.Event()
    race.seen = [[] for _ in range(PULLERS)]

    def commit(ids: list[str], hold: float) -> None:
        with write_session(engine) as session:
            record_changes(session, [("thing", i, "upsert", scope, None) for i in ids])
            time.sleep(hold)
        with lock:
            race.committed.update(ids)
            race.commit_order += ids

    def writer(w: int) -> None:
        rnd = random.Random(w)
        for k in range(TRANSACTIONS):
            commit([f"w{w}-{k}-{j}" for j in range(rnd.randint(1, 3))], rnd.uniform(0, 0.012))

    def straggler(s: int) -> None:
        time.sleep(0.05 + 0.1 * s)
        commit([f"late{s}"], 0.25)

    def puller(p: int) -> None:
        cursor: str | None = None
        deadline = None
        while True:
            finished = writing_done.is_set()  # before the read: then the read sees every commit
            with read_session(engine) as session:
                rows, cursor, more = reader(session, scopes=[scope], cursor=cursor, limit=7)
            race.seen[p] += [row.entity_id for row in rows]
            if finished and not rows and not more:
                deadline = deadline or time.monotonic() + drain_seconds
                if len(race.seen[p]) >= len(race.committed) or time.monotonic() > deadline:
                    return  # (an unrelated long transaction on the cluster may hold the feed back)
                time.sleep(0.02)
            elif not rows:
                time.sleep(0.001)

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    writers += [threading.Thread(target=straggler, args=(s,)) for s in range(STRAGGLERS)]
    pullers = [threading.Thread(target=puller, args=(p,)) for p in range(PULLERS)]
    for thread in pullers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    writing_done.set()
    for thread in pullers:
        thread.join()
    c = SyncChange.__table__.c  # type: ignore[attr-defined]
    with read_session(engine) as session:  # every writer has committed: read the table itself
        rows = session.connection().execute(
            select(c.entity_id, c.id).where(c.scope == scope).order_by(c.txid, c.id)).all()
    race.feed_order = [row.entity_id for row in rows]
    ids, highest = {row.entity_id: row.id for row in rows}, 0
    for entity_id in race.commit_order:
        race.late += ids[entity_id] < highest
        highest = max(highest, ids[entity_id])
    return race


def test_every_puller_sees_every_committed_change_once_in_one_order(sync_db: Engine, db_kind: str) -> None:
    race = run_race(sync_db, read_feed, drain_seconds=30)
    assert len(race.committed) > WRITERS * TRANSACTIONS
    assert set(race.feed_order) == race.committed
    for seen in race.seen:
        assert len(seen) == len(set(seen)), "a change was delivered twice"
        assert set(seen) == race.committed, f"missed: {sorted(race.committed - set(seen))}"
        assert seen == race.feed_order
    if db_kind == "postgres":  # the race did produce commits out of id order
        assert race.late >= STRAGGLERS
    print(f"\n[{db_kind}] {len(race.committed)} changes, {race.late} committed out of id order, "
          f"{PULLERS} pullers saw all of them once")


def test_a_naive_id_order_reader_misses_late_commits_on_postgresql(sync_db: Engine, db_kind: str) -> None:
    race = run_race(sync_db, naive_read_feed, drain_seconds=0.2)
    misses = [len(race.committed - set(seen)) for seen in race.seen]
    print(f"\n[{db_kind}] naive ORDER BY id reader: misses per puller {misses} "
          f"of {len(race.committed)} changes")
    if db_kind == "postgres":
        assert all(missed >= 1 for missed in misses)
    else:  # SQLite's single writer commits in id order: the naive reader happens to be right
        assert misses == [0] * PULLERS


def test_a_running_writer_holds_the_feed_back_but_another_databases_does_not(sync_db: Engine, db_kind: str) -> None:
    if db_kind != "postgres":
        pytest.skip("SQLite has a single writer: nothing runs concurrently to hold back")
    scope = f"hold-{uuid.uuid4().hex[:8]}"

    def add(session: Session, name: str) -> None:
        record_change(session, entity="thing", entity_id=name, op="upsert", scopes=[scope])

    def readable(cursor: str | None = None) -> list[str]:
        with read_session(sync_db) as session:
            return [row.entity_id for row in read_feed(session, scopes=[scope], cursor=cursor, limit=100)[0]]

    with write_session(sync_db) as session:
        add(session, "first")
    with psycopg.connect(PG_ADMIN_URL) as elsewhere:  # a long transaction in another database
        elsewhere.execute("SELECT pg_current_xact_id()")
        with write_session(sync_db) as session:
            add(session, "beside-elsewhere")
        assert readable() == ["first", "beside-elsewhere"]
        slow = Session(sync_db)
        add(slow, "slow")  # takes its txid and id now, commits last
        with write_session(sync_db) as session:
            add(session, "quick")
        assert readable() == ["first", "beside-elsewhere"]  # "quick" is held back behind "slow"
        slow.commit()
        slow.close()
        assert readable() == ["first", "beside-elsewhere", "slow", "quick"]

"""Pull and the change feed: paging, scopes, collapsing, loaders, cursors."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from sqlalchemy import event

from sync import (
    ClientForbidden,
    InvalidRequest,
    PullRequest,
    SyncChange,
    UnknownCursor,
    current_cursor,
    read_feed,
    record_change,
    record_changes,
)
from tests.sync.toy import ToyTicket, make_engine

ENGINE = make_engine()


@pytest.fixture
def scope() -> str:
    return f"crew:{uuid.uuid4().hex[:8]}"


def pull_all(tx, client_id, scopes, *, actor="dispatcher", limit=3, cursor=None):
    changes, pages = [], 0
    while True:
        with tx() as session:
            response = ENGINE.pull(session, user_key="u", actor=actor, scopes=scopes,
                                   request=PullRequest(client_id=client_id, cursor=cursor, limit=limit))
        changes += response.changes
        cursor, pages = response.cursor, pages + 1
        assert len(response.changes) <= limit
        if not response.has_more:
            return changes, cursor, pages


def walk(tx, scopes, limit, expected, *, timeout=20.0):  # type: ignore[no-untyped-def]
    """Page through the feed until `expected` rows came: (their entity ids, the cursor).

    On PostgreSQL the horizon may hold rows back for a moment: a transaction of another
    test database that is in the read's snapshot and ends before the read looks at
    pg_stat_activity counts as running. The reader then gets them from the same cursor on a
    later read, in order and once, as a phone does."""
    seen, cursor, deadline = [], None, time.monotonic() + timeout
    while True:
        with tx() as session:
            rows, cursor, more = read_feed(session, scopes=scopes, cursor=cursor, limit=limit)
        assert len(rows) <= limit
        seen += [row.entity_id for row in rows]
        if more:
            continue
        if len(seen) >= expected or time.monotonic() > deadline:
            return seen, cursor
        time.sleep(0.05)


def eventually(check, timeout=20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def test_paging_walks_every_change_exactly_once(tx, scope) -> None:
    with tx() as session:
        record_changes(session, [("thing", i, "delete", scope, i) for i in range(20)])
    for limit in (1, 3, 7, 20, 1000):
        seen, cursor = walk(tx, [scope], limit, 20)
        assert seen == [str(i) for i in range(20)]

        def at_the_end(cursor: str = cursor) -> bool:  # the end of the feed is where paging ended
            with tx() as session:
                return current_cursor(session, [scope]) == cursor

        assert eventually(at_the_end)
        with tx() as session:
            assert read_feed(session, scopes=[scope], cursor=cursor, limit=5)[:3:2] == ([], False)


def test_scopes_filter_and_delete_and_evict_pass_through(tx, client_id, scope) -> None:
    other = scope + "-other"
    with tx() as session:
        record_change(session, entity="toy_ticket", entity_id="t1", op="delete", scopes=[scope, other], version=4)
        record_change(session, entity="toy_ticket", entity_id="t2", op="evict", scopes=[scope])
        record_change(session, entity="toy_ticket", entity_id="t3", op="delete", scopes=[other])
    changes, _, _ = pull_all(tx, client_id, [scope])
    assert [(c.op, c.id, c.version, c.data) for c in changes] == [("delete", "t1", 4, None), ("evict", "t2", None, None)]
    both, _, _ = pull_all(tx, client_id, [scope, other], limit=10)
    assert [c.id for c in both] == ["t1", "t2", "t3"]  # t1 once, though it is in both scopes
    assert pull_all(tx, client_id, [])[0] == []


def test_upserts_are_loaded_collapsed_and_skipped_when_not_visible(tx, client_id, scope) -> None:
    ids = [uuid.uuid4().hex for _ in range(3)]
    with tx() as session:
        session.add(ToyTicket(id=ids[0], title="mine", crew="a", version=3))
        session.add(ToyTicket(id=ids[1], title="theirs", crew="b"))
        session.flush()
        for version in (1, 2, 3):  # three changes of one entity collapse to one
            record_change(session, entity="toy_ticket", entity_id=ids[0], op="upsert", scopes=[scope], version=version)
        record_change(session, entity="toy_ticket", entity_id=ids[1], op="upsert", scopes=[scope])
        record_change(session, entity="toy_ticket", entity_id=ids[2], op="upsert", scopes=[scope])  # gone
        record_change(session, entity="toy_ticket", entity_id=ids[1], op="delete", scopes=[scope])
    changes, _, _ = pull_all(tx, client_id, [scope], actor="a", limit=100)
    assert [(c.op, c.id, c.version, c.data) for c in changes] == [
        ("upsert", ids[0], 3, {"title": "mine", "status": "new", "crew": "a"}),
        ("delete", ids[1], None, None),
    ]
    hidden, _, _ = pull_all(tx, client_id, [scope], actor="b", limit=100)  # crew b may not see ids[0]
    assert [(c.op, c.id) for c in hidden] == [("delete", ids[1])]


@pytest.mark.parametrize("cursor", ["", "garbage", "v1.1", "v2.0.0", "v1.-1.0", "v1.0.0 ", "v1.0.99999999999",
                                    "v1.0.1", "v2." + "a" * 32 + ".0.0", "v2." + "a" * 32 + ".0.0 "])
def test_malformed_or_foreign_cursors_are_unknown(tx, client_id, scope, cursor) -> None:
    with pytest.raises(UnknownCursor) as raised, tx() as session:
        ENGINE.pull(session, user_key="u", actor=None, scopes=[scope],
                    request=PullRequest(client_id=client_id, cursor=cursor))
    assert (raised.value.status_code, raised.value.field) == (422, "cursor")


def test_pull_binds_the_client_and_checks_the_request(tx, client_id, scope) -> None:
    pull_all(tx, client_id, [scope])
    with pytest.raises(ClientForbidden), tx() as session:
        ENGINE.pull(session, user_key="someone else", actor=None, scopes=[scope],
                    request=PullRequest(client_id=client_id))
    with pytest.raises(InvalidRequest) as raised, tx() as session:
        ENGINE.pull(session, user_key="u", actor=None, scopes=[scope],
                    request=PullRequest(client_id=client_id, limit=1001))
    assert raised.value.field == "limit"


def test_record_change_refuses_an_unknown_op(tx) -> None:
    with pytest.raises(ValueError, match="op must be one of"), tx() as session:
        record_change(session, entity="x", entity_id=1, op="rename", scopes=["s"])  # type: ignore[arg-type]


def test_every_insert_path_stamps_the_writing_transaction(tx, scope, db_kind) -> None:
    with tx() as session:
        session.add(SyncChange(scope=scope, entity="thing", entity_id="orm", op="upsert"))
        session.flush()
        record_change(session, entity="thing", entity_id="core", op="upsert", scopes=[scope])
        record_changes(session, [("thing", "bulk", "upsert", scope, None)] * 2)
        txid = session.connection().exec_driver_sql(
            "SELECT pg_current_xact_id()::text::bigint" if db_kind == "postgres" else "SELECT 0").scalar()
    with tx() as session:
        rows, _, _ = read_feed(session, scopes=[scope], cursor=None, limit=10)
    assert [(row.entity_id, row.txid) for row in rows] == [(n, txid) for n in ("orm", "core", "bulk", "bulk")]
    assert txid > 0 or db_kind == "sqlite"


def test_several_scopes_page_in_feed_order_exactly_once(tx) -> None:
    mine, reference = f"crew:{uuid.uuid4().hex[:8]}", f"ref:{uuid.uuid4().hex[:8]}"
    with tx() as session:  # interleaved: the merge of the per-scope seeks must keep feed order
        record_changes(session, [("thing", i, "delete", mine if i % 3 else reference, i) for i in range(30)])
    whole, _ = walk(tx, [mine, reference], 1000, 30)
    assert whole == [str(i) for i in range(30)]
    for limit in (1, 2, 4, 29, 30):
        seen, _ = walk(tx, [reference, mine, mine], limit, 30)
        assert seen == whole


def test_a_pull_seeks_its_scopes_instead_of_reading_the_feed(tx, sync_db, scope) -> None:
    """The feed's cost must follow what a device lacks: each scope is read along its index
    from the cursor on, never by scanning the table (plans taken with sequential scans off
    on PostgreSQL, whose planner would rightly scan a table this small)."""
    other = f"crew:{uuid.uuid4().hex[:8]}"
    with tx() as session:
        record_changes(session, [("thing", i, "delete", scope if i % 2 else other, i) for i in range(40)])
        _, cursor, _ = read_feed(session, scopes=[scope, other], cursor=None, limit=10)
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor_, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "sync_change" in statement and "UNION ALL" in statement.upper():
            statements.append((statement, parameters))

    event.listen(sync_db, "before_cursor_execute", keep)
    try:
        with tx() as session:
            read_feed(session, scopes=[scope, other], cursor=cursor, limit=10)
    finally:
        event.remove(sync_db, "before_cursor_execute", keep)
    assert len(statements) == 1, "the scopes are read in one statement"
    statement, parameters = statements[0]
    with sync_db.connect() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        if sync_db.dialect.name == "sqlite":
            plan = " | ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters))
            seeks = re.findall(r"SEARCH sync_change USING (?:COVERING )?INDEX ix_sync_change_scope_txid_id "
                               r"\(scope=\? AND txid=\? AND (?:row)?id>\?\)", plan)
            assert len(seeks) == 2 and "SCAN sync_change" not in plan, plan
        else:
            with raw.cursor() as cur:
                cur.execute("SET enable_seqscan = off")
                cur.execute(f"EXPLAIN {statement}", parameters)
                plan = " | ".join(row[0] for row in cur.fetchall())
                cur.execute("RESET enable_seqscan")
            assert "Seq Scan on sync_change" not in plan, plan
            assert len(re.findall(r"Index (?:Only )?Scan using ix_sync_change_scope_txid_id", plan)) == 2, plan
            assert "ROW(sync_change.txid, sync_change.id) >" in plan or "ROW(txid, id) >" in plan, plan

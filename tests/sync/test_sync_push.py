"""Push: each mutation applied once, in order, in its own savepoint; nothing dropped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import select

from sync import (
    ClientForbidden,
    InvalidRequest,
    Mutation,
    PayloadTooLarge,
    PushRequest,
    SyncClient,
    SyncConflict,
    SyncMutation,
    SyncRejection,
    UnsupportedSchemaVersion,
)
from tests.sync.toy import RUNS, ToyNote, ToyTicket, make_engine, note_count

ENGINE = make_engine()


def note(seq: int, ticket_id: str, text: str = "filled", **extra: Any) -> Mutation:
    args = {"ticket_id": ticket_id, "note_id": f"n-{uuid.uuid4().hex}", "text": text, **extra}
    return Mutation(seq=seq, mid=str(uuid.uuid4()), name="add_note", args=args,
                    device_ts=datetime(2026, 11, 26, 9, 30, tzinfo=UTC))


def push(tx, client_id: str, mutations: list[Mutation], *, user: str = "crew-a", engine=ENGINE, **kw: Any):
    with tx() as session:
        return engine.push(session, user_key=user, actor=user,
                           request=PushRequest(client_id=client_id, schema_version=kw.pop("schema_version", 1),
                                               mutations=mutations, **kw))


def last_seq(tx, client_id: str) -> int:
    with tx() as session:
        client = session.get(SyncClient, client_id)
        return client.last_seq if client else 0


def test_applied_then_duplicates_answered_from_stored_results(tx, client_id, ticket) -> None:
    batch = [note(1, ticket.id), note(2, ticket.id)]
    first = push(tx, client_id, batch)
    assert first.last_seq == 2 and first.expected_seq is None
    assert [r.status for r in first.results] == ["applied", "applied"]
    assert [r.server_version for r in first.results] == [2, 3]
    assert first.results[0].result == {"note_id": batch[0].args["note_id"]}

    again = push(tx, client_id, [*batch, note(3, ticket.id)])  # the response was lost: resend
    assert [r.status for r in again.results] == ["duplicate", "duplicate", "applied"]
    for before, after in zip(first.results, again.results[:2], strict=True):
        assert (after.server_version, after.result, after.original_status) == \
               (before.server_version, before.result, "applied")
    with tx() as session:
        assert [note_count(session, m.args["note_id"]) for m in batch] == [1, 1]
        assert session.get(ToyTicket, ticket.id).version == 4


def test_gap_answers_expected_seq_and_applies_nothing_after_it(tx, client_id, ticket) -> None:
    push(tx, client_id, [note(1, ticket.id)])
    later = [note(3, ticket.id), note(4, ticket.id)]
    response = push(tx, client_id, later)
    assert (response.last_seq, response.expected_seq, response.results) == (1, 2, [])
    response = push(tx, client_id, [note(2, ticket.id), note(4, ticket.id)])  # a gap mid-batch
    assert (response.last_seq, response.expected_seq) == (2, 3)
    assert [r.seq for r in response.results] == [2]
    with tx() as session:
        assert [note_count(session, m.args["note_id"]) for m in later] == [0, 0]


def test_rejections_advance_last_seq_and_keep_the_whole_payload(tx, client_id, ticket) -> None:
    unknown = Mutation(seq=1, mid="m-unknown", name="paint_it_blue", args={"colour": "blue"})
    bad_args = Mutation(seq=2, mid="m-bad", name="add_note", args={"ticket_id": ticket.id, "note_id": "x", "text": 42})
    too_long = note(3, ticket.id, text="x" * 201)
    refused = note(4, ticket.id, text="refuse")
    response = push(tx, client_id, [unknown, bad_args, too_long, refused, note(5, ticket.id)])
    assert response.last_seq == 5
    assert [r.status for r in response.results] == ["rejected"] * 4 + ["applied"]
    reasons = [r.reason for r in response.results[:4]]
    assert reasons[0] == "unknown mutation 'paint_it_blue'"
    assert "Expected `str`, got `int` - at `$.text`" in reasons[1]
    assert "length <= 200" in reasons[2] and "$.text" in reasons[2]
    assert reasons[3] == "refused by the toy"
    with tx() as session:
        rows = session.exec(select(SyncRejection).where(SyncRejection.client_id == client_id)
                            .order_by(SyncRejection.seq)).all()
        assert [(r.seq, r.mid, r.name, r.args, r.reason, r.status, r.user_key) for r in rows] == [
            (m.seq, m.mid, m.name, m.args, reason, "open", "crew-a")
            for m, reason in zip([unknown, bad_args, too_long, refused], reasons, strict=True)]
        assert rows[2].device_ts == too_long.device_ts
        assert note_count(session, refused.args["note_id"]) == 0  # rolled back with its savepoint
    again = push(tx, client_id, [unknown])
    assert (again.results[0].status, again.results[0].original_status, again.results[0].reason) == \
           ("duplicate", "rejected", reasons[0])


def test_an_exception_in_a_mutator_rolls_back_only_that_mutation(tx, client_id, ticket, caplog) -> None:
    good, boom, after = note(1, ticket.id), note(2, ticket.id, text="explode"), note(3, ticket.id)
    response = push(tx, client_id, [good, boom, after])
    assert [r.status for r in response.results] == ["applied", "rejected", "applied"]
    assert response.results[1].reason == "server error: RuntimeError"
    assert "boom" in caplog.text  # logged with its traceback
    with tx() as session:
        assert [note_count(session, m.args["note_id"]) for m in (good, boom, after)] == [1, 0, 1]
        assert session.get(ToyTicket, ticket.id).version == 3  # two bumps, not three
        assert session.get(SyncClient, client_id).last_seq == 3


def test_a_run_is_applied_at_once_and_one_by_one_when_any_of_it_fails(tx, client_id, ticket) -> None:
    RUNS.clear()
    clean = [note(1, ticket.id), note(2, ticket.id), note(3, ticket.id)]
    assert [r.server_version for r in push(tx, client_id, clean).results] == [2, 3, 4]
    assert RUNS == [3]
    mixed = [note(4, ticket.id), note(5, ticket.id, text="refuse"), note(6, ticket.id, text="explode"),
             note(7, ticket.id), note(8, "no-such-ticket")]
    response = push(tx, client_id, mixed)
    assert RUNS == [3]  # the mixed run went one by one, each with its own answer
    assert [r.status for r in response.results] == ["applied", "rejected", "rejected", "applied", "rejected"]
    assert [r.reason for r in response.results][1:3] == ["refused by the toy", "server error: RuntimeError"]
    with tx() as session:
        assert [note_count(session, m.args["note_id"]) for m in clean + mixed] == [1, 1, 1, 1, 0, 0, 1, 0]
        assert session.get(ToyTicket, ticket.id).version == 6
        rows = session.exec(select(SyncMutation).where(SyncMutation.client_id == client_id)
                            .order_by(SyncMutation.seq)).all()
        assert [(r.seq, r.status) for r in rows] == [(1, "applied"), (2, "applied"), (3, "applied"),
                                                     (4, "applied"), (5, "rejected"), (6, "rejected"),
                                                     (7, "applied"), (8, "rejected")]


def test_oversized_args_reject_that_mutation_only(tx, client_id, ticket) -> None:
    engine = make_engine(max_args_bytes=200)
    big = note(1, ticket.id, text="y" * 190)
    response = push(tx, client_id, [big, note(2, ticket.id)], engine=engine)
    assert [r.status for r in response.results] == ["rejected", "applied"]
    assert response.results[0].reason.startswith("args too large")
    with tx() as session:
        kept = session.exec(select(SyncRejection).where(SyncRejection.mid == big.mid)).one()
        assert kept.args == big.args


def test_conflicts_are_recorded_and_reported(tx, client_id, ticket) -> None:
    title = lambda seq, base, text: Mutation(seq=seq, mid=uuid.uuid4().hex, name="set_title",  # noqa: E731
                                             args={"ticket_id": ticket.id, "base_version": base, "title": text})
    status = lambda seq, to: Mutation(seq=seq, mid=uuid.uuid4().hex, name="set_status",  # noqa: E731
                                      args={"ticket_id": ticket.id, "status": to})
    crew = Mutation(seq=4, mid="m-crew", name="set_crew", args={"ticket_id": ticket.id, "crew": "b"})
    response = push(tx, client_id, [title(1, 1, "Deep pothole"), title(2, 1, "Shallow pothole"),
                                    status(3, "cancelled"), crew, status(5, "completed"), status(6, "new")])
    assert [r.status for r in response.results] == ["applied", "conflict", "applied", "conflict",
                                                    "conflict", "rejected"]
    assert response.results[5].reason == "cannot go from cancelled to new"
    with tx() as session:
        saved = session.get(ToyTicket, ticket.id)
        assert (saved.title, saved.status, saved.crew) == ("Deep pothole", "cancelled", "a")
        rows = session.exec(select(SyncConflict).where(SyncConflict.client_id == client_id)
                            .order_by(SyncConflict.seq)).all()
        assert [(c.seq, c.kind, c.field, c.server_value, c.client_value, c.base_version) for c in rows] == [
            (2, "optimistic", "title", "Deep pothole", "Shallow pothole", 1),
            (4, "server_owned", "crew", "a", "b", None),
            (5, "transition", "status", "cancelled", "completed", None),
        ]
        stored = session.exec(select(SyncMutation.status).where(SyncMutation.client_id == client_id)
                              .order_by(SyncMutation.seq)).all()
        assert stored == [r.status for r in response.results]


def test_a_different_mutation_reusing_an_acknowledged_seq_is_kept_for_review(tx, client_id, ticket) -> None:
    push(tx, client_id, [note(1, ticket.id)])
    impostor = note(1, ticket.id)
    response = push(tx, client_id, [impostor])
    assert response.results[0].status == "rejected" and "already used" in response.results[0].reason
    with tx() as session:
        assert session.exec(select(SyncRejection).where(SyncRejection.mid == impostor.mid)).one().args == impostor.args


@pytest.mark.parametrize(("build", "error", "field"), [
    (lambda t: {"mutations": [note(2, t), note(2, t)]}, InvalidRequest, "mutations[1].seq"),
    (lambda t: {"mutations": [note(3, t), note(1, t)]}, InvalidRequest, "mutations[1].seq"),
    (lambda t: {"mutations": [note(0, t)]}, InvalidRequest, "mutations[0].seq"),
    (lambda t: {"mutations": [Mutation(seq=1, mid="m" * 65, name="add_note", args={})]}, InvalidRequest,
     "mutations[0].mid"),
    (lambda t: {"client_id": "short"}, InvalidRequest, "client_id"),
    (lambda t: {"client_id": "bad client id!"}, InvalidRequest, "client_id"),
    (lambda t: {"schema_version": 2}, UnsupportedSchemaVersion, "schema_version"),
    (lambda t: {"mutations": [note(i, t) for i in range(1, 502)]}, PayloadTooLarge, "mutations"),
])
def test_refused_envelopes_write_nothing(tx, client_id, ticket, build, error, field) -> None:
    request = {"client_id": client_id, "schema_version": 1, "mutations": [note(1, ticket.id)], **build(ticket.id)}
    with pytest.raises(error) as raised, tx() as session:
        ENGINE.push(session, user_key="crew-a", actor=None, request=PushRequest(**request))
    assert raised.value.field == field
    assert raised.value.status_code == {InvalidRequest: 422, UnsupportedSchemaVersion: 409, PayloadTooLarge: 413}[error]
    with tx() as session:
        assert session.get(SyncClient, request["client_id"]) is None
        assert session.exec(select(ToyNote).where(ToyNote.ticket_id == ticket.id)).all() == []
    if error is UnsupportedSchemaVersion:
        assert "supported: 1..1" in str(raised.value)


def test_a_client_bound_to_another_user_is_forbidden(tx, client_id, ticket) -> None:
    push(tx, client_id, [note(1, ticket.id)], user="crew-a")
    with pytest.raises(ClientForbidden) as raised:
        push(tx, client_id, [note(2, ticket.id)], user="crew-b")
    assert (raised.value.status_code, raised.value.field) == (403, "client_id")
    assert last_seq(tx, client_id) == 1
    with pytest.raises(ClientForbidden), tx() as session:
        ENGINE.bind_client(session, client_id=client_id, user_key="crew-b")


def test_an_empty_push_reports_last_seq_and_records_the_client(tx, client_id, ticket) -> None:
    push(tx, client_id, [note(1, ticket.id)], app_version="1.2.3")
    assert push(tx, client_id, []).last_seq == 1
    with tx() as session:
        client = session.get(SyncClient, client_id)
        assert (client.user_key, client.schema_version, client.app_version) == ("crew-a", 1, "")
        assert client.created_at.tzinfo is not None and client.last_seen_at >= client.created_at

"""A stateful property test of push alone: several clients with outboxes, over a network
that drops responses, duplicates and reorders batches, and a server that can crash before
committing. Invariants: a client's acknowledged seq only grows; every mutation up to it
took effect exactly once (or, if rejected, not at all and kept whole for review)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from server.db import write_session
from sync import Mutation, PushRequest, PushResponse, SyncClient, SyncConflict, SyncMutation, SyncRejection
from tests.sync.toy import ToyNote, ToyTicket, make_engine

ENGINE = make_engine()
KINDS = ["ok", "ok", "ok", "refuse", "explode", "bad_args", "unknown", "conflict"]
CLIENT = st.integers(0, 1)
EXPECTED = {"ok": "applied", "conflict": "conflict"}  # every other kind is rejected


def _pick(candidates: list[str], index: int) -> str:
    return candidates[index % len(candidates)]


class PushMachine(RuleBasedStateMachine):
    db: Engine

    def __init__(self) -> None:
        super().__init__()
        run = uuid.uuid4().hex[:10]
        self.ticket = f"t-{run}"
        self.clients = [f"{run}-c{i}" for i in range(2)]
        self.outbox: dict[str, list[Mutation]] = {c: [] for c in self.clients}
        self.next_seq = dict.fromkeys(self.clients, 1)
        self.kind: dict[tuple[str, int], str] = {}
        self.sent: dict[tuple[str, int], Mutation] = {}
        self.acked = dict.fromkeys(self.clients, 0)  # what each client has been told
        self.server_seq = dict.fromkeys(self.clients, 0)  # what the server had committed
        with write_session(self.db) as session:
            session.add(ToyTicket(id=self.ticket, crew="a"))

    # -- the client and the network -----------------------------------------------------

    @rule(client=CLIENT, kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4))
    def edit(self, client: int, kinds: list[str]) -> None:
        for kind in kinds:
            self._edit(self.clients[client], kind)

    def _edit(self, client_id: str, kind: str) -> None:
        seq = self.next_seq[client_id]
        self.next_seq[client_id] += 1
        args: dict = {"ticket_id": self.ticket, "note_id": f"{client_id}-{seq}",
                      "text": {"bad_args": 123}.get(kind, kind)}
        name = {"unknown": "nope", "conflict": "set_crew"}.get(kind, "add_note")
        if kind == "conflict":
            args = {"ticket_id": self.ticket, "crew": "b"}
        mutation = Mutation(seq=seq, mid=uuid.uuid4().hex, name=name, args=args)
        self.outbox[client_id].append(mutation)
        self.kind[client_id, seq], self.sent[client_id, seq] = kind, mutation

    @precondition(lambda self: self._waiting())
    @rule(client=CLIENT, skip=st.sampled_from([0, 0, 0, 1, 2]), size=st.integers(1, 6),
          dropped=st.booleans(), copies=st.integers(1, 2))
    def push(self, client: int, skip: int, size: int, dropped: bool, copies: int) -> None:
        """Send part of the outbox (skip > 0: an earlier batch is still on its way, so this
        one arrives out of order), maybe twice, maybe losing the response."""
        client_id = _pick(self._waiting(), client)
        batch = self.outbox[client_id][skip:skip + size]
        for _ in range(copies):
            response = self._send(client_id, batch)
        if not dropped:
            self._receive(client_id, response)

    @precondition(lambda self: any(self.acked.values()))
    @rule(client=CLIENT, count=st.integers(1, 4))
    def replay_acknowledged(self, client: int, count: int) -> None:
        """A client restored from an old backup resends edits it was already told about."""
        client_id = _pick([c for c in self.clients if self.acked[c]], client)
        old = [self.sent[client_id, seq] for seq in range(max(1, self.acked[client_id] - count + 1),
                                                           self.acked[client_id] + 1)]
        response = self._send(client_id, old)
        assert [r.status for r in response.results] == ["duplicate"] * len(old)
        assert [r.original_status for r in response.results] == [self._expected(client_id, m.seq) for m in old]

    @precondition(lambda self: self._waiting())
    @rule(client=CLIENT)
    def server_crashes_before_commit(self, client: int) -> None:
        client_id = _pick(self._waiting(), client)
        with Session(self.db) as session:
            ENGINE.push(session, user_key="crew", actor=None, request=self._request(client_id, self.outbox[client_id]))
            session.rollback()

    def _waiting(self) -> list[str]:
        return [c for c in self.clients if self.outbox[c]]

    def _request(self, client_id: str, batch: list[Mutation]) -> PushRequest:
        return PushRequest(client_id=client_id, schema_version=1, mutations=batch)

    def _send(self, client_id: str, batch: list[Mutation]) -> PushResponse:
        with write_session(self.db) as session:
            return ENGINE.push(session, user_key="crew", actor=None, request=self._request(client_id, batch))

    def _receive(self, client_id: str, response: PushResponse) -> None:
        assert response.last_seq >= self.acked[client_id]
        self.acked[client_id] = response.last_seq
        for result in response.results:
            status = result.original_status if result.status == "duplicate" else result.status
            assert status == self._expected(client_id, result.seq), result
        self.outbox[client_id] = [m for m in self.outbox[client_id] if m.seq > response.last_seq]
        if response.expected_seq is not None:  # resend from there: the outbox starts there
            assert response.expected_seq == response.last_seq + 1 == self.outbox[client_id][0].seq

    def _expected(self, client_id: str, seq: int) -> str:
        return EXPECTED.get(self.kind[client_id, seq], "rejected")

    # -- the server's state ---------------------------------------------------------------

    @invariant()
    def every_acknowledged_mutation_took_effect_exactly_once(self) -> None:
        with Session(self.db) as session:
            last = dict(session.exec(select(SyncClient.client_id, SyncClient.last_seq)
                                     .where(SyncClient.client_id.in_(self.clients))).all())  # type: ignore[attr-defined]
            stored = session.exec(select(SyncMutation.client_id, SyncMutation.seq, SyncMutation.mid,
                                         SyncMutation.status)
                                  .where(SyncMutation.client_id.in_(self.clients))).all()  # type: ignore[attr-defined]
            notes = dict(session.exec(select(ToyNote.note_id, func.count()).where(
                ToyNote.client_id.in_(self.clients)).group_by(ToyNote.note_id)).all())  # type: ignore[attr-defined]
            rejected = {(r.client_id, r.seq): r for r in session.exec(
                select(SyncRejection).where(SyncRejection.client_id.in_(self.clients)))}  # type: ignore[attr-defined]
            conflicts = session.exec(select(SyncConflict.client_id, SyncConflict.seq)
                                     .where(SyncConflict.client_id.in_(self.clients))).all()  # type: ignore[attr-defined]
        for client_id in self.clients:
            seq = last.get(client_id, 0)
            assert seq >= self.server_seq[client_id]  # the acknowledged seq only grows
            assert seq >= self.acked[client_id]
            self.server_seq[client_id] = seq
        assert sorted((c, s) for c, s, _, _ in stored) == \
               [(c, s) for c in sorted(self.clients) for s in range(1, last.get(c, 0) + 1)]
        for client_id, seq, mid, status in stored:
            mutation, kind = self.sent[client_id, seq], self.kind[client_id, seq]
            assert mid == mutation.mid and status == self._expected(client_id, seq)
            assert notes.get(f"{client_id}-{seq}", 0) == (kind == "ok")
            assert conflicts.count((client_id, seq)) == (kind == "conflict")
            if status == "rejected":
                kept = rejected.pop((client_id, seq))
                assert (kept.mid, kept.name, kept.args) == (mutation.mid, mutation.name, mutation.args)
        assert not rejected  # nothing rejected beyond last_seq
        assert not [n for n in notes if int(n.rsplit("-", 1)[1]) > last.get(n.rsplit("-", 1)[0], 0)]


@pytest.mark.slow  # a Hypothesis state machine on a real database: 10-30 s
def test_push_keeps_every_acknowledged_edit_exactly_once(sync_db: Engine) -> None:
    machine = type("PushMachineOnThisDb", (PushMachine,), {"db": sync_db})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)))

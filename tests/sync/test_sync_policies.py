"""Policy kinds as plain functions, and the dispatchers' review of conflicts and rejections."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from sync import (
    InvalidRequest,
    Mutation,
    PushRequest,
    check_transition,
    held_at,
    list_conflicts,
    list_rejections,
    resolve_conflict,
    resolve_rejection,
)
from tests.sync.toy import STATES, make_engine

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def test_check_transition_follows_the_state_machine() -> None:
    assert check_transition(STATES, "new", "assigned")
    assert not check_transition(STATES, "completed", "en_route")
    assert not check_transition(STATES, "nonsense", "new")


def test_held_at_uses_the_assignment_history_with_a_bounded_grace() -> None:
    history = [(T0 + 60 * MIN, "b"), (T0, "a"), (T0 + 120 * MIN, None)]  # any order
    assert held_at(history, "a", T0 + 30 * MIN, grace=timedelta(0))
    assert not held_at(history, "a", T0 + 70 * MIN, grace=5 * MIN)  # reassigned 10 minutes before
    assert held_at(history, "a", T0 + 63 * MIN, grace=5 * MIN)  # within the grace
    assert held_at(history, "a", T0 - 3 * MIN, grace=5 * MIN)  # a clock running a little behind
    assert not held_at(history, "a", T0 - 30 * MIN, grace=5 * MIN)
    assert held_at(history, "b", T0 + 119 * MIN, grace=timedelta(0))
    assert not held_at(history, "b", T0 + 130 * MIN, grace=5 * MIN)  # unassigned since 120
    assert not held_at([], "a", T0, grace=MIN)


def test_conflicts_and_rejections_are_listed_and_resolved_once(tx, client_id, ticket) -> None:
    mutations = [
        Mutation(seq=1, mid=uuid.uuid4().hex, name="set_crew", args={"ticket_id": ticket.id, "crew": "z"}),
        Mutation(seq=2, mid=uuid.uuid4().hex, name="nope", args={"a": [1, 2]}),
    ]
    with tx() as session:
        make_engine().push(session, user_key="crew-a", actor=None,
                           request=PushRequest(client_id=client_id, schema_version=1, mutations=mutations))
    with tx() as session:
        conflict = next(c for c in list_conflicts(session, limit=1000) if c.client_id == client_id)
        rejection = next(r for r in list_rejections(session, limit=1000) if r.client_id == client_id)
        assert (conflict.kind, conflict.client_value, rejection.args) == ("server_owned", "z", {"a": [1, 2]})
        assert list_conflicts(session, after_id=conflict.id, limit=1000) == [
            c for c in list_conflicts(session, limit=1000) if c.id > conflict.id]
        done = resolve_conflict(session, conflict.id, resolution="kept crew a", resolved_by="dispatcher-1")
        resolve_rejection(session, rejection.id, resolution="retyped by hand", resolved_by="dispatcher-1")
        assert (done.status, done.resolved_by, done.resolved_at.tzinfo) == ("resolved", "dispatcher-1", UTC)
    with tx() as session:
        assert conflict.id not in [c.id for c in list_conflicts(session, limit=1000)]
        assert rejection.id in [r.id for r in list_rejections(session, status="resolved", limit=1000)]
        with pytest.raises(InvalidRequest, match="already resolved"):
            resolve_conflict(session, conflict.id, resolution="again", resolved_by="dispatcher-2")
        with pytest.raises(InvalidRequest):
            resolve_rejection(session, rejection.id, resolution=" ", resolved_by="dispatcher-2")
        with pytest.raises(KeyError):
            resolve_rejection(session, 10**9, resolution="x", resolved_by="dispatcher-2")

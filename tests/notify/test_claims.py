"""Claim after claim (server.notify.sender): a wave larger than one claim flows through one
round, the next claim made while the last chunks are in flight; a sender stopped after it
made that claim hands every row back, and the next sender sends each notice once (SQLite
and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest
from sqlalchemy import Engine

from server.notify.sender import Sender, _Claim
from server.settings import Settings
from tests.notify.pushservice import PushService
from tests.notify.support import drain, outbox, queue_many
from tests.runtime.support import run_in_own_loop


def small_claims(settings: Settings) -> Settings:
    """Claims of 10 rows, 4 POSTs in flight (chunks of 2), encrypted on the loop."""
    return replace(settings, push=replace(settings.push, batch_size=10, concurrency=4, encryption_processes=0))


def test_a_wave_larger_than_a_claim_flows_through_one_round(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    phones = [push.subscriber() for _ in range(45)]  # four full claims and a short one
    ids = set(queue_many(engine, phones))
    sender = Sender(engine, small_claims(settings).push, name="wave")
    try:
        stats = run_in_own_loop(sender.drain(rounds=1))
    finally:
        sender.close()

    assert (stats.claimed, stats.sent, stats.lost_claims) == (45, 45, 0)
    assert all(len(push.messages(phone)) == 1 for phone in phones)
    assert {n.state for n in outbox(engine) if n.id in ids} == {"sent"}


class StopsAfterTheNextClaim(Sender):
    """Asked to stop as it claims the next batch, while the first is in flight."""

    def __init__(self, *args: object, stop: asyncio.Event, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stop = stop
        self.claims = 0

    async def _next_claim(self) -> _Claim | None:
        self.claims += 1
        if self.claims == 2:
            self.stop.set()
        return await super()._next_claim()


def test_a_sender_stopped_mid_wave_hands_back_the_claim_it_made_ahead(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    phones = [push.subscriber() for _ in range(30)]
    ids = queue_many(engine, phones)

    async def run_until_stopped() -> StopsAfterTheNextClaim:
        stop = asyncio.Event()
        sender = StopsAfterTheNextClaim(engine, small_claims(settings).push, name="stopping", stop=stop)
        await asyncio.wait_for(sender.run(stop), timeout=30)
        return sender

    stopped = run_in_own_loop(run_until_stopped())
    assert stopped.claims == 2
    sent_first = stopped.stats.sent
    assert 0 < sent_first < 10  # it stopped inside the first claim of 10
    rows = {n.subscription_id: n for n in outbox(engine) if n.subscription_id in ids}
    assert {n.state for n in rows.values()} == {"sent", "pending"}  # nothing left claimed or sending
    assert all(n.claimed_by is None for n in rows.values() if n.state == "pending")
    assert sum(n.state == "sent" for n in rows.values()) == sent_first
    for sid, phone in zip(ids, phones, strict=True):  # told once if sent, not yet if handed back
        assert len(push.messages(phone)) == (1 if rows[sid].state == "sent" else 0)

    rest = drain(engine, small_claims(settings), name="next")
    assert rest.sent == 30 - sent_first
    assert all(len(push.messages(phone)) == 1 for phone in phones)



class FailsAfterTheNextClaim(Sender):
    """Its database writes fail from the moment it claims the next batch (a lost
    connection, say), once that claim is made."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.claims = 0
        self.claiming_ahead = False
        self.claimed_ahead = threading.Event()

    async def _next_claim(self) -> _Claim | None:
        self.claims += 1
        self.claiming_ahead = self.claims == 2
        claim = await super()._next_claim()
        if self.claiming_ahead:
            self.claimed_ahead.set()
        return claim

    def _record_and_start(self, results, ids):  # type: ignore[no-untyped-def]
        if self.claiming_ahead:
            self.claimed_ahead.wait(10)
            raise ConnectionError("the database went away")
        return super()._record_and_start(results, ids)


def test_a_round_that_fails_after_claiming_ahead_hands_that_claim_back(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    phones = [push.subscriber() for _ in range(30)]
    ids = queue_many(engine, phones)
    sender = FailsAfterTheNextClaim(engine, small_claims(settings).push, name="failing")
    try:
        with pytest.raises(ConnectionError):
            run_in_own_loop(sender.drain())
    finally:
        sender.close()

    assert sender.claims == 2
    rows = [n for n in outbox(engine) if n.subscription_id in ids]
    # The second claim's ten rows are back in the queue now, not when their lease ends.
    assert sum(n.state == "pending" and n.claimed_by is None for n in rows) >= 20
    rest = drain(engine, small_claims(settings), name="after")
    assert rest.sent >= 20
    assert all(len(push.messages(phone)) <= 1 for phone in phones)

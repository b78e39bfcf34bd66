"""The live-hint hub loses no news: a change announced between a stream's read of the feed
and its wait wakes that wait at once, on both databases."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import Engine

from server.crewsync.events import EventHub
from server.db import write_session
from sync.feed import record_changes
from tests.runtime.support import run_in_own_loop

SCOPE = "crew:9001"


def _record(engine: Engine) -> None:
    with write_session(engine) as session:
        record_changes(session, [("work_order", "9001", "upsert", SCOPE, 1)])


def test_news_between_the_read_and_the_wait_is_not_lost(engine: Engine) -> None:
    async def scenario() -> tuple[bool, float]:
        hub = EventHub(engine, interval=0.1)
        try:
            await hub.wait([SCOPE], timeout=0.5)  # the hub is running and has seen the feed
            seen = hub.mark()  # a stream reads the feed here …
            await asyncio.to_thread(_record, engine)  # … a change commits …
            await asyncio.sleep(1.0)  # … and is announced before the stream waits
            started = time.monotonic()
            woke = await hub.wait([SCOPE], timeout=10.0, since=seen)
            return woke, time.monotonic() - started
        finally:
            await hub.close()

    woke, waited = run_in_own_loop(scenario())
    assert woke and waited < 1.0, f"woke={woke} after {waited:.1f} s"


def test_a_wait_without_news_times_out(engine: Engine) -> None:
    async def scenario() -> bool:
        hub = EventHub(engine, interval=0.1)
        try:
            await hub.wait(["crew:elsewhere"], timeout=0.3)
            seen = hub.mark()
            return await hub.wait(["crew:elsewhere"], timeout=0.5, since=seen)
        finally:
            await hub.close()

    assert run_in_own_loop(scenario()) is False

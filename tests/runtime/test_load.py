"""The server under load: a real Hypercorn process on loopback, SQLite and PostgreSQL.

Before the session rework, 50 clients on the work-order list locked one worker up for
good (the sessions' clean-up queued behind handlers waiting for the connections those
sessions held). Here: 200 signed-in clients at once on the list, a crew pull and Open311,
and a deliberately tiny server that must shed load with 503 + Retry-After. Every answer
is 2xx or 503 with Retry-After, none hangs, and the server answers normally right after.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from server.settings import Settings
from tests.conftest import LiveServer
from tests.runtime.support import (
    answers_normally,
    bearer,
    crew_pull,
    drive,
    keep_cursor,
    open311_requests,
    run_in_own_loop,
    work_order_list,
)
from tests.sync_http.support import seed


@pytest.fixture(scope="module")
def headers(engine: Engine, settings: Settings) -> dict[str, dict[str, str]]:
    seed(engine, per_crew=30)
    return {"dispatcher": bearer(settings, engine, "dispatcher"), "crew": bearer(settings, engine, "crew-north")}


@pytest.fixture(scope="module")
def tiny_server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    """One request at a time, four may wait, for half a second at most."""
    server = LiveServer(settings, env_extra={
        "FIELDWORK_THREADS": "1", "FIELDWORK_QUEUE_LIMIT": "4", "FIELDWORK_QUEUE_TIMEOUT": "0.5",
    })
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_200_signed_in_clients_get_answers_and_the_server_recovers(
    live_server: LiveServer, headers: dict[str, dict[str, str]]
) -> None:
    makers = [(work_order_list, headers["dispatcher"]), (crew_pull, headers["crew"]), (open311_requests, {})]
    outcomes = run_in_own_loop(drive(live_server.url, makers, clients=200, seconds=8, on_answer=keep_cursor))

    assert not outcomes.hung, f"requests without an answer in 30 s: {outcomes.hung}"
    assert not outcomes.errors, outcomes.errors
    assert not outcomes.unexpected(), outcomes.unexpected()
    assert outcomes.unavailable_without_retry_after == 0
    # Every client got answers (how many depends on the machine's load: not asserted).
    assert min(outcomes.answers_per_client) >= 1, outcomes.statuses
    for endpoint in ("list", "pull", "open311"):
        assert outcomes.statuses[(endpoint, 200)] >= 1, outcomes.statuses
    assert answers_normally(live_server.url, headers) == {"list": 200, "pull": 200, "open311": 200, "healthz": 200}
    assert not any("Traceback" in line for line in live_server.log), "".join(live_server.log)[-3000:]


def test_an_overloaded_server_sheds_load_with_503_and_retry_after(
    tiny_server: LiveServer, headers: dict[str, dict[str, str]]
) -> None:
    makers = [(work_order_list, headers["dispatcher"]), (open311_requests, {})]
    outcomes = run_in_own_loop(drive(tiny_server.url, makers, clients=40, seconds=3, hang_after=15))

    assert not outcomes.hung and not outcomes.errors, (outcomes.hung, outcomes.errors)
    assert not outcomes.unexpected(), outcomes.unexpected()
    assert outcomes.count(503) > 0, outcomes.statuses  # it did shed load …
    assert outcomes.count(200) > 0, outcomes.statuses  # … while serving what it could
    assert outcomes.unavailable_without_retry_after == 0
    assert answers_normally(tiny_server.url, headers) == {"list": 200, "pull": 200, "open311": 200, "healthz": 200}

"""GET /api/workflow: the crew app's buttons come from the server's state machine."""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.crewsync.mutators import StatusArgs
from server.models import WorkOrder, WorkOrderEvent
from server.settings import Settings
from server.status import (
    CANNOT_COMPLETE_REASONS,
    CREW_TARGETS,
    RESOLUTION_CODES,
    STATUSES,
    TRANSITIONS,
    Status,
    can_transition,
)
from tests.conftest import LiveServer
from tests.crew.support import PASSWORD, USERNAME, CrewSeed, seed_crew


@pytest.fixture(scope="module")
def answer(live_server: LiveServer) -> httpx.Response:
    return httpx.get(f"{live_server.url}/api/workflow", timeout=10)


def test_it_is_public_and_not_cached_stale(answer: httpx.Response) -> None:
    assert answer.status_code == 200  # no token sent
    assert answer.headers["cache-control"] == "no-cache"


def test_every_status_and_only_the_moves_a_crew_may_push(answer: httpx.Response) -> None:
    body = answer.json()
    statuses = {s["code"]: s for s in body["statuses"]}
    assert list(statuses) == [s.value for s in STATUSES]
    pushable = set(typing.get_args(typing.get_type_hints(StatusArgs)["to"]))
    assert pushable == {s.value for s in CREW_TARGETS}  # the phone offers what the mutation takes
    for code, entry in statuses.items():
        assert entry["label"] == STATUSES[Status(code)].label
        assert entry["kind"] == STATUSES[Status(code)].kind.value
        if entry["kind"] == "open":
            assert set(entry["crew_moves"]) == {t.value for t in TRANSITIONS[Status(code)]} & pushable
        else:  # a finished job is reopened by a dispatcher, not from the phone
            assert entry["crew_moves"] == []
        assert all(can_transition(code, target) for target in entry["crew_moves"])
    assert statuses["on_site"]["crew_moves"] == ["assigned", "en_route", "on_hold", "completed", "cannot_complete"]
    assert statuses["assigned"]["crew_moves"] == ["en_route", "on_site", "on_hold", "completed", "cannot_complete"]


def test_codes_and_reasons_come_from_the_server(answer: httpx.Response) -> None:
    body = answer.json()
    assert [(c["code"], c["label"]) for c in body["resolution_codes"]] == list(RESOLUTION_CODES.items())
    assert [(c["code"], c["label"]) for c in body["cannot_complete_reasons"]] == list(CANNOT_COMPLETE_REASONS.items())
    assert body["hold_reasons"]
    assert body["map"]["tiles_url"].startswith("https://") and "{z}" in body["map"]["tiles_url"]
    assert body["map"]["tiles_attribution"]


# -- the crew's position at a move (sync `status` mutation) ------------------------------------


@pytest.fixture(scope="module")
def crew(engine: Engine, settings: Settings, live_server: LiveServer) -> tuple[CrewSeed, str]:
    seed = seed_crew(engine, settings, 2)
    answer = httpx.post(f"{live_server.url}/api/auth/sign-in", json={"username": USERNAME, "password": PASSWORD})
    assert answer.status_code == 200
    return seed, answer.json()["token"]


def push(server: LiveServer, token: str, client: str, seq: int, args: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{server.url}/sync/v1/push", headers={"Authorization": f"Bearer {token}"}, json={
        "client_id": client, "schema_version": 1,
        "mutations": [{"seq": seq, "mid": str(uuid.uuid4()), "name": "status", "args": args,
                       "device_ts": datetime.now(UTC).isoformat()}],
    }, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_completion_keeps_where_the_crew_stood(
    live_server: LiveServer, crew: tuple[CrewSeed, str], engine: Engine
) -> None:
    seed, token = crew
    job = seed.jobs[0]
    where = {"lat": 34.0522, "lon": -118.2437, "accuracy_m": 12.0}
    result = push(live_server, token, str(uuid.uuid4()), 1, {
        "work_order_id": job, "to": "completed", "reason": "Repaired. Pothole filled", "position": where})
    assert result["results"][0]["status"] == "applied"
    with Session(engine) as session:
        event = session.exec(select(WorkOrderEvent).where(
            WorkOrderEvent.work_order_id == job, WorkOrderEvent.kind == "status",
            WorkOrderEvent.channel == "sync")).one()
        order = session.get(WorkOrder, job)
    assert event.data == {"reason": "Repaired. Pothole filled", "position": where}
    assert order is not None and order.resolution == "Repaired. Pothole filled"


def test_a_position_off_the_earth_is_refused_with_its_field_named(
    live_server: LiveServer, crew: tuple[CrewSeed, str]
) -> None:
    seed, token = crew
    answer = httpx.post(f"{live_server.url}/sync/v1/push", headers={"Authorization": f"Bearer {token}"}, json={
        "client_id": str(uuid.uuid4()), "schema_version": 1,
        "mutations": [{"seq": 1, "mid": str(uuid.uuid4()), "name": "status", "device_ts": datetime.now(UTC).isoformat(),
                       "args": {"work_order_id": seed.jobs[1], "to": "on_site", "position": {"lat": 91, "lon": 0}}}],
    }, timeout=30)
    body = answer.json()
    refused = answer.status_code == 400 or body["results"][0]["status"] == "rejected"
    assert refused, body
    assert "lat" in answer.text

"""The cached reads (server/readcache.py): the work-order list and the board answer from the
cache only while the database says nothing changed, and never across viewers' scopes.

Each test first asks the same question twice (the second answer comes from the cache), then
changes something: through the API, from this test process (another process than the
server's worker, as the CLI or an import would), or in a transaction that commits late.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlmodel import select

from server.auth import create_user
from server.db import write_session
from server.models import User, WorkOrder
from server.workorders.changes import Actor, assign, load_for_update, set_priority
from tests.api.support import Api, Seed

ELSEWHERE = Actor(None, "test:another-process", "system")


def _page(api: Api, role: str, path: str = "/api/workorders", **params: Any) -> dict[int, dict[str, Any]]:
    response = api.get(role, path, **params)
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


def _twice(api: Api, role: str, path: str = "/api/workorders", **params: Any) -> dict[int, dict[str, Any]]:
    """The page, asked twice: the second answer is the cached one, and it is the same."""
    first = _page(api, role, path, **params)
    assert _page(api, role, path, **params) == first
    return first


def _newest_open(engine: Engine, count: int) -> list[int]:
    with write_session(engine) as session:
        return list(session.exec(
            select(WorkOrder.id).where(WorkOrder.is_open, WorkOrder.deleted_at.is_(None))  # type: ignore[arg-type, union-attr]
            .order_by(WorkOrder.id.desc()).limit(count)  # type: ignore[union-attr]
        ).all())


def _other_priority(priority: int) -> int:
    return 1 if priority != 1 else 3


def _set_priority_elsewhere(engine: Engine, work_order_id: int, priority: int) -> None:
    with write_session(engine) as session:
        set_priority(session, load_for_update(session, work_order_id), priority=priority, actor=ELSEWHERE)


@pytest.mark.parametrize("path", ["/api/workorders", "/api/dispatch/board"])
def test_a_change_through_the_api_shows_on_the_next_read(api: Api, engine: Engine, path: str) -> None:
    order_id = _newest_open(engine, 1)[0]
    before = _twice(api, "dispatcher", path, limit=20, open_only="true")[order_id]
    priority = _other_priority(before["priority"])
    response = api.request("PATCH", "dispatcher", f"/api/dispatch/workorders/{order_id}",
                           json={"priority": priority, "version": before["version"]})
    assert response.status_code == 200, response.text
    after = _page(api, "dispatcher", path, limit=20, open_only="true")[order_id]
    assert (after["priority"], after["version"]) == (priority, before["version"] + 1)


@pytest.mark.parametrize("path", ["/api/workorders", "/api/dispatch/board"])
def test_a_change_from_another_process_shows_on_the_next_read(api: Api, engine: Engine, path: str) -> None:
    order_id = _newest_open(engine, 1)[0]
    before = _twice(api, "admin", path, limit=10, open_only="true")[order_id]
    priority = _other_priority(before["priority"])
    _set_priority_elsewhere(engine, order_id, priority)
    assert _page(api, "admin", path, limit=10, open_only="true")[order_id]["priority"] == priority


def test_a_reassigned_job_leaves_one_crews_list_and_joins_the_others(api: Api, engine: Engine, seed: Seed) -> None:
    a_list = _twice(api, "crew_a", limit=500)
    b_list = _twice(api, "crew_b", limit=500)
    moving = next(i for i in seed.a_orders if i in a_list and a_list[i]["status"] == "assigned")
    assert moving not in b_list
    with write_session(engine) as session:
        assign(session, load_for_update(session, moving), crew_id=seed.crew_b, actor=ELSEWHERE)
    try:
        assert moving not in _page(api, "crew_a", limit=500)
        assert _page(api, "crew_b", limit=500)[moving]["crew_id"] == seed.crew_b
    finally:
        with write_session(engine) as session:
            assign(session, load_for_update(session, moving), crew_id=seed.crew_a, actor=ELSEWHERE)
    assert moving in _page(api, "crew_a", limit=500)


def test_crews_never_get_each_others_or_the_dispatchers_answer(api: Api, engine: Engine, seed: Seed) -> None:
    """The same question from each viewer, asked right after another viewer's answer was kept."""
    everything = _twice(api, "dispatcher", limit=500, open_only="true")
    a_list = _twice(api, "crew_a", limit=500, open_only="true")
    b_list = _twice(api, "crew_b", limit=500, open_only="true")
    assert a_list and b_list
    assert {o["crew_id"] for o in a_list.values()} == {seed.crew_a}
    assert {o["crew_id"] for o in b_list.values()} == {seed.crew_b}
    assert set(a_list) <= set(seed.a_orders) and set(b_list) <= set(seed.b_orders)
    assert set(a_list) | set(b_list) <= set(everything) and len(everything) > len(a_list) + len(b_list)
    # The board is the dispatchers': a crew is refused even while a dispatcher's answer is kept.
    _twice(api, "dispatcher", "/api/dispatch/board", limit=50)
    assert api.get("crew_a", "/api/dispatch/board", limit=50).status_code == 403
    assert api.get("anonymous", "/api/workorders", limit=50).status_code == 401


def test_a_cached_answer_is_refused_to_a_user_deactivated_meanwhile(api: Api, engine: Engine, seed: Seed) -> None:
    with write_session(engine) as session:
        user = create_user(session, username="cache.reader", password="cache-reader-password", role="crew",
                           crew_id=seed.crew_a)
        user_id = user.id
    token = api.client.post(
        "/api/auth/sign-in", json={"username": "cache.reader", "password": "cache-reader-password"}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(2):
        response = api.client.get("/api/workorders", params={"limit": 7}, headers=headers)
        assert response.status_code == 200
        assert {o["crew_id"] for o in response.json()["items"]} == {seed.crew_a}
    with write_session(engine) as session:
        session.exec(update(User).where(User.id == user_id).values(crew_id=seed.crew_b))  # type: ignore[call-overload]
    # A crew moved to another crew sees the other crew's work at once, not its old answer.
    response = api.client.get("/api/workorders", params={"limit": 7}, headers=headers)
    assert {o["crew_id"] for o in response.json()["items"]} == {seed.crew_b}
    with write_session(engine) as session:
        session.exec(update(User).where(User.id == user_id).values(active=False))  # type: ignore[call-overload]
    assert api.client.get("/api/workorders", params={"limit": 7}, headers=headers).status_code == 401


def test_a_transaction_that_commits_after_a_newer_one_still_shows(api: Api, engine: Engine, db_kind: str) -> None:
    """PostgreSQL hands out feed ids before commit: the older change, committed last, leaves
    the newest feed id where it was. The answer read while it ran must not be kept."""
    if db_kind != "postgres":
        pytest.skip("SQLite writers take turns: ids are handed out in commit order")
    late_id, early_id = _newest_open(engine, 2)
    before = _twice(api, "dispatcher", limit=5, open_only="true")
    late_priority = _other_priority(before[late_id]["priority"])
    early_priority = _other_priority(before[early_id]["priority"])
    with write_session(engine) as late:
        # Takes its transaction id and its feed id first, and commits last.
        set_priority(late, load_for_update(late, late_id), priority=late_priority, actor=ELSEWHERE)
        _set_priority_elsewhere(engine, early_id, early_priority)
        while_running = _twice(api, "dispatcher", limit=5, open_only="true")
        assert while_running[early_id]["priority"] == early_priority
        assert while_running[late_id]["priority"] == before[late_id]["priority"]
        assert _map_priority(api, late_id) == _map_priority(api, late_id) == before[late_id]["priority"]
        # Nor may a console keep it as current: no ETag to send back while the writer runs.
        assert "etag" not in api.get("dispatcher", "/api/dispatch/map", open_only="true").headers
    after = _page(api, "dispatcher", limit=5, open_only="true")
    assert (after[late_id]["priority"], after[early_id]["priority"]) == (late_priority, early_priority)
    assert _map_priority(api, late_id) == late_priority  # the map's cache follows the same rule


def _map_priority(api: Api, work_order_id: int) -> int:
    response = api.get("dispatcher", "/api/dispatch/map", open_only="true")
    assert response.status_code == 200, response.text
    arrays = response.json()
    return int(arrays["priority"][arrays["id"].index(work_order_id)])


def test_a_checked_token_is_reused_only_until_it_expires_and_only_with_its_secret() -> None:
    from datetime import UTC, datetime, timedelta

    from litestar.security.jwt import Token

    from server.auth.tokens import _VerifiedTokens

    now = datetime.now(UTC).replace(microsecond=0)
    live = Token(sub="1", exp=now + timedelta(minutes=5), iat=now)
    gone = Token(sub="2", exp=now + timedelta(minutes=5), iat=now)
    gone.exp = now - timedelta(seconds=1)  # a token that was valid when checked, expired since
    verified = _VerifiedTokens(size=2)
    verified.put("secret", "live.token", live)
    verified.put("secret", "gone.token", gone)
    assert verified.get("secret", "live.token") is live
    assert verified.get("another secret", "live.token") is None  # checked with that secret only
    assert verified.get("secret", "gone.token") is None  # expired: checked again (and refused)
    verified.put("secret", "third.token", live)
    verified.put("secret", "fourth.token", live)
    assert verified.get("secret", "live.token") is None  # bounded: the oldest went out

"""Many concurrent clients against a live server, for the load and overload tests.

Each client is its own keep-alive connection (an httpx.AsyncClient with one connection)
that loops on one kind of request until the time is up. Every answer is counted by
endpoint and status; a request that gets no answer within `hang_after` seconds counts as
hung. Traffic goes to 127.0.0.1 only and is bounded in time and in clients.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.auth.tokens import issue_token
from server.models import User
from server.settings import Settings

T = TypeVar("T")


def bearer(settings: Settings, engine: Engine, username: str) -> dict[str, str]:
    """A token for `username`, signed as the server signs them (no sign-in round trip)."""
    with Session(engine) as session:
        user = session.exec(select(User).where(User.username == username)).one()
    return {"Authorization": f"Bearer {issue_token(settings, user).token}"}


@dataclass
class Outcomes:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    hung: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # connection-level failures
    unavailable_without_retry_after: int = 0
    answers_per_client: list[int] = field(default_factory=list)  # answers of any status, by client

    def count(self, status: int) -> int:
        return sum(n for (_, s), n in self.statuses.items() if s == status)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def unexpected(self) -> dict[tuple[str, int], int]:
        """Answers other than 2xx and 503."""
        return {key: n for key, n in self.statuses.items() if not (200 <= key[1] < 300 or key[1] == 503)}


# A request maker gets the client's number and its own state dict, and returns
# (endpoint name, method, path, json body or None).
RequestMaker = Callable[[int, dict[str, Any]], tuple[str, str, str, Any]]


async def drive(
    base_url: str,
    makers: list[tuple[RequestMaker, dict[str, str]]],
    *,
    clients: int,
    seconds: float,
    hang_after: float = 30.0,
    on_answer: Callable[[int, dict[str, Any], httpx.Response], None] | None = None,
) -> Outcomes:
    """`clients` loops, round-robin over `makers` (with their headers), for `seconds`.

    The clients are all made before the clock starts (an httpx client is not free to make),
    and every one has sent its first request before any stops."""
    outcomes = Outcomes()
    cycle = itertools.cycle(makers)
    assignments = [next(cycle) for _ in range(clients)]
    outcomes.answers_per_client = [0] * clients
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # one for all: loopback is plain HTTP anyway
    https = [httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=hang_after, verify=tls)
             for _, headers in assignments]
    deadline = time.monotonic() + seconds

    async def client(number: int, maker: RequestMaker, http: httpx.AsyncClient) -> None:
        state: dict[str, Any] = {}
        first = True
        while first or time.monotonic() < deadline:
            first = False
            name, method, path, body = maker(number, state)
            try:
                response = await http.request(method, path, json=body)
            except httpx.TimeoutException:
                outcomes.hung[name] += 1
                continue
            except httpx.HTTPError as exc:
                outcomes.errors[f"{name}: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
            outcomes.statuses[(name, response.status_code)] += 1
            outcomes.answers_per_client[number] += 1
            if response.status_code == 503:
                if not response.headers.get("retry-after", "").isdigit():
                    outcomes.unavailable_without_retry_after += 1
                # Back off as told, but never past the end of the run.
                wait = min(float(response.headers.get("retry-after") or 1), deadline - time.monotonic())
                await asyncio.sleep(max(0.0, wait))
            elif on_answer is not None:
                on_answer(number, state, response)

    try:
        await asyncio.gather(*(client(n, maker, http) for n, ((maker, _), http) in enumerate(zip(assignments, https,
                                                                                               strict=True))))
    finally:
        for http in https:
            await http.aclose()
    return outcomes


def run_in_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: a test session may already run an event loop in
    the main thread (Playwright's sync API does)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def work_order_list(_: int, __: dict[str, Any]) -> tuple[str, str, str, Any]:
    return "list", "GET", "/api/workorders?limit=50", None


def open311_requests(_: int, __: dict[str, Any]) -> tuple[str, str, str, Any]:
    return "open311", "GET", "/open311/v2/requests.json?page_size=50", None


def crew_pull(number: int, state: dict[str, Any]) -> tuple[str, str, str, Any]:
    return "pull", "POST", "/sync/v1/pull", {
        "client_id": f"load-client-{number}", "cursor": state.get("cursor"), "limit": 200,
    }


def keep_cursor(_: int, state: dict[str, Any], response: httpx.Response) -> None:
    if response.request.url.path == "/sync/v1/pull" and response.status_code == 200:
        state["cursor"] = response.json()["cursor"]


def answers_normally(base_url: str, headers: dict[str, dict[str, str]], *, within: float = 5.0) -> dict[str, int]:
    """Right after a load: one of each request, each on a new connection, with a short timeout."""
    checks = {
        "list": ("GET", "/api/workorders?limit=50", None, headers["dispatcher"]),
        "pull": ("POST", "/sync/v1/pull", {"client_id": "after-the-load", "limit": 50}, headers["crew"]),
        "open311": ("GET", "/open311/v2/requests.json", None, {}),
        "healthz": ("GET", "/healthz", None, {}),
    }
    statuses = {}
    for name, (method, path, body, hdrs) in checks.items():
        response = httpx.request(method, f"{base_url}{path}", json=body, headers=hdrs, timeout=within)
        statuses[name] = response.status_code
    return statuses

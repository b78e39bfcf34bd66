"""Signing in: argon2id hashes, failed sign-in limiting per username, user validation.

HTTP behaviour goes through the real server; time-dependent rules call the service with
an explicit `now`. The per-address rate limit test runs last in the module: it uses up
the address's allowance on this server.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, delete, func, update
from sqlmodel import select

from server.auth import authenticate, create_crew, create_user, passwords
from server.db import read_session, write_session
from server.errors import Conflict, NotAuthenticated, TooManyAttempts, ValidationFailed
from server.models import FailedSignIn, User
from server.settings import Settings
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def crew_id(engine: Engine) -> int:
    with write_session(engine) as session:
        crew = create_crew(session, name="Sign-in crew")
        assert crew.id is not None
        return crew.id


def add_user(engine: Engine, username: str, password: str = "right-password-1", **kwargs: object) -> int:
    with write_session(engine) as session:
        user = create_user(session, username=username, password=password, role=kwargs.pop("role", "dispatcher"), **kwargs)  # type: ignore[arg-type]
        assert user.id is not None
        return user.id


def sign_in(server: LiveServer, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/auth/sign-in", json={"username": username, "password": password}, timeout=30)


def failures(engine: Engine, username: str) -> int:
    with read_session(engine) as session:
        return session.exec(select(func.count(FailedSignIn.id)).where(FailedSignIn.username == username)).one()


# -- over HTTP -----------------------------------------------------------------------------


def test_sign_in_returns_a_working_token(live_server: LiveServer, engine: Engine, settings: Settings, crew_id: int) -> None:
    add_user(engine, "casey.crew", role="crew", crew_id=crew_id, display_name="Casey")
    response = sign_in(live_server, "Casey.Crew ", "right-password-1")  # usernames are case-insensitive
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["user"] == body["user"] | {"username": "casey.crew", "role": "crew", "crew_id": crew_id}
    assert "password_hash" not in body["user"] and "argon2" not in response.text
    expires_at = datetime.fromisoformat(body["expires_at"])
    expected = datetime.now(UTC) + timedelta(minutes=settings.auth.token_minutes)
    assert abs((expires_at - expected).total_seconds()) < 60

    me = httpx.get(f"{live_server.url}/api/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json() | {"crew_name": "Sign-in crew", "display_name": "Casey"} == me.json()


def test_wrong_password_and_unknown_user_get_the_same_401(live_server: LiveServer, engine: Engine) -> None:
    add_user(engine, "wendy.wrong")
    wrong = sign_in(live_server, "wendy.wrong", "not-the-password")
    unknown = sign_in(live_server, "nobody.here", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"] == "wrong username or password"
    assert failures(engine, "wendy.wrong") == 1 and failures(engine, "nobody.here") == 1
    assert sign_in(live_server, "wendy.wrong", "right-password-1").status_code == 200
    assert failures(engine, "wendy.wrong") == 0  # a success clears the count


def test_limit_refuses_even_the_right_password_until_the_window_passes(
    live_server: LiveServer, engine: Engine, settings: Settings
) -> None:
    limit = settings.auth.failed_login_limit
    add_user(engine, "lou.limited")
    add_user(engine, "nell.neighbour")
    for _ in range(limit):
        assert sign_in(live_server, "lou.limited", "guess-guess-guess").status_code == 401
    limited = sign_in(live_server, "lou.limited", "guess-guess-guess")
    assert limited.status_code == 429
    retry_after = int(limited.headers["Retry-After"])
    assert 0 < retry_after <= settings.auth.failed_login_window_seconds
    assert sign_in(live_server, "lou.limited", "right-password-1").status_code == 429
    assert failures(engine, "lou.limited") == limit  # refused attempts are not counted again

    # Counted per username: a neighbour on the same address is not affected.
    assert sign_in(live_server, "nell.neighbour", "right-password-1").status_code == 200

    # Let the window pass: the same rows, aged.
    with write_session(engine) as session:
        window = timedelta(seconds=settings.auth.failed_login_window_seconds + 1)
        for row in session.exec(select(FailedSignIn).where(FailedSignIn.username == "lou.limited")).all():
            row.at = row.at - window
            session.add(row)
    assert sign_in(live_server, "lou.limited", "right-password-1").status_code == 200


def test_rehash_on_sign_in_when_parameters_are_old(live_server: LiveServer, engine: Engine,
                                                   settings: Settings) -> None:
    user_id = add_user(engine, "olga.oldhash")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("right-password-1")
    with write_session(engine) as session:
        session.exec(update(User).where(User.id == user_id).values(password_hash=weak))  # type: ignore[call-overload]
    assert sign_in(live_server, "olga.oldhash", "right-password-1").status_code == 200
    with read_session(engine) as session:
        stored = session.get(User, user_id).password_hash  # type: ignore[union-attr]
    # Rehashed at the server's cost (the suite runs at the cheap test cost, see conftest).
    assert stored != weak and not passwords.COSTS[settings.auth.password_cost]().check_needs_rehash(stored)


def test_bad_bodies_get_400(live_server: LiveServer) -> None:
    for body in ({}, {"username": "x"}, {"username": 1, "password": 2}):
        response = httpx.post(f"{live_server.url}/api/auth/sign-in", json=body)
        assert response.status_code == 400, (body, response.text)


# -- the service ---------------------------------------------------------------------------


def test_password_is_stored_as_argon2id(engine: Engine) -> None:
    user_id = add_user(engine, "hash.check", password="a-secret-passphrase")
    with read_session(engine) as session:
        stored = session.get(User, user_id).password_hash  # type: ignore[union-attr]
    assert stored.startswith("$argon2id$") and "a-secret-passphrase" not in stored
    assert PasswordHasher().verify(stored, "a-secret-passphrase")


def test_window_passing_with_an_explicit_now(engine: Engine, settings: Settings) -> None:
    add_user(engine, "tim.timed")
    limit, window = settings.auth.failed_login_limit, settings.auth.failed_login_window_seconds
    start = datetime.now(UTC)
    for i in range(limit):
        with pytest.raises(NotAuthenticated):
            authenticate(engine, username="tim.timed", password="nope-nope-nope", settings=settings.auth,
                         now=start + timedelta(seconds=i))
    with pytest.raises(TooManyAttempts) as refused:
        authenticate(engine, username="tim.timed", password="right-password-1", settings=settings.auth,
                     now=start + timedelta(seconds=limit))
    # The oldest failure (at `start`) ages out after `window` seconds.
    assert refused.value.retry_after == window - limit
    with pytest.raises(TooManyAttempts):
        authenticate(engine, username="tim.timed", password="right-password-1", settings=settings.auth,
                     now=start + timedelta(seconds=window - 1))
    user = authenticate(engine, username="tim.timed", password="right-password-1", settings=settings.auth,
                        now=start + timedelta(seconds=window + 1))
    assert user.username == "tim.timed"
    assert failures(engine, "tim.timed") == 0


def test_a_burst_of_parallel_guesses_gets_no_more_than_the_limit(engine: Engine, settings: Settings) -> None:
    add_user(engine, "bea.burst")
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def guess() -> None:
        barrier.wait()
        try:
            authenticate(engine, username="bea.burst", password="wrong-guess-123", settings=settings.auth)
        except (NotAuthenticated, TooManyAttempts) as exc:
            with lock:
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 12
    assert outcomes.count("NotAuthenticated") <= settings.auth.failed_login_limit
    assert failures(engine, "bea.burst") <= settings.auth.failed_login_limit
    with write_session(engine) as session:
        session.exec(delete(FailedSignIn).where(FailedSignIn.username == "bea.burst"))  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "has space"}, "username"),
        ({"username": "x" * 81}, "username"),
        ({"username": "émile"}, "username"),
        ({"password": "short"}, "password"),
        ({"password": "p" * 2000}, "password"),
        ({"role": "superuser"}, "role"),
        ({"role": "crew"}, "crew_id"),
        ({"role": "crew", "crew_id": 999_999}, "crew_id"),
        ({"role": "dispatcher", "crew_id": "CREW"}, "crew_id"),
    ],
)
def test_create_user_names_the_bad_field(engine: Engine, crew_id: int, kwargs: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"username": "valid.name", "password": "long-enough-1", "role": "dispatcher"}
    values.update(kwargs)
    if values.get("crew_id") == "CREW":
        values["crew_id"] = crew_id
    with write_session(engine) as session, pytest.raises(ValidationFailed) as error:
        create_user(session, **values)  # type: ignore[arg-type]
    assert error.value.field == field


def test_duplicate_username_is_a_conflict(engine: Engine) -> None:
    add_user(engine, "dora.dup")
    with write_session(engine) as session, pytest.raises(Conflict) as error:
        create_user(session, username="Dora.Dup", password="long-enough-1", role="admin")
    assert error.value.field == "username"


def test_create_user_over_http_names_the_field(live_server: LiveServer, engine: Engine) -> None:
    add_user(engine, "adam.admin", role="admin")
    token = sign_in(live_server, "adam.admin", "right-password-1").json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{live_server.url}/api/users"
    short = httpx.post(url, headers=headers, json={"username": "new.one", "password": "short", "role": "crew"})
    assert short.status_code == 400 and short.json()["field"] == "password"
    ok = httpx.post(url, headers=headers, json={"username": "new.one", "password": "long-enough-1", "role": "dispatcher"})
    assert ok.status_code == 201 and "argon2" not in ok.text
    again = httpx.post(url, headers=headers, json={"username": "new.one", "password": "long-enough-1", "role": "dispatcher"})
    assert again.status_code == 409 and again.json()["field"] == "username"


# -- last: uses up this address's allowance on this server ---------------------------------


def test_sign_in_is_rate_limited_per_address(live_server: LiveServer) -> None:
    statuses = [
        httpx.post(f"{live_server.url}/api/auth/sign-in", json={}).status_code for _ in range(31)
    ]
    assert statuses[0] == 400 and statuses[-1] == 429
    limited = httpx.post(f"{live_server.url}/api/auth/sign-in", json={})
    assert limited.status_code == 429
    assert "ratelimit-reset" in {k.lower() for k in limited.headers} or "retry-after" in {k.lower() for k in limited.headers}

"""Every /api route against every role, through the real server (Hypercorn on loopback).

The matrix below is the role rule of each route; a test checks that it covers every route
the auth and work-order routers register, and another that anonymous requests to *any*
/api route of the app (including ones added later) are refused.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import Engine, update
from sqlmodel import select

from server.auth import auth_router, create_user
from server.db import write_session
from server.models import Case, User
from server.settings import Settings
from server.workorders import workorders_router
from tests.api.support import PASSWORDS, ROLES, USERNAMES, Api, Seed

SIGNED_IN = {"anonymous": 401, "admin": 200, "dispatcher": 200, "crew_a": 200, "crew_b": 200}
DISPATCH = {**SIGNED_IN, "crew_a": 403, "crew_b": 403}
ADMIN = {**DISPATCH, "dispatcher": 403}
_counter = itertools.count(1)


def _new_user(seed: Seed) -> dict[str, Any]:
    return {"username": f"new.user-{next(_counter)}", "password": "a-long-password", "role": "dispatcher"}


def _new_crew(seed: Seed) -> dict[str, Any]:
    return {"name": f"Night crew {next(_counter)}", "capacity": 6}


def _sign_in(seed: Seed) -> dict[str, Any]:
    return {"username": USERNAMES["dispatcher"], "password": PASSWORDS["dispatcher"]}


# (method, path template, body factory, expected status per role)
MATRIX: list[tuple[str, str, Any, dict[str, int]]] = [
    ("POST", "/api/auth/sign-in", _sign_in, dict.fromkeys(ROLES, 200)),
    ("GET", "/api/me", None, SIGNED_IN),
    ("GET", "/api/users", None, ADMIN),
    ("POST", "/api/users", _new_user, {**ADMIN, "admin": 201}),
    ("GET", "/api/crews", None, SIGNED_IN),
    ("POST", "/api/crews", _new_crew, {**ADMIN, "admin": 201}),
    ("GET", "/api/workorders", None, SIGNED_IN),
    ("GET", "/api/workorders.geojson", None, SIGNED_IN),
    ("GET", "/api/workorders/{a_order}", None, {**SIGNED_IN, "crew_b": 403}),
    ("GET", "/api/workorders/{b_order}", None, {**SIGNED_IN, "crew_a": 403}),
    ("GET", "/api/workorders/{unassigned_order}", None, {**SIGNED_IN, "crew_a": 403, "crew_b": 403}),
    ("GET", "/api/workorders/{missing}", None, {**dict.fromkeys(ROLES, 404), "anonymous": 401}),
    ("GET", "/api/cases/{contact_case}/contact", None, DISPATCH),
    ("GET", "/api/unlocated", None, DISPATCH),
    ("GET", "/api/service-types", None, SIGNED_IN),
    ("GET", "/api/districts", None, SIGNED_IN),
    ("GET", "/api/districts?geometry=true", None, SIGNED_IN),
]
CONTACT_WORDS = ("email", "phone", "first_name", "last_name")


def _fill(template: str, seed: Seed) -> str:
    return template.format(
        a_order=seed.a_orders[0],
        b_order=seed.b_orders[0],
        unassigned_order=seed.unassigned_order,
        missing=10**9,
        contact_case=seed.a_contact_case,
    )


def assert_no_contact(text: str, seed: Seed) -> None:
    lowered = text.lower()
    for word in CONTACT_WORDS:
        assert word not in lowered, f"{word!r} in a crew response"
    for value in seed.contact_values:
        assert value.lower() not in lowered, f"contact value {value!r} in a crew response"


def assert_no_secrets(text: str) -> None:
    assert "argon2" not in text and "password_hash" not in text


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "template", "body", "expected"), MATRIX, ids=[f"{m} {t}" for m, t, _, _ in MATRIX]
)
def test_role_matrix(
    api: Api, seed: Seed, method: str, template: str, body: Any, expected: dict[str, int], role: str
) -> None:
    response = api.request(method, role, _fill(template, seed), json=body(seed) if body else None)
    assert response.status_code == expected[role], response.text
    assert_no_secrets(response.text)
    if role.startswith("crew"):
        assert_no_contact(response.text, seed)
    if response.status_code in (401, 403):
        assert response.json()["status_code"] == response.status_code


def test_matrix_covers_every_route_of_these_routers() -> None:
    covered = {(m, re.sub(r"\{[a-z_]+\}", "{}", t.split("?")[0])) for m, t, _, _ in MATRIX}
    for router in (auth_router, workorders_router):
        for route in router.routes:
            for method in route.methods - {"OPTIONS", "HEAD"}:  # type: ignore[attr-defined]
                path = re.sub(r"\{[a-z_]+(:[a-z]+)?\}", "{}", route.path)
                assert (method, path) in covered, f"{method} {route.path} has no row in MATRIX"


def test_anonymous_refused_on_every_api_route_of_the_app(api: Api, settings: Settings) -> None:
    from server.app import create_app
    from server.auth.tokens import PUBLIC_API_PATHS

    app = create_app(settings)
    # Sign-in, and what residents use without an account (their pages' API, the push key,
    # a browser renewing its subscription): server.auth.tokens.PUBLIC_API_PATHS.
    public = [re.compile(pattern) for pattern in PUBLIC_API_PATHS]
    assert {p.pattern for p in public} == {r"^/api/auth/sign-in$", r"^/api/docs(?:/|$)", r"^/api/resident(?:/|$)",
                                          r"^/api/push/vapid-public-key$", r"^/api/push/renew$",
                                          r"^/api/workflow$"}
    checked = 0
    for route in app.routes:
        if not route.path.startswith(("/api/", "/sync")) or route.path.startswith("/api/docs"):
            continue
        if any(pattern.match(route.path) for pattern in public):
            continue
        path = re.sub(r"\{[a-z_]+(:[a-z]+)?\}", "1", route.path)
        for method in route.methods - {"OPTIONS", "HEAD"}:  # type: ignore[attr-defined]
            response = api.request(method, "anonymous", path)
            assert response.status_code == 401, f"{method} {route.path}: {response.status_code}"
            checked += 1
    assert checked >= 12  # the auth and work-order routes at least


def test_public_routes_stay_public(api: Api) -> None:
    assert api.get("anonymous", "/healthz").status_code == 200
    assert api.get("anonymous", "/api/docs/openapi.json").status_code == 200
    assert api.get("anonymous", "/").status_code != 401
    assert api.get("anonymous", "/open311/v2/services.json").status_code != 401


# -- what a crew sees ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["crew_a", "crew_b"])
def test_crew_lists_only_its_own_work_orders(api: Api, seed: Seed, engine: Engine, role: str) -> None:
    crew_id = seed.crew_a if role == "crew_a" else seed.crew_b
    own = seed.a_orders if role == "crew_a" else seed.b_orders
    items = api.walk(role, "/api/workorders", limit=7)
    assert sorted(i["id"] for i in items) == sorted(own)
    assert {i["crew_id"] for i in items} == {crew_id}

    collection = api.get(role, "/api/workorders.geojson").json()
    assert sorted(f["id"] for f in collection["features"]) == sorted(own)

    # Filters narrow; they never widen a crew's scope.
    other = seed.crew_b if role == "crew_a" else seed.crew_a
    assert api.walk(role, "/api/workorders", crew_id=other) == []
    assert api.get(role, "/api/workorders.geojson", crew_id=other).json()["features"] == []
    for page in (api.get(role, "/api/workorders", limit=500), api.get(role, "/api/workorders.geojson")):
        assert_no_contact(page.text, seed)


def _order_of(engine: Engine, case_id: int) -> int:
    with write_session(engine) as session:
        case = session.get(Case, case_id)
        assert case is not None and case.work_order_id is not None
        return case.work_order_id


def test_crew_work_order_detail_has_cases_but_no_contact(api: Api, seed: Seed, engine: Engine) -> None:
    order_id = _order_of(engine, seed.a_contact_case)
    crew_view = api.get("crew_a", f"/api/workorders/{order_id}")
    assert crew_view.status_code == 200
    detail = crew_view.json()
    assert seed.a_contact_case in [c["id"] for c in detail["cases"]]
    assert len(detail["cases"]) == detail["case_count"] and detail["events"]
    for case in detail["cases"]:
        assert "tracking_token" not in case and "has_contact" not in case
    assert_no_contact(crew_view.text, seed)
    dispatcher_view = api.get("dispatcher", f"/api/workorders/{order_id}").json()
    assert [c["id"] for c in detail["cases"]] == [c["id"] for c in dispatcher_view["cases"]]


def test_dispatcher_sees_contact_only_through_the_contact_route(api: Api, seed: Seed, engine: Engine) -> None:
    order_id = _order_of(engine, seed.a_contact_case)
    detail = api.get("dispatcher", f"/api/workorders/{order_id}")
    case = next(c for c in detail.json()["cases"] if c["id"] == seed.a_contact_case)
    assert case["has_contact"] is True and case["tracking_token"]
    for value in seed.contact_cases[seed.a_contact_case].values():
        assert value not in detail.text

    contact = api.get("dispatcher", f"/api/cases/{seed.a_contact_case}/contact")
    assert contact.json() == {"case_id": seed.a_contact_case, **seed.contact_cases[seed.a_contact_case]}
    no_contact = api.get("admin", f"/api/cases/{_case_without_contact(engine, seed)}/contact")
    assert no_contact.status_code == 404
    assert api.get("admin", "/api/cases/999999999/contact").status_code == 404


def _case_without_contact(engine: Engine, seed: Seed) -> int:
    with write_session(engine) as session:
        return next(
            cid for cid in session.exec(select(Case.id).order_by(Case.id).limit(50)).all()
            if cid not in seed.contact_cases
        )


def test_crew_sees_only_crew_names(api: Api) -> None:
    crews = api.get("crew_a", "/api/crews").json()
    assert crews and all(set(c) == {"id", "name"} for c in crews)
    full = api.get("dispatcher", "/api/crews").json()
    assert {"capacity", "skills", "home_districts"} <= set(full[0])


def test_user_lists_never_carry_password_hashes(api: Api) -> None:
    users = api.get("admin", "/api/users")
    assert users.status_code == 200
    assert {u["username"] for u in users.json()} >= set(USERNAMES.values())
    assert all("password" not in key for u in users.json() for key in u)
    assert_no_secrets(users.text)


# -- tokens --------------------------------------------------------------------------------


def _token(settings: Settings, sub: str, *, exp: datetime, secret: str | None = None, **extra: Any) -> str:
    now = datetime.now(UTC)
    payload = {"sub": sub, "exp": exp, "iat": now - timedelta(hours=2), **extra}
    return jwt.encode(payload, secret or settings.auth.secret, algorithm="HS256")


def _status(api: Api, token: str) -> int:
    return api.client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _token_key(engine: Engine, user_id: int) -> dict[str, Any]:
    """The extras a real token carries: the user's token key (server/auth/tokens.py)."""
    with write_session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        return {"extras": {"tk": user.token_key}}


def test_expired_token_is_refused(api: Api, seed: Seed, settings: Settings, engine: Engine) -> None:
    admin = str(seed.user_ids["admin"])
    key = _token_key(engine, seed.user_ids["admin"])
    assert _status(api, _token(settings, admin, exp=datetime.now(UTC) + timedelta(minutes=5), **key)) == 200
    assert _status(api, _token(settings, admin, exp=datetime.now(UTC) + timedelta(minutes=5))) == 401  # no key
    assert _status(api, _token(settings, admin, exp=datetime.now(UTC) - timedelta(minutes=1), **key)) == 401


def test_tampered_tokens_are_refused(api: Api, seed: Seed, settings: Settings) -> None:
    crew_token = api.tokens["crew_a"]
    header, payload, signature = crew_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(seed.user_ids["admin"])
    claims["extras"] = {"role": "admin", "crew_id": None}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert _status(api, f"{header}.{forged}.{signature}") == 401

    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert _status(api, f"{header}.{payload}.{flipped}") == 401

    future = datetime.now(UTC) + timedelta(hours=1)
    admin = str(seed.user_ids["admin"])
    assert _status(api, _token(settings, admin, exp=future, secret="another-secret-" + "y" * 40)) == 401
    unsigned = jwt.encode({"sub": admin, "exp": future}, key=None, algorithm="none")
    assert _status(api, unsigned) == 401
    assert _status(api, _token(settings, "999999", exp=future)) == 401  # no such user
    assert _status(api, _token(settings, "not-a-number", exp=future)) == 401
    assert _status(api, "not.a.token") == 401
    assert api.client.get("/api/me", headers={"Authorization": "Bearer"}).status_code == 401


def test_a_deactivated_users_token_stops_working(api: Api, engine: Engine) -> None:
    with write_session(engine) as session:
        user = create_user(session, username="soon.gone", password="soon-gone-password", role="dispatcher")
        user_id = user.id
    token = api.client.post(
        "/api/auth/sign-in", json={"username": "soon.gone", "password": "soon-gone-password"}
    ).json()["token"]
    assert _status(api, token) == 200
    with write_session(engine) as session:
        session.exec(update(User).where(User.id == user_id).values(active=False))  # type: ignore[call-overload]
    assert _status(api, token) == 401


def test_role_comes_from_the_database_not_the_token(api: Api, seed: Seed, engine: Engine) -> None:
    """The token's role claim is for the client; a changed role applies at once."""
    with write_session(engine) as session:
        user = create_user(
            session, username="role.switch", password="role-switch-password", role="crew", crew_id=seed.crew_a
        )
        user_id = user.id
    token = api.client.post(
        "/api/auth/sign-in", json={"username": "role.switch", "password": "role-switch-password"}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/unlocated", headers=headers).status_code == 403
    with write_session(engine) as session:
        session.exec(update(User).where(User.id == user_id).values(role="dispatcher", crew_id=None))  # type: ignore[call-overload]
    assert api.client.get("/api/unlocated", headers=headers).status_code == 200

"""Property tests over the HTTP surface, from our own OpenAPI schema (Schemathesis).

Every operation of `/api/docs/openapi.json` (the `/api`, `/sync` and Open311 routes; not
the endless event stream) gets schema-valid and schema-violating requests (Schemathesis'
positive and negative generation: wrong types, missing and extra fields, out-of-range
numbers, odd strings) as each role: anonymous, crew, dispatcher, admin. The properties:

- no answer is a 5xx (a 503 from admission would be allowed, but this run never overloads);
- every 400 and 422 names the field: `field` or `extra[].key` in our JSON errors, the name
  of a parameter that was sent in an Open311 error's description;
- every other 4xx says what went wrong (a JSON or Open311 error body).

A real server on loopback, SQLite and PostgreSQL. Bounded: EXAMPLES per mode, operation
and role; derandomised in CI (the `ci` Hypothesis profile).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy import Engine

from server.auth.users import create_user
from server.db import write_session
from server.notify.vapid import ensure_keys
from server.settings import Settings
from tests.conftest import LiveServer
from tests.runtime.support import bearer
from tests.sync_http.support import seed

pytestmark = pytest.mark.slow  # about 1-2 minutes on this machine

EXAMPLES = 8  # per operation and mode; the role of each example is drawn too
ROLES = ("anonymous", "crew", "dispatcher", "admin")
SKIPPED_PATHS = {"/sync/v1/events", "/api/dispatch/live"}  # Server-Sent Events: answers that never end


@pytest.fixture(scope="module")
def tokens(engine: Engine, settings: Settings) -> dict[str, dict[str, str]]:
    seed(engine, per_crew=5)
    with write_session(engine) as session:
        create_user(session, username="schema-admin", password="a-long-test-password", role="admin")
        ensure_keys(session)  # a server with push set up, as `fieldwork demo` has
    return {
        "anonymous": {},
        "crew": bearer(settings, engine, "crew-north"),
        "dispatcher": bearer(settings, engine, "dispatcher"),
        "admin": bearer(settings, engine, "schema-admin"),
    }


@pytest.fixture(scope="module")
def operations(live_server: LiveServer) -> list[Any]:
    raw = httpx.get(f"{live_server.url}/api/docs/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.path not in SKIPPED_PATHS]


def sent_names(case: Any) -> set[str]:
    names: set[str] = set()
    for part in (case.query, case.path_parameters, case.headers):
        names.update(str(k) for k in (part or {}))
    if isinstance(case.body, dict):
        names.update(str(k) for k in case.body)
    return names


def problem(case: Any, response: schemathesis.Response) -> str | None:
    """What is wrong with this answer, or None."""
    status = response.status_code
    if status >= 500:
        return f"{status}: {response.text[:300]}"
    if status < 400:
        return None
    if case.operation.path.startswith("/open311/"):
        content_type = " ".join(response.headers.get("content-type", []))  # lower-case keys, lists
        if case.operation.path.endswith(".xml") or "xml" in content_type:
            return None if "<error>" in response.text else f"{status} without an Open311 error: {response.text[:200]}"
        try:
            errors = response.json()
            descriptions = " ".join(e["description"] for e in errors)
        except (ValueError, KeyError, TypeError):
            return f"{status} without an Open311 error: {response.text[:200]}"
        # The body's Content-Type counts as sent (a POST of the wrong kind is told so).
        named = sent_names(case) | {"api_key", "content-type"}
        if status == 400 and not any(name.lower() in descriptions.lower() for name in named):
            return f"400 names no field that was sent ({sorted(sent_names(case))}): {descriptions[:200]}"
        return None
    if case.operation.method.upper() == "HEAD":
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{status} with a body that is not JSON: {response.text[:200]}"
    if not isinstance(body, dict) or "detail" not in body:
        return f"{status} without a detail: {response.text[:200]}"
    if status in (400, 422):
        keys = [item.get("key") for item in body.get("extra") or [] if isinstance(item, dict)]
        if not body.get("field") and not any(keys):
            return f"{status} names no field: {json.dumps(body)[:300]}"
    return None


def property_run(url: str, session: requests.Session, tokens: dict[str, dict[str, str]], operation: Any,
                 mode: GenerationMode, found: list[str]) -> Any:
    """A Hypothesis test of one operation in one generation mode; the last problem in `found`."""

    @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
    @given(case=operation.as_strategy(generation_mode=mode), role=st.sampled_from(ROLES))
    def run(case: Any, role: str) -> None:
        response = case.call(base_url=url, session=session, headers=tokens[role], timeout=30)
        if (wrong := problem(case, response)) is not None:
            found.append(f"as {role}: {case.method} {case.formatted_path} {case.query or ''}: {wrong}")
            raise AssertionError(wrong)

    return run


def test_no_5xx_and_every_400_names_the_field(
    live_server: LiveServer, tokens: dict[str, dict[str, str]], operations: list[Any]
) -> None:
    failures: dict[str, str] = {}
    session = requests.Session()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            found: list[str] = []
            try:
                property_run(live_server.url, session, tokens, operation, mode, found)()
            except Exception as exc:  # an AssertionError, or Hypothesis' own (a flaky failure)
                failures[f"{operation.method.upper()} {operation.path} ({mode.value})"] = (
                    found[-1] if found else f"{type(exc).__name__}: {exc}"[:500])
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
    assert not any("Traceback" in line for line in live_server.log), "".join(live_server.log)[-3000:]

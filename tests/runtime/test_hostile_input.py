"""Hostile input on every route: a 4xx that names the field, never a 500, and the
connection stays usable after a refused body. A real server on loopback, SQLite and
PostgreSQL.
"""

from __future__ import annotations

import base64
import re
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import h11
import httpx
import pytest
from sqlalchemy import Engine

from server.auth.users import create_user
from server.db import write_session
from server.settings import Settings
from tests.conftest import LiveServer
from tests.runtime.support import bearer
from tests.sync_http.support import Seeded, seed

HUGE = "99999999999999999999"  # beyond 64 bits
HUGE_CURSOR = base64.urlsafe_b64encode(b'{"id": 99999999999999999999}').decode().rstrip("=")
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 5_000 + "1" + "}" * 5_000


@pytest.fixture(scope="module")
def seeded(engine: Engine) -> Seeded:
    return seed(engine, per_crew=3)


@pytest.fixture(scope="module")
def tokens(seeded: Seeded, engine: Engine, settings: Settings) -> dict[str, dict[str, str]]:
    with write_session(engine) as session:
        create_user(session, username="hostile-admin", password="a-long-test-password", role="admin")
    return {
        "admin": bearer(settings, engine, "hostile-admin"),
        "dispatcher": bearer(settings, engine, "dispatcher"),
        "crew": bearer(settings, engine, "crew-north"),
        "anonymous": {},
    }


def named_fields(response: httpx.Response) -> set[str]:
    """The fields a 4xx names: ours (`field`) or Litestar's validation (`extra[].key`)."""
    body = response.json()
    fields = {body["field"]} if isinstance(body, dict) and body.get("field") else set()
    for item in body.get("extra") or [] if isinstance(body, dict) else []:
        if isinstance(item, dict) and item.get("key"):
            fields.add(str(item["key"]).split(".")[0].split("[")[0])
    return fields


@pytest.mark.parametrize(
    ("role", "method", "path", "body", "field"),
    [
        ("dispatcher", "GET", f"/api/workorders?district_id={HUGE}", None, "district_id"),
        ("dispatcher", "GET", f"/api/workorders?crew_id={HUGE}", None, "crew_id"),
        ("dispatcher", "GET", f"/api/workorders?crew_id=-{HUGE}", None, "crew_id"),
        # PostgreSQL's `integer` (our ids) ends at 2**31 - 1: one more was a 500 there.
        ("crew", "GET", f"/api/workorders?crew_id={2**31}", None, "crew_id"),
        ("dispatcher", "GET", f"/api/workorders/{2**31}", None, "work_order_id"),
        ("dispatcher", "GET", f"/api/dispatch/conflicts?after_id={2**31}", None, "after_id"),
        ("dispatcher", "PATCH", "/api/dispatch/workorders/1", {"notes": "x", "notes_base_version": 2**31},
         "notes_base_version"),
        ("dispatcher", "GET", f"/api/workorders.geojson?district_id={HUGE}", None, "district_id"),
        ("dispatcher", "GET", f"/api/workorders?priority={HUGE}", None, "priority"),
        ("dispatcher", "GET", f"/api/workorders?limit={HUGE}", None, "limit"),
        ("dispatcher", "GET", f"/api/workorders?cursor={HUGE_CURSOR}", None, "cursor"),
        ("dispatcher", "GET", f"/api/workorders/{HUGE}", None, "work_order_id"),
        ("dispatcher", "GET", f"/api/workorders/{'9' * 4000}", None, "work_order_id"),
        ("dispatcher", "GET", f"/api/cases/{HUGE}/contact", None, "case_id"),
        ("dispatcher", "GET", f"/api/dispatch/conflicts?after_id={HUGE}", None, "after_id"),
        ("dispatcher", "GET", f"/api/dispatch/rejections?after_id={HUGE}", None, "after_id"),
        ("dispatcher", "PATCH", f"/api/dispatch/workorders/{HUGE}", {"priority": 2}, "work_order_id"),
        ("dispatcher", "PATCH", "/api/dispatch/workorders/1", {"crew_id": int(HUGE)}, "crew_id"),
        ("dispatcher", "PATCH", "/api/dispatch/workorders/1", {"notes": "x", "notes_base_version": int(HUGE)},
         "notes_base_version"),
        ("dispatcher", "DELETE", f"/api/dispatch/workorders/{HUGE}", None, "work_order_id"),
        ("dispatcher", "POST", "/api/dispatch/assign", {"work_order_ids": [int(HUGE)], "crew_id": None},
         "work_order_ids"),
        ("dispatcher", "POST", "/api/dispatch/assign", {"work_order_ids": [1], "crew_id": int(HUGE)}, "crew_id"),
        ("dispatcher", "POST", f"/api/dispatch/conflicts/{HUGE}/resolve", {"resolution": "keep_server"},
         "conflict_id"),
        ("dispatcher", "POST", f"/api/dispatch/rejections/{HUGE}/resolve", {"resolution": "x"}, "rejection_id"),
        ("crew", "POST", "/sync/v1/pull", {"client_id": "hostile-client", "limit": int(HUGE)}, "limit"),
        ("admin", "POST", "/api/crews", ["not", "an", "object"], "body"),
        ("crew", "POST", "/sync/v1/push", {"client_id": "hostile-client", "schema_version": 1,
                                           "mutations": [{"seq": int(HUGE), "mid": "m", "name": "note", "args": {}}]},
         "mutations"),
    ],
)
def test_integers_beyond_64_bits_are_a_400_naming_the_field(
    live_server: LiveServer, tokens: dict[str, dict[str, str]], role: str, method: str, path: str,
    body: Any, field: str,
) -> None:
    response = httpx.request(method, f"{live_server.url}{path}", json=body, headers=tokens[role], timeout=10)
    assert response.status_code == 400, response.text
    assert field in named_fields(response), response.text


def test_in_range_values_still_work(live_server: LiveServer, tokens: dict[str, dict[str, str]]) -> None:
    for path in ("/api/dispatch/conflicts?after_id=0", "/api/dispatch/rejections?after_id=0",
                 f"/api/workorders?crew_id={2**31 - 1}", f"/api/dispatch/conflicts?after_id={2**31 - 1}"):
        response = httpx.get(f"{live_server.url}{path}", headers=tokens["dispatcher"], timeout=10)
        assert response.status_code == 200, (path, response.text)
    response = httpx.get(f"{live_server.url}/api/workorders/{2**31 - 1}", headers=tokens["dispatcher"], timeout=10)
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("page", ["1e20", "999999999999999999999", "-1", "0", "1.5", "9" * 5000])
def test_open311_page_out_of_range_is_a_400_naming_page(live_server: LiveServer, page: str) -> None:
    for fmt in ("json", "xml"):
        for resource in ("requests", "servicerequestupdates"):
            response = httpx.get(f"{live_server.url}/open311/v2/{resource}.{fmt}", params={"page": page},
                                 timeout=10)
            assert response.status_code == 400, response.text
            assert "page" in response.text
    assert not any("Traceback" in line for line in live_server.log), "".join(live_server.log)[-3000:]


def json_routes(url: str) -> list[tuple[str, str]]:
    """Every operation in our OpenAPI schema that takes a JSON body."""
    schema = httpx.get(f"{url}/api/docs/openapi.json", timeout=10).json()
    routes = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "application/json" in operation.get("requestBody", {}).get("content", {}):
                routes.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return routes


def test_deep_json_is_a_400_naming_the_body_on_every_json_route(
    live_server: LiveServer, tokens: dict[str, dict[str, str]]
) -> None:
    routes = json_routes(live_server.url)
    assert ("POST", "/api/auth/sign-in") in routes and ("POST", "/sync/v1/push") in routes
    for method, path in routes:
        role = "crew" if path.startswith("/sync") else "dispatcher"
        for body in (DEEP_ARRAY, DEEP_OBJECT):
            response = httpx.request(method, f"{live_server.url}{path}", content=body, timeout=10,
                                     headers={**tokens[role], "Content-Type": "application/json"})
            # 403 for the admin-only routes is fine: the role check comes before the body.
            assert response.status_code in {400, 403, 413}, (method, path, response.status_code, response.text)
            if response.status_code == 400:
                assert named_fields(response) == {"body"}, (method, path, response.text)
    # A push nested just past the limit inside a mutation's args: refused whole, nothing stored.
    nested: Any = 1
    for _ in range(40):
        nested = [nested]
    push = {"client_id": "deep-args-client", "schema_version": 1,
            "mutations": [{"seq": 1, "mid": "m1", "name": "note", "args": {"deep": nested}}]}
    response = httpx.post(f"{live_server.url}/sync/v1/push", json=push, headers=tokens["crew"], timeout=10)
    assert response.status_code == 400 and named_fields(response) == {"body"}, response.text
    assert not any("RecursionError" in line for line in live_server.log)


@pytest.mark.parametrize("work_order_id", [2**31, 2**63, int(HUGE)])
def test_an_out_of_range_id_in_a_mutation_is_rejected_alone(
    live_server: LiveServer, tokens: dict[str, dict[str, str]], work_order_id: int
) -> None:
    uid = f"huge-{uuid.uuid4().hex[:8]}"
    push = {"client_id": f"huge-{uuid.uuid4().hex[:8]}", "schema_version": 1, "mutations": [
        {"seq": 1, "mid": uid, "name": "note", "args": {"work_order_id": work_order_id, "uid": uid, "text": "x"}}]}
    response = httpx.post(f"{live_server.url}/sync/v1/push", json=push, headers=tokens["crew"], timeout=10)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["rejected"], response.text


def test_one_mutation_with_a_bad_device_time_is_rejected_alone(
    live_server: LiveServer, tokens: dict[str, dict[str, str]], seeded: Seeded
) -> None:
    """A phone's clock can say anything: that one edit is refused, the rest of the push applies
    (else one bad edit would block the phone's whole outbox on every retry)."""
    order = seeded.orders["north"][0]
    now = datetime.now(UTC).isoformat()

    def note(seq: int, device_ts: str) -> dict[str, Any]:
        uid = f"bad-time-{seq}-{uuid.uuid4().hex[:8]}"
        return {"seq": seq, "mid": uid, "name": "note", "device_ts": device_ts,
                "args": {"work_order_id": order, "uid": uid, "text": f"note {seq}"}}

    push = {"client_id": f"bad-time-{uuid.uuid4().hex[:8]}", "schema_version": 1,
            "mutations": [note(1, now), note(2, "0001-01-01T00:00:00+00:01"), note(3, now)]}
    response = httpx.post(f"{live_server.url}/sync/v1/push", json=push, headers=tokens["crew"], timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["last_seq"] == 3
    assert [r["status"] for r in body["results"]] == ["applied", "rejected", "applied"], body


def exchange(port: int, requests: list[tuple[h11.Request, bytes]], *, timeout: float = 10) -> list[h11.Response]:
    """Send requests one after another on one TCP connection; the responses, in order."""
    client = h11.Connection(h11.CLIENT)
    responses: list[h11.Response] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for request, body in requests:
            sock.sendall(client.send(request))
            if body:
                sock.sendall(client.send(h11.Data(data=body)))
            sock.sendall(client.send(h11.EndOfMessage()))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    data = sock.recv(65536)
                    assert data, "the server closed the connection"
                    client.receive_data(data)
                elif isinstance(event, h11.Response):
                    responses.append(event)
                elif isinstance(event, h11.EndOfMessage):
                    break
            if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                break
            client.start_next_cycle()
    return responses


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[h11.Request, bytes]:
    all_headers = [("Host", "127.0.0.1"), *headers.items()]
    if body or method in {"POST", "PUT"}:
        all_headers.append(("Content-Length", str(len(body))))
    return h11.Request(method=method, target=path, headers=all_headers), body


def test_the_connection_stays_usable_after_a_413(live_server: LiveServer, tokens: dict[str, dict[str, str]]) -> None:
    crew = tokens["crew"]
    too_big_push = b'{"client_id":"keepalive-client","schema_version":1,"mutations":[],"pad":"' + b"x" * 1_200_000 + b'"}'
    responses = exchange(live_server.port, [
        _request("POST", "/sync/v1/push", {**crew, "Content-Type": "application/json"}, too_big_push),
        _request("GET", "/api/me", crew),
    ])
    assert [r.status_code for r in responses] == [413, 200]

    form = b"service_code=x&description=" + b"x" * 200_000
    responses = exchange(live_server.port, [
        _request("POST", "/open311/v2/requests.json", {"Content-Type": "application/x-www-form-urlencoded"}, form),
        _request("GET", "/open311/v2/services.json", {}),
    ])
    assert [r.status_code for r in responses] == [413, 200]


def test_bodies_too_large_to_drain_close_the_connection_and_leave_the_server_free(
    live_server: LiveServer, tokens: dict[str, dict[str, str]]
) -> None:
    """Past the drain limit the server answers 413 with Connection: close and closes; the
    client may see the close before the answer (it is still sending). Either way, more
    refused uploads than the server has request slots must not keep any slot."""
    headers = {**tokens["crew"], "Content-Type": "image/jpeg"}
    body = b"\xff\xd8\xff" + b"x" * 40_000_000
    answers = []
    for _ in range(12):
        try:
            responses = exchange(live_server.port, [
                _request("PUT", "/sync/v1/blobs/" + "a" * 64, headers, body),
                _request("GET", "/api/me", tokens["crew"]),
            ])
        except (BrokenPipeError, ConnectionResetError):
            answers.append("closed while sending")
            continue
        assert [r.status_code for r in responses] == [413]
        assert (b"connection", b"close") in [(k.lower(), v.lower()) for k, v in responses[0].headers]
        answers.append("413, close")
    assert set(answers) <= {"413, close", "closed while sending"}
    assert httpx.get(f"{live_server.url}/api/me", headers=tokens["crew"], timeout=5).status_code == 200

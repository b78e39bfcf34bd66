"""The resident and push routes over real HTTP (Hypercorn on loopback, SQLite and
PostgreSQL): reporting, tracking by token / our number / the city's number, binding
browsers to reports and to crew members, their validation, Open311's POST
servicerequestupdates flowing into the same loop, and the limits on reporting."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, delete, func, update
from sqlmodel import Session, col, select

from server.auth.users import create_user
from server.db import write_session
from server.models import (
    Case,
    CaseContact,
    PushNotification,
    PushSubscription,
    SharedValue,
    WorkOrder,
    WorkOrderEvent,
    utcnow,
)
from server.notify.catalog import catalog
from server.notify.vapid import VapidIdentity
from server.settings import Settings
from tests.conftest import TEST_API_KEY, LiveServer
from tests.notify.pushservice import PushService
from tests.notify.support import HERE, crew_a, prepare, set_crew, set_status

PASSWORD = "resident api test password"
def _phone_photo() -> bytes:
    """A real JPEG as a phone takes it: with EXIF naming the phone and where it stood."""
    image = Image.new("RGB", (64, 48), (200, 120, 40))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Model X"  # Model
    exif[0x8825] = {1: "N", 2: (34.0, 3.0, 0.0), 3: "W", 4: (118.0, 14.0, 0.0)}  # GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


JPEG = _phone_photo()


@pytest.fixture(scope="module")
def identity(engine: Engine) -> VapidIdentity:
    identity = prepare(engine)
    with write_session(engine) as session:
        create_user(session, username="crew-one", password=PASSWORD, role="crew", crew_id=crew_a(engine))
    return identity


def _server(settings: Settings, **env: str) -> LiveServer:
    values = {"FIELDWORK_PUSH_ALLOW_LOOPBACK_HTTP": "1", "FIELDWORK_PUSH_SENDER": "0",
              "FIELDWORK_REPORTS_PER_MINUTE_PER_CLIENT": "1000"}
    values.update(env)
    server = LiveServer(settings, env_extra=values)
    server.start()
    return server


@pytest.fixture(scope="module")
def api(settings: Settings, identity: VapidIdentity) -> Iterator[httpx.Client]:
    server = _server(settings)
    with httpx.Client(base_url=server.url, timeout=20) as client:
        yield client
    server.stop()


@pytest.fixture(scope="module")
def push() -> Iterator[PushService]:
    with PushService() as service:
        yield service


_SPOT = iter(range(1, 10_000))


def multipart(fields: dict[str, str], photo: bytes | None) -> tuple[bytes, str]:
    """multipart/form-data as a browser's FormData sends it (with or without a file)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if photo is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="photo.jpg"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def report(api: httpx.Client, *, photo: bytes | None = None, **fields: str) -> httpx.Response:
    n = next(_SPOT)
    form = {"service_code": "pothole", "lat": f"{HERE[0] + 0.02 * n:.6f}", "long": f"{HERE[1]:.6f}",
            "description": "Hole by the bus stop", "language": "es"}
    form.update(fields)
    body, content_type = multipart({k: v for k, v in form.items() if v is not None}, photo)
    return api.post("/api/resident/reports", content=body, headers={"Content-Type": content_type})


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def test_the_vapid_public_key_is_public(api: httpx.Client, identity: VapidIdentity) -> None:
    response = api.get("/api/push/vapid-public-key")
    assert response.status_code == 200
    key = response.json()["public_key"]
    assert key == identity.public_key and len(base64.urlsafe_b64decode(key + "==")) == 65
    assert "private" not in response.text.lower()


def test_a_report_is_taken_and_answered_in_the_residents_language(api: httpx.Client, engine: Engine) -> None:
    response = report(api, photo=JPEG, email="me@example.org")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["outcome"] == "created" and body["track_url"] == f"/track/{body['token']}"
    assert body["notice"].startswith(catalog("resident").t("es", "notice.created"))
    with Session(engine) as session:
        case = session.get(Case, int(body["service_request_id"]))
        assert case is not None and case.source == "web" and case.media_url
        assert session.get(CaseContact, case.id) is not None  # kept apart
    photo = httpx.get(case.media_url)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    kept = Image.open(io.BytesIO(photo.content))
    assert kept.size == (64, 48) and b"PhoneMaker" in JPEG
    assert not kept.getexif() and b"PhoneMaker" not in photo.content  # no phone, no position


def test_bad_reports_are_400_naming_the_field_and_write_nothing(api: httpx.Client, engine: Engine) -> None:
    before = count(engine, Case)
    cases = [
        ({"service_code": ""}, None, "service_code"),
        ({"lat": "", "long": ""}, None, "location"),
        ({"lat": "95"}, None, "lat"),
        ({"description": "x" * 4001}, None, "description"),
        ({}, b"GIF89a not a photo", "photo"),
        ({}, b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>", "photo"),  # a JPEG's first bytes only
    ]
    for fields, photo, name in cases:
        response = report(api, photo=photo, **fields)
        assert response.status_code == 400, (fields, response.text)
        assert name in response.text
    assert report(api, service_code="no-such-type").status_code == 404
    assert count(engine, Case) == before


def test_tracking_by_token_number_and_city_number(api: httpx.Client, engine: Engine) -> None:
    created = report(api).json()
    by_token = api.get(f"/api/resident/track/{created['token']}").json()
    assert by_token["token"] == created["token"] and by_token["can_subscribe"] is True
    assert [e["kind"] for e in by_token["timeline"]] == ["received"]
    assert by_token["expected"]["basis"] == "sla"
    by_number = api.get(f"/api/resident/track/{created['service_request_id']}").json()
    assert by_number["token"] is None and by_number["can_subscribe"] is False
    assert by_number["service_request_id"] == created["service_request_id"]
    for leaked in ("email", "phone", "first_name", "me@example.org"):
        assert leaked not in api.get(f"/api/resident/track/{created['token']}").text
    with write_session(engine) as session:  # a case as a city export brings it
        city = session.exec(select(Case).where(Case.id == int(created["service_request_id"]))).one()
        city.source, city.external_id = "la", "1-1523590121"
        session.add(city)
    assert api.get("/api/resident/track/1-1523590121").json()["city_request_id"] == "1-1523590121"
    assert api.get("/api/resident/track/1-9999999999").status_code == 404
    assert api.get("/track/1-1523590121").headers["content-type"].startswith("text/html")
    assert api.get("/track", params={"ref": "1-1523590121"}).headers["location"] == "/track/1-1523590121"


def test_binding_a_browser_to_a_report(api: httpx.Client, engine: Engine, push: PushService) -> None:
    created = report(api).json()
    path = f"/api/resident/track/{created['token']}/subscription"
    phone = push.subscriber()
    assert api.post(path, json={"subscription": phone.subscription(), "language": "ko"}).json() == {"language": "ko"}
    # The same browser again: one binding, its language updated.
    assert api.post(path, json={"subscription": phone.subscription(), "language": "bn"}).status_code == 201
    with Session(engine) as session:
        bound = session.exec(select(PushSubscription).where(PushSubscription.case_id == int(created["service_request_id"]))).all()
    assert [(s.endpoint, s.language) for s in bound] == [(phone.endpoint, "bn")]
    # Only the token binds: our number is public.
    by_number = f"/api/resident/track/{created['service_request_id']}/subscription"
    assert api.post(by_number, json={"subscription": phone.subscription()}).status_code == 404
    # A few browsers per report, not more.
    for _ in range(4):
        assert api.post(path, json={"subscription": push.subscriber().subscription()}).status_code == 201
    sixth = api.post(path, json={"subscription": push.subscriber().subscription()})
    assert sixth.status_code == 409 and sixth.json()["field"] == "endpoint"
    assert api.request("DELETE", path, json={"endpoint": phone.endpoint}).status_code == 204
    with Session(engine) as session:
        left = session.exec(select(PushSubscription.endpoint).where(
            PushSubscription.case_id == int(created["service_request_id"]))).all()
    assert phone.endpoint not in left and len(left) == 4


def test_subscriptions_are_checked(api: httpx.Client, push: PushService) -> None:
    created = report(api).json()
    path = f"/api/resident/track/{created['token']}/subscription"
    good = push.subscriber().subscription()

    def variant(**change: Any) -> dict[str, Any]:
        subscription = {**good, "keys": dict(good["keys"])}
        keys = change.pop("keys", {})
        subscription.update(change)
        subscription["keys"].update(keys)
        return {"subscription": subscription}

    wrong = {
        "endpoint": [variant(endpoint="http://push.example.com/abc"), variant(endpoint="https://10.0.0.7/push/x"),
                     variant(endpoint="https://user:pw@push.example.com/x"), variant(endpoint="not a url"),
                     variant(endpoint="https://push.example.com/" + "a" * 1100)],
        "keys.p256dh": [variant(keys={"p256dh": base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode()}),
                        variant(keys={"p256dh": "AAAA"})],
        "keys.auth": [variant(keys={"auth": base64.urlsafe_b64encode(b"x" * 8).decode()})],
        "expirationTime": [variant(expirationTime=-5)],
    }
    for field, bodies in wrong.items():
        for body in bodies:
            response = api.post(path, json=body)
            assert response.status_code == 400, (field, body, response.text)
            assert field in response.text, (field, response.text)
    assert api.post(path, json={"subscription": {"endpoint": good["endpoint"]}}).status_code == 400


def _crew_headers(api: httpx.Client) -> dict[str, str]:
    token = api.post("/api/auth/sign-in", json={"username": "crew-one", "password": PASSWORD}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def test_crew_members_bind_their_browsers(api: httpx.Client, engine: Engine, push: PushService) -> None:
    phone = push.subscriber()
    assert api.post("/api/me/push-subscriptions", json=phone.subscription()).status_code == 401
    headers = {**_crew_headers(api), "Accept-Language": "es-MX,es;q=0.9"}
    response = api.post("/api/me/push-subscriptions", json=phone.subscription(), headers=headers)
    assert response.status_code == 201 and response.json() == {"endpoint": phone.endpoint, "language": "es"}
    # The browser renews its subscription: the binding follows the new endpoint.
    renewed = push.subscriber()
    moved = api.post("/api/push/renew", json={"old_endpoint": phone.endpoint, "subscription": renewed.subscription()})
    assert moved.json() == {"moved": 1}
    with Session(engine) as session:
        rows = session.exec(select(PushSubscription).where(PushSubscription.user_id.is_not(None))).all()  # type: ignore[union-attr]
    assert [r.endpoint for r in rows] == [renewed.endpoint]
    gone = api.request("DELETE", "/api/me/push-subscriptions", json={"endpoint": renewed.endpoint}, headers=headers)
    assert gone.status_code == 204
    with Session(engine) as session:
        assert session.exec(select(PushSubscription).where(PushSubscription.user_id.is_not(None))).all() == []  # type: ignore[union-attr]


def _update(api: httpx.Client, **fields: str) -> httpx.Response:
    form = {"api_key": TEST_API_KEY, "updated_datetime": "2026-12-01T10:00:00-08:00", "description": ""}
    form.update(fields)
    return api.post("/open311/v2/servicerequestupdates.json", data=form)


def test_a_back_office_update_flows_into_the_same_loop(api: httpx.Client, engine: Engine, push: PushService) -> None:
    created = report(api).json()
    case_id = created["service_request_id"]
    phone = push.subscriber()
    api.post(f"/api/resident/track/{created['token']}/subscription",
             json={"subscription": phone.subscription(), "language": "fr"})

    assert _update(api, api_key="wrong", service_request_id=case_id, update_id="u1", status="FIXED").status_code == 403
    missing = api.post("/open311/v2/servicerequestupdates.json", data={"api_key": TEST_API_KEY})
    assert missing.status_code == 400
    for field in ("service_request_id", "update_id", "status", "updated_datetime", "description"):
        assert field in missing.text
    assert _update(api, service_request_id=case_id, update_id="u0", status="SOMETHING").status_code == 400
    assert _update(api, service_request_id="99999999", update_id="u0", status="FIXED").status_code == 404

    looked = _update(api, service_request_id=case_id, update_id="bo-1", status="INVESTIGATING",
                     description="Inspector visiting today")
    assert looked.status_code == 200, looked.text
    on_hold = _update(api, service_request_id=case_id, update_id="bo-1b", status="FIXED", description="Done")
    assert on_hold.status_code == 409 and "status" in on_hold.text  # the state machine: a job on hold is not done
    with Session(engine) as session:
        order_id = session.exec(select(Case.work_order_id).where(Case.id == int(case_id))).one()
    assert order_id is not None
    set_crew(engine, order_id, crew_a(engine))
    set_status(engine, order_id, "assigned")
    fixed = _update(api, service_request_id=case_id, update_id="bo-2", status="FIXED",
                    description="Patched with hot asphalt")
    (accepted,) = fixed.json()
    again = _update(api, service_request_id=case_id, update_id="bo-2", status="FIXED",
                    description="Patched with hot asphalt")
    assert again.json() == [accepted]  # the same update twice changes nothing
    xml = api.post("/open311/v2/servicerequestupdates.xml", data={
        "api_key": TEST_API_KEY, "service_request_id": case_id, "update_id": "bo-2", "status": "FIXED",
        "updated_datetime": "2026-12-01T10:00:00-08:00", "description": "Patched with hot asphalt"})
    assert f"<update_id>{accepted['update_id']}</update_id>" in xml.text

    with Session(engine) as session:
        case = session.get(Case, int(case_id))
        assert case is not None
        order = session.get(WorkOrder, case.work_order_id)
        assert order is not None and order.status == "completed" and order.resolution == "Patched with hot asphalt"
        kinds = [n.kind for n in session.exec(select(PushNotification).join(
            PushSubscription, PushSubscription.id == PushNotification.subscription_id).where(  # type: ignore[arg-type]
            PushSubscription.case_id == int(case_id)).order_by(PushNotification.id)).all()]  # type: ignore[arg-type]
        events = session.exec(select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == order.id)).all()
    assert kinds == ["acknowledged", "scheduled", "completed"]
    assert sum(1 for e in events if e.to_status == "completed") == 1
    (request,) = api.get(f"/open311/v2/requests/{case_id}.json").json()
    assert request["status"] == "closed" and request["status_notes"] == "Patched with hot asphalt"
    updates = api.get("/open311/v2/servicerequestupdates.json").json()
    mine = [u for u in updates if u["service_request_id"] == case_id and u["status"] == "fixed"]
    assert mine and mine[-1]["description"].endswith("Patched with hot asphalt")
    refused = _update(api, service_request_id=case_id, update_id="bo-3", status="INVESTIGATING")
    assert refused.status_code == 200  # a closed job: kept as a note, no status change
    reopened = _update(api, service_request_id=case_id, update_id="bo-4", status="REOPEN", description="Sank again")
    assert reopened.status_code == 200
    with Session(engine) as session:
        order = session.get(WorkOrder, order.id)
        assert order is not None and order.status == "new"


def test_reports_are_limited_per_client_and_city_wide(
    settings: Settings, identity: VapidIdentity, engine: Engine
) -> None:
    # The per-client count lives in the database (every worker shares it): this module's
    # earlier reports from 127.0.0.1 would count too, so start this minute afresh.
    with write_session(engine) as session:
        session.exec(delete(SharedValue).where(col(SharedValue.key).startswith("resident-reports:")))  # type: ignore[call-overload]
    per_client = _server(settings, FIELDWORK_REPORTS_PER_MINUTE_PER_CLIENT="2")
    try:
        with httpx.Client(base_url=per_client.url, timeout=20) as client:
            answers = [report(client).status_code for _ in range(3)]
            assert answers == [201, 201, 429]
            assert report(client).headers.get("ratelimit-reset")  # when to try again (Litestar's limiter)
            assert client.get("/api/resident/config").status_code == 200  # only reporting is limited
    finally:
        per_client.stop()
    # The cap counts every worker's reports of the last minute (in the database). This
    # module's earlier reports are moved two minutes back, so that none of them leaves or
    # enters the window while the test runs, and the cap is one.
    with write_session(engine) as session:
        session.exec(update(Case).where(col(Case.source) == "web")  # type: ignore[call-overload]
                     .values(requested_at=utcnow() - timedelta(minutes=2)))
    city_wide = _server(settings, FIELDWORK_REPORTS_PER_MINUTE_TOTAL="1")
    try:
        with httpx.Client(base_url=city_wide.url, timeout=20) as client:
            assert report(client).status_code == 201
            refused = report(client)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    finally:
        city_wide.stop()

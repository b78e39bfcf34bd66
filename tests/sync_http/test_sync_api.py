"""The sync protocol through real HTTP: offline scenarios, conflicts, blobs, bad input."""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from server.db import write_session
from server.models import Blob, WorkOrderEvent
from sync.models import SyncConflict, SyncMutation, SyncRejection
from tests.conftest import LiveServer
from tests.sync_http.support import Device, Seeded, db_order, image_bytes, mutation, seed, sign_in

PNG = image_bytes("PNG", size=(4, 3))


@pytest.fixture(scope="module")
def seeded(engine: Engine) -> Seeded:
    return seed(engine, per_crew=8)


@pytest.fixture(scope="module")
def server(seeded: Seeded, live_server: LiveServer) -> Iterator[LiveServer]:
    yield live_server


@pytest.fixture
def north(server: LiveServer) -> Device:
    return Device(server.url, sign_in(server.url, "crew-north"))


@pytest.fixture
def south(server: LiveServer) -> Device:
    return Device(server.url, sign_in(server.url, "crew-south"))


@pytest.fixture(scope="module")
def dispatcher(server: LiveServer) -> dict[str, str]:
    return sign_in(server.url, "dispatcher")


def dispatch(server: LiveServer, headers: dict[str, str], order_id: int, **change: object) -> httpx.Response:
    return httpx.patch(f"{server.url}/api/dispatch/workorders/{order_id}", json=change, headers=headers)


def count(engine: Engine, model: type, *where: object) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()  # type: ignore[arg-type]


def facts(engine: Engine, uid: str) -> int:
    return count(engine, WorkOrderEvent, WorkOrderEvent.uid == uid)


def test_priming_pulls_the_crews_jobs_and_reference_data_without_contact(north: Device, seeded: Seeded) -> None:
    changes = north.pull_all(limit=7)
    jobs = north.work_orders()
    assert set(jobs) == set(seeded.orders["north"])
    assert not set(jobs) & set(seeded.orders["south"])
    entities = {c["entity"] for c in changes}
    assert {"work_order", "service_type", "crew"} <= entities
    raw = str(changes)
    for secret in ("email", "phone", "first_name", "tracking_token"):
        assert secret not in raw


def test_push_applies_once_and_answers_duplicates_from_the_stored_result(
    north: Device, seeded: Seeded, engine: Engine
) -> None:
    job = seeded.orders["north"][0]
    uid = uuid.uuid4().hex
    north.queue("note", work_order_id=job, uid=uid, text="Hydrant leaking at the base")
    north.queue("material", work_order_id=job, uid=uuid.uuid4().hex, item="gasket", quantity=2)
    sent = list(north.outbox)
    first = north.push()
    assert first.status_code == 200 and first.json()["last_seq"] == 2
    assert [r["status"] for r in first.json()["results"]] == ["applied", "applied"]
    north.outbox = sent  # the response was lost: the device sends the same batch again
    again = north.push().json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert again["results"][0]["server_version"] == first.json()["results"][0]["server_version"]
    assert facts(engine, uid) == 1
    assert count(engine, SyncMutation, SyncMutation.client_id == north.client_id) == 2


def test_a_run_of_facts_is_applied_at_once_like_one_by_one(north: Device, seeded: Seeded, engine: Engine) -> None:
    first, second = seeded.orders["north"][3], seeded.orders["north"][4]
    before = {job: db_order(engine, job).version for job in (first, second)}
    sent = [north.queue(name, work_order_id=job, uid=uuid.uuid4().hex, **args)
            for job in (first, second, first, first, second)
            for name, args in [("note", {"text": f"checked {job}"})]]
    results = north.push().json()["results"]
    assert [r["status"] for r in results] == ["applied"] * 5
    assert [r["server_version"] for r in results] == [before[first] + 1, before[second] + 1, before[first] + 2,
                                                     before[first] + 3, before[second] + 2]
    assert db_order(engine, first).version == before[first] + 3
    with Session(engine) as session:
        for item, result in zip(sent, results, strict=True):
            event = session.exec(select(WorkOrderEvent).where(WorkOrderEvent.uid == item["args"]["uid"])).one()
            assert (event.version, event.kind, event.data) == (result["server_version"], "note",
                                                               {"text": item["args"]["text"]})
            assert result["result"] == {"event_uid": event.uid}


def test_a_run_with_one_bad_fact_gets_each_its_own_answer(north: Device, seeded: Seeded, engine: Engine) -> None:
    mine, theirs = seeded.orders["north"][5], seeded.orders["south"][5]
    replayed = uuid.uuid4().hex
    north.queue("note", work_order_id=mine, uid=replayed, text="first visit")
    assert north.push().json()["results"][0]["status"] == "applied"
    north.queue("note", work_order_id=mine, uid=uuid.uuid4().hex, text="second visit")
    stray = north.queue("note", work_order_id=theirs, uid=uuid.uuid4().hex, text="wrong job")
    north.queue("note", work_order_id=mine, uid=replayed, text="first visit")  # a replay of the same fact
    last = north.queue("note", work_order_id=mine, uid=uuid.uuid4().hex, text="third visit")
    results = north.push().json()["results"]
    assert [r["status"] for r in results] == ["applied", "rejected", "applied", "applied"]
    assert "not assigned to your crew" in results[1]["reason"]
    assert results[2]["result"] == {"event_uid": replayed} and facts(engine, replayed) == 1
    assert facts(engine, stray["args"]["uid"]) == 0 and facts(engine, last["args"]["uid"]) == 1
    assert count(engine, SyncRejection, SyncRejection.mid == stray["mid"]) == 1


def test_a_gap_is_answered_with_the_expected_seq_and_nothing_after_it(north: Device, seeded: Seeded, engine: Engine) -> None:
    job = seeded.orders["north"][1]
    early = mutation(1, "note", work_order_id=job, uid=uuid.uuid4().hex, text="first")
    late = mutation(3, "note", work_order_id=job, uid=uuid.uuid4().hex, text="third")
    north.outbox = [late]
    response = north.push().json()
    assert response["expected_seq"] == 1 and response["last_seq"] == 0 and response["results"] == []
    assert facts(engine, late["args"]["uid"]) == 0
    north.outbox = [early, mutation(2, "note", work_order_id=job, uid=uuid.uuid4().hex, text="second"), late]
    assert north.push().json()["last_seq"] == 3


def test_reassigned_while_offline_keeps_the_crews_facts(
    north: Device, south: Device, seeded: Seeded, engine: Engine, server: LiveServer, dispatcher: dict[str, str]
) -> None:
    job = seeded.orders["north"][2]
    north.pull_all()
    made_while_holding = datetime.now(UTC)
    uid = uuid.uuid4().hex
    north.queue("note", made_while_holding, work_order_id=job, uid=uid, text="Replaced the fuse")
    north.queue("status", made_while_holding, work_order_id=job, to="on_site")
    assert dispatch(server, dispatcher, job, crew_id=seeded.crews["south"]).status_code == 200
    results = north.push().json()["results"]
    assert results[0]["status"] == "applied" and facts(engine, uid) == 1
    assert results[1]["status"] == "conflict"  # the new crew's job: the report is kept, not applied
    assert db_order(engine, job).status == "assigned"
    north.pull_all()
    assert job not in north.work_orders()  # evicted once nothing for it is left to send
    south.pull_all()
    assert job in south.work_orders()
    # A fact made long after the job left the crew is not the crew's to add: move the
    # job's assignment history an hour into the past (beyond the grace for clock skew).
    with write_session(engine) as session:
        for moved in session.exec(
            select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == job,
                                         WorkOrderEvent.kind.in_(["created", "assigned"]))  # type: ignore[attr-defined]
        ).all():
            moved.recorded_at -= timedelta(hours=1)
            session.add(moved)
    late = north.queue("note", datetime.now(UTC) + timedelta(hours=2), work_order_id=job,
                       uid=uuid.uuid4().hex, text="too late")
    result = north.push().json()["results"][0]
    assert result["status"] == "rejected" and "not assigned to your crew" in result["reason"]
    assert count(engine, SyncRejection, SyncRejection.mid == late["mid"]) == 1


def test_completed_after_cancel_becomes_a_conflict_with_the_work_kept(
    north: Device, seeded: Seeded, engine: Engine, server: LiveServer, dispatcher: dict[str, str]
) -> None:
    job = seeded.orders["north"][3]
    north.queue("status", work_order_id=job, to="en_route")
    assert north.push().status_code == 200
    assert dispatch(server, dispatcher, job, status="cancelled", reason="duplicate call").status_code == 200
    uid = uuid.uuid4().hex
    north.queue("time", work_order_id=job, uid=uid, minutes=45)
    done = north.queue("status", work_order_id=job, to="completed")
    results = north.push().json()["results"]
    assert [r["status"] for r in results] == ["applied", "conflict"]
    assert db_order(engine, job).status == "cancelled"  # the dispatcher's cancel is not overridden
    assert facts(engine, uid) == 1  # the work is kept
    with Session(engine) as session:
        conflict = session.exec(select(SyncConflict).where(SyncConflict.mid == done["mid"])).one()
    assert (conflict.kind, conflict.field, conflict.server_value, conflict.client_value) == \
        ("transition", "status", "cancelled", "completed")

    listed = httpx.get(f"{server.url}/api/dispatch/conflicts", headers=dispatcher).json()
    assert any(c["id"] == conflict.id for c in listed)
    resolved = httpx.post(f"{server.url}/api/dispatch/conflicts/{conflict.id}/resolve",
                          json={"resolution": "take_client"}, headers=dispatcher)
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert db_order(engine, job).status == "completed"


def test_shared_notes_mismatch_keeps_both_values(
    north: Device, seeded: Seeded, engine: Engine, server: LiveServer, dispatcher: dict[str, str]
) -> None:
    job = seeded.orders["north"][4]
    north.pull_all()
    seen = north.work_orders()[job]["notes_version"]
    assert dispatch(server, dispatcher, job, notes="Dog in the yard", notes_base_version=seen).status_code == 200
    edit = north.queue("notes", work_order_id=job, text="Gate code 4411", base_version=seen)
    assert north.push().json()["results"][0]["status"] == "conflict"
    assert db_order(engine, job).notes == "Dog in the yard"
    with Session(engine) as session:
        conflict = session.exec(select(SyncConflict).where(SyncConflict.mid == edit["mid"])).one()
    assert (conflict.kind, conflict.server_value, conflict.client_value) == \
        ("optimistic", "Dog in the yard", "Gate code 4411")
    shown = httpx.get(f"{server.url}/api/workorders/{job}", headers=dispatcher).json()
    assert (shown["notes"], shown["notes_version"]) == ("Dog in the yard", seen + 1)
    stale = dispatch(server, dispatcher, job, notes="x", notes_base_version=seen)
    assert stale.status_code == 409 and stale.json()["field"] == "notes_base_version"


def test_a_job_deleted_while_offline(
    north: Device, seeded: Seeded, engine: Engine, server: LiveServer, dispatcher: dict[str, str]
) -> None:
    job = seeded.orders["north"][5]
    north.pull_all()
    assert job in north.work_orders()
    north.queue("note", work_order_id=job, uid=uuid.uuid4().hex, text="On my way")
    removed = httpx.delete(f"{server.url}/api/dispatch/workorders/{job}", params={"reason": "entered twice"},
                           headers=dispatcher)
    assert removed.status_code == 204
    result = north.push().json()["results"][0]
    assert result["status"] == "rejected" and "removed" in result["reason"]
    north.pull_all()
    assert job not in north.work_orders()
    assert httpx.get(f"{server.url}/api/workorders/{job}", headers=dispatcher).status_code == 404


def test_server_owned_fields_are_recorded_not_applied(north: Device, seeded: Seeded, engine: Engine) -> None:
    job = seeded.orders["north"][6]
    before = db_order(engine, job).priority
    north.queue("request", work_order_id=job, field="priority", value=1, reason="water reaching the road")
    assert north.push().json()["results"][0]["status"] == "conflict"
    assert db_order(engine, job).priority == before
    assert count(engine, SyncConflict, SyncConflict.entity_id == str(job), SyncConflict.field == "priority") == 1


def test_schema_versions_and_upgraded_clients(north: Device, seeded: Seeded) -> None:
    north.queue("note", work_order_id=seeded.orders["north"][0], uid=uuid.uuid4().hex, text="v1")
    refused = north.push(schema_version=2)
    assert refused.status_code == 409 and refused.json()["field"] == "schema_version"
    assert north.push(schema_version=1).status_code == 200  # the same client after a downgrade/upgrade


def test_a_client_id_belongs_to_its_first_user(north: Device, south: Device) -> None:
    north.pull_all()
    south.client_id = north.client_id
    response = httpx.post(f"{south.base_url}/sync/v1/pull", headers=south.headers,
                          json={"client_id": south.client_id, "cursor": None, "limit": 10})
    assert response.status_code == 403


def test_bad_input_is_refused_clearly_and_writes_nothing(
    north: Device, south: Device, seeded: Seeded, engine: Engine, server: LiveServer
) -> None:
    before = count(engine, SyncMutation)
    url = f"{server.url}/sync/v1/push"
    assert httpx.post(url, content=b"{not json", headers={**north.headers, "Content-Type": "application/json"}).status_code == 400
    assert httpx.post(url, json={"client_id": "x"}, headers=north.headers).status_code == 400
    too_many = [mutation(i, "note", work_order_id=1, uid=uuid.uuid4().hex, text="x") for i in range(1, 502)]
    big = httpx.post(url, json={"client_id": north.client_id, "schema_version": 1, "mutations": too_many},
                     headers=north.headers)
    assert big.status_code == 413
    huge = httpx.post(url, content=b"x" * 1_100_000, headers={**north.headers, "Content-Type": "application/json"})
    assert huge.status_code == 413
    backwards = [mutation(2, "note", work_order_id=1, uid="a" * 10, text="x"), mutation(1, "note", work_order_id=1, uid="b" * 10, text="x")]
    assert httpx.post(url, json={"client_id": north.client_id, "schema_version": 1, "mutations": backwards},
                      headers=north.headers).status_code == 422
    assert count(engine, SyncMutation) == before
    assert httpx.post(url, json={"client_id": "dispatcher-client", "schema_version": 1, "mutations": []},
                      headers=sign_in(server.url, "dispatcher")).status_code == 403
    assert httpx.post(url, json={"client_id": "anon-client", "schema_version": 1, "mutations": []}).status_code == 401

    # Per-mutation problems are answered per mutation, kept whole, and never block the queue.
    foreign = seeded.orders["south"][0]
    south_before = db_order(engine, foreign).version
    north.queue("teleport", work_order_id=1)
    north.queue("note", work_order_id=foreign, uid=uuid.uuid4().hex, text="not ours")
    north.queue("material", work_order_id=seeded.orders["north"][0], uid=uuid.uuid4().hex, item="pipe", quantity=-3)
    ok_uid = uuid.uuid4().hex
    north.queue("note", work_order_id=seeded.orders["north"][0], uid=ok_uid, text="fine")
    results = north.push().json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected", "rejected", "applied"]
    assert "unknown mutation" in results[0]["reason"]
    assert "not assigned to your crew" in results[1]["reason"]
    assert "quantity" in results[2]["reason"]
    assert db_order(engine, foreign).version == south_before
    assert facts(engine, ok_uid) == 1
    with Session(engine) as session:
        kept = session.exec(select(SyncRejection).where(SyncRejection.client_id == north.client_id)).all()
    assert {r.name for r in kept} >= {"teleport", "note", "material"}
    assert all(r.args for r in kept)


def test_photo_blobs_are_content_addressed_and_checked(north: Device, seeded: Seeded, engine: Engine, server: LiveServer) -> None:
    digest = hashlib.sha256(PNG).hexdigest()
    url = f"{server.url}/sync/v1/blobs/{digest}"
    headers = {**north.headers, "Content-Type": "image/png"}
    assert httpx.head(url, headers=north.headers).status_code == 404
    photo_uid = uuid.uuid4().hex
    north.queue("photo", work_order_id=seeded.orders["north"][7], uid=photo_uid, sha256=digest)
    assert north.push().json()["results"][0]["status"] == "rejected"  # the bytes are not there yet
    assert httpx.put(url, content=PNG, headers=headers).status_code == 201
    assert httpx.put(url, content=PNG, headers=headers).status_code == 200  # idempotent
    assert httpx.head(url, headers=north.headers).status_code == 200
    assert httpx.get(url, headers=north.headers).content[:8] == PNG[:8]  # a re-encoded copy
    north.queue("photo", work_order_id=seeded.orders["north"][7], uid=uuid.uuid4().hex, sha256=digest)
    assert north.push().json()["results"][0]["status"] == "applied"

    wrong = hashlib.sha256(b"other").hexdigest()
    mismatch = httpx.put(f"{server.url}/sync/v1/blobs/{wrong}", content=PNG, headers=headers)
    assert mismatch.status_code == 400 and mismatch.json()["field"] == "sha256"
    not_image = httpx.put(url, content=b"%PDF-1.4", headers={**north.headers, "Content-Type": "application/pdf"})
    assert not_image.status_code == 400 and not_image.json()["field"] == "Content-Type"
    assert announced_upload_status(server, f"/sync/v1/blobs/{wrong}", 11 * 1024 * 1024, north.headers) == 413
    assert count(engine, Blob) == 1


def announced_upload_status(server: LiveServer, path: str, length: int, headers: dict[str, str]) -> int:
    """Announce a body over the limit and read the answer without sending it all (the server
    refuses from the Content-Length; a client library would block writing the rest)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        lines = [f"PUT {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Content-Type: image/png",
                 f"Content-Length: {length}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        conn.sendall("\r\n".join(lines).encode() + b"\x89PNG\r\n\x1a\n")
        status_line = conn.recv(200).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_events_stream_says_pull_now(north: Device, seeded: Seeded, server: LiveServer, dispatcher: dict[str, str]) -> None:
    job = seeded.orders["north"][0]
    with httpx.stream("GET", f"{server.url}/sync/v1/events", headers=north.headers, timeout=20) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("event: pull")
        assert dispatch(server, dispatcher, job, priority=1).status_code == 200
        seen = []
        for line in lines:
            seen.append(line)
            if line == "event: pull":
                break
        assert "event: pull" in seen


def test_dispatcher_routes_need_the_dispatcher_role(north: Device, server: LiveServer, seeded: Seeded) -> None:
    job = seeded.orders["north"][0]
    assert dispatch(server, north.headers, job, priority=2).status_code == 403
    assert httpx.get(f"{server.url}/api/dispatch/conflicts", headers=north.headers).status_code == 403
    assert httpx.get(f"{server.url}/api/dispatch/conflicts").status_code == 401

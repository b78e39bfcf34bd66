"""Issue 8's hostile clients, each over real HTTP on SQLite and PostgreSQL: a phone clock
that lies, reused ids, cursors from elsewhere, a compacted feed, photos that are not
images or not yours, tokens of deleted users, and a dispatcher breaking the state machine.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, delete, func, text, update
from sqlmodel import Session, select

from server.auth.users import create_user
from server.db import write_session
from server.models import Blob, User, WorkOrderEvent
from sync import compact_feed
from sync.models import SyncChange, SyncConflict, SyncIdentity, SyncRejection
from tests.conftest import LiveServer
from tests.sync_http.support import PASSWORD, Device, Seeded, db_order, image_bytes, seed, sign_in


@pytest.fixture(scope="module")
def seeded(engine: Engine) -> Seeded:
    return seed(engine, per_crew=10)


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


def patch(server: LiveServer, headers: dict[str, str], order_id: int, **change: object) -> httpx.Response:
    return httpx.patch(f"{server.url}/api/dispatch/workorders/{order_id}", json=change, headers=headers)


def raw(seq: int, name: str, device_ts: str | None, **args: object) -> dict[str, object]:
    return {"seq": seq, "mid": uuid.uuid4().hex, "name": name, "args": args, "device_ts": device_ts}


def reassigned_long_ago(engine: Engine, job: int, minutes: int) -> None:
    """Date the job's latest assignment `minutes` back in server time (it happened then), and
    its earlier history an hour before that."""
    with write_session(engine) as session:
        history = session.exec(select(WorkOrderEvent).where(
            WorkOrderEvent.work_order_id == job, WorkOrderEvent.kind.in_(["created", "assigned"]))  # type: ignore[attr-defined]
            .order_by(WorkOrderEvent.id)).all()  # type: ignore[arg-type]
        assert history and history[-1].kind == "assigned"
        latest = datetime.now(UTC) - timedelta(minutes=minutes)
        for event in history:
            event.recorded_at = latest if event is history[-1] else latest - timedelta(hours=1)
            session.add(event)


def events_of(engine: Engine, job: int, kind: str) -> list[WorkOrderEvent]:
    with Session(engine) as session:
        return list(session.exec(select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == job,
                                                              WorkOrderEvent.kind == kind)).all())


# -- clocks ------------------------------------------------------------------------------------


def test_a_device_time_that_overflows_rejects_that_mutation_alone(north: Device, seeded: Seeded, engine: Engine) -> None:
    job = seeded.orders["north"][0]
    now = datetime.now(UTC).isoformat()
    good = [raw(1, "note", now, work_order_id=job, uid=uuid.uuid4().hex, text="before"),
            raw(2, "note", "0001-01-01T00:00:00+00:01", work_order_id=job, uid=uuid.uuid4().hex, text="bad clock"),
            raw(3, "note", now, work_order_id=job, uid=uuid.uuid4().hex, text="after")]
    for attempt in range(2):  # the retry of the same push answers the same, never a 500
        north.outbox = list(good)
        response = north.push()
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        expected = ["applied", "rejected", "applied"] if attempt == 0 else ["duplicate"] * 3
        assert [r["status"] for r in results] == expected
    assert "device_ts" in (results[1]["reason"] or "")
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(SyncRejection).where(
            SyncRejection.mid == good[1]["mid"])).one() == 1


def test_a_crew_reassigned_away_cannot_write_with_a_backdated_clock(
    north: Device, south: Device, seeded: Seeded, engine: Engine, server: LiveServer, dispatcher: dict[str, str],
) -> None:
    job, own = seeded.orders["north"][1], seeded.orders["north"][2]
    north.pull_all()
    held_notes_version = north.work_orders()[job]["notes_version"]
    assert patch(server, dispatcher, job, crew_id=seeded.crews["south"]).status_code == 200
    reassigned_long_ago(engine, job, 40)
    south.pull_all()
    south.queue("notes", work_order_id=job, text="Gate code 4411, dog in yard",
                base_version=south.work_orders()[job]["notes_version"])
    assert south.push().json()["results"][0]["status"] == "applied"

    north.queue("note", work_order_id=own, uid=uuid.uuid4().hex, text="on another job")  # acknowledged now
    assert north.push().json()["results"][0]["status"] == "applied"
    when_held = datetime.now(UTC) - timedelta(minutes=50)
    north.queue("notes", when_held, work_order_id=job, text="north's old text", base_version=held_notes_version)
    north.queue("material", when_held, work_order_id=job, uid=uuid.uuid4().hex, item="gold bars", quantity=99_999)
    north.queue("material", when_held, work_order_id=job, uid=uuid.uuid4().hex, item="asphalt", quantity=3)
    north.queue("status", when_held, work_order_id=job, to="completed")
    results = north.push().json()["results"]
    assert [r["status"] for r in results] == ["conflict", "rejected", "rejected", "conflict"]
    assert "quantity" in results[1]["reason"]
    assert "not assigned to your crew" in results[2]["reason"]
    order = db_order(engine, job)
    assert order.notes == "Gate code 4411, dog in yard" and order.status == "assigned"
    assert events_of(engine, job, "material") == []
    with Session(engine) as session:
        kept = {c.field: c for c in session.exec(select(SyncConflict).where(SyncConflict.entity_id == str(job),
                                                                             SyncConflict.client_id == north.client_id))}
    assert kept["notes"].client_value == "north's old text" and kept["notes"].kind == "not_held"
    assert kept["status"].client_value == "completed" and kept["status"].server_value == "assigned"


def test_device_times_only_move_forward(
    seeded: Seeded, engine: Engine, server: LiveServer, dispatcher: dict[str, str],
) -> None:
    job, own = seeded.orders["north"][3], seeded.orders["north"][4]
    assert patch(server, dispatcher, job, crew_id=seeded.crews["south"]).status_code == 200
    reassigned_long_ago(engine, job, 40)
    phone = Device(server.url, sign_in(server.url, "crew-north"))  # never pushed before
    now, then = datetime.now(UTC), datetime.now(UTC) - timedelta(minutes=50)
    phone.queue("note", now, work_order_id=own, uid=uuid.uuid4().hex, text="now")
    late = phone.queue("note", then, work_order_id=job, uid=uuid.uuid4().hex, text="claims to be old")
    results = phone.push().json()["results"]
    assert [r["status"] for r in results] == ["applied", "rejected"]
    assert events_of(engine, job, "note") == [] or all(e.uid != late["args"]["uid"] for e in events_of(engine, job, "note"))

    honest = Device(server.url, sign_in(server.url, "crew-north"))  # offline since it held the job
    kept = honest.queue("note", then, work_order_id=job, uid=uuid.uuid4().hex, text="made while it was ours")
    assert honest.push().json()["results"][0]["status"] == "applied"
    assert any(e.uid == kept["args"]["uid"] for e in events_of(engine, job, "note"))


def test_a_reused_uid_with_different_content_is_rejected(north: Device, seeded: Seeded, engine: Engine) -> None:
    job = seeded.orders["north"][5]
    uid = uuid.uuid4().hex
    north.queue("note", work_order_id=job, uid=uid, text="pothole 40 cm wide")
    north.queue("note", work_order_id=job, uid=uid, text="replaced text under the same id")
    north.queue("note", work_order_id=job, uid=uid, text="pothole 40 cm wide")  # the same fact again
    results = north.push().json()["results"]
    assert [r["status"] for r in results] == ["applied", "rejected", "applied"]
    assert "uid" in results[1]["reason"] and "different content" in results[1]["reason"]
    notes = [e for e in events_of(engine, job, "note") if e.uid == uid]
    assert len(notes) == 1 and notes[0].data == {"text": "pothole 40 cm wide"}


# -- state machine -------------------------------------------------------------------------------


def test_assigned_without_a_crew_is_refused(seeded: Seeded, engine: Engine, server: LiveServer,
                                            dispatcher: dict[str, str]) -> None:
    job = seeded.spare[0]
    before = db_order(engine, job)
    assert before.crew_id is None and before.status == "new"
    response = patch(server, dispatcher, job, status="assigned")
    assert response.status_code == 400 and response.json()["field"] == "crew_id"
    response = patch(server, dispatcher, seeded.orders["south"][0], crew_id=None, status="en_route")
    assert response.status_code == 400 and response.json()["field"] == "crew_id"
    after = db_order(engine, job)
    assert (after.status, after.version) == (before.status, before.version)
    assert db_order(engine, seeded.orders["south"][0]).crew_id == seeded.crews["south"]  # nothing half-written


# -- cursors, compaction and pulls -----------------------------------------------------------------


def test_cursors_from_elsewhere_or_ahead_are_refused_and_the_device_reprimes(
    north: Device, seeded: Seeded, engine: Engine, db_kind: str,
) -> None:
    north.pull_all()
    mine = set(north.work_orders())
    with Session(engine) as session:
        name = session.get(SyncIdentity, 1).database_id  # type: ignore[union-attr]
        top = session.exec(select(func.max(SyncChange.id))).one() or 0
        txid = session.connection().execute(text(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint" if db_kind == "postgres" else "SELECT 0"
        )).scalar_one()
    foreign = [f"v2.{uuid.uuid4().hex}.0.{top}", f"v1.0.{top}", f"v1.{txid}.{top}",  # other databases, old format
               f"v2.{name}.{txid + 1000}.{top}" if db_kind == "postgres" else f"v2.{name}.5.{top}",  # a txid never issued
               f"v2.{name}.0.{top + 10_000}" if db_kind == "sqlite" else f"v2.{name}.{txid}.{top + 10_000}"]
    for cursor in foreign:
        response = httpx.post(f"{north.base_url}/sync/v1/pull", headers=north.headers, timeout=30,
                              json={"client_id": north.client_id, "cursor": cursor, "limit": 10})
        assert response.status_code == 422 and response.json()["field"] == "cursor", (cursor, response.text)
        assert "pull again without one" in response.json()["detail"]
    # What a phone holds from the other database goes when it primes here.
    north.view[("work_order", "987654321")] = {"id": 987654321, "events": []}
    north.cursor = foreign[0]
    north.pull_all()
    assert north.reprimed == 1
    assert set(north.work_orders()) == mine


def test_compaction_keeps_the_feed_small_and_devices_behind_it_reprime(
    north: Device, seeded: Seeded, engine: Engine, server: LiveServer, dispatcher: dict[str, str],
) -> None:
    job = seeded.orders["north"][6]
    north.pull_all()
    behind = north.cursor
    for priority in (1, 2, 3, 1):
        assert patch(server, dispatcher, job, priority=priority).status_code == 200
    with Session(engine) as session:
        rows_before = session.exec(select(func.count()).select_from(SyncChange)).one()
    with write_session(engine) as session:
        deleted = compact_feed(session, before=datetime.now(UTC) + timedelta(seconds=1))
    with Session(engine) as session:
        rows_after = session.exec(select(func.count()).select_from(SyncChange)).one()
        keys = session.exec(select(func.count()).select_from(
            select(SyncChange.scope, SyncChange.entity, SyncChange.entity_id).distinct().subquery())).one()
    assert deleted > 0 and rows_after == rows_before - deleted and rows_after == keys  # one row per entity and scope
    north.cursor = behind
    north.pull_all()
    assert north.reprimed == 1
    fresh = Device(server.url, north.headers)
    fresh.pull_all()
    assert north.view == fresh.view and north.work_orders()[job]["priority"] == 1


def test_pulls_send_only_the_events_a_device_lacks(north: Device, seeded: Seeded, engine: Engine) -> None:
    job = seeded.orders["north"][7]
    for n in range(6):
        north.queue("note", work_order_id=job, uid=uuid.uuid4().hex, text=f"visit {n}")
    north.push()
    north.pull_all()
    held = north.work_orders()[job]
    north.queue("note", work_order_id=job, uid=uuid.uuid4().hex, text="one more")
    north.push()
    changes = north.pull_all()
    sent = [c for c in changes if c["entity"] == "work_order" and c["id"] == str(job)]
    assert len(sent) == 1 and sent[0]["data"]["events_from"] > 0
    assert [e["data"]["text"] for e in sent[0]["data"]["events"]] == ["one more"]
    merged = north.work_orders()[job]["events"]
    assert [e["uid"] for e in merged] == [e["uid"] for e in held["events"]] + [sent[0]["data"]["events"][0]["uid"]]


# -- photos --------------------------------------------------------------------------------------


def put_photo(server: LiveServer, device: Device, data: bytes, media: str) -> httpx.Response:
    digest = hashlib.sha256(data).hexdigest()
    return httpx.put(f"{server.url}/sync/v1/blobs/{digest}", content=data,
                     headers={**device.headers, "Content-Type": media})


def test_photos_must_decode_as_what_they_claim(north: Device, server: LiveServer, engine: Engine) -> None:
    with Session(engine) as session:
        before = session.exec(select(func.count()).select_from(Blob)).one()
    html = b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>"
    wave = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x10\x00\x00\x00\x01\x00\x01\x00\x44\xac\x00\x00" * 2
    truncated = image_bytes("JPEG", size=(64, 48))[:300]
    huge = io.BytesIO()
    Image.new("L", (9000, 10)).save(huge, "PNG")
    for data, media in ((html, "image/jpeg"), (wave, "image/webp"), (truncated, "image/jpeg"),
                        (image_bytes("PNG"), "image/jpeg"), (huge.getvalue(), "image/png")):
        response = put_photo(server, north, data, media)
        assert response.status_code == 400 and response.json()["field"] == "body", response.text
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Blob)).one() == before


def test_photos_lose_their_location_and_are_seen_only_through_their_job(
    north: Device, south: Device, seeded: Seeded, server: LiveServer, dispatcher: dict[str, str],
) -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (34.0, 3.0, 12.5), 3: "W", 4: (118.0, 14.0, 33.1)}  # GPS IFD
    original = image_bytes("JPEG", size=(40, 30), exif=exif.tobytes())
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
    digest = hashlib.sha256(original).hexdigest()
    url = f"{server.url}/sync/v1/blobs/{digest}"
    assert put_photo(server, north, original, "image/jpeg").status_code == 201
    assert httpx.get(url, headers=north.headers).status_code == 200  # its uploader
    assert httpx.get(url, headers=south.headers).status_code == 404  # nobody else yet
    north.queue("photo", work_order_id=seeded.orders["north"][8], uid=uuid.uuid4().hex, sha256=digest)
    assert north.push().json()["results"][0]["status"] == "applied"
    kept = httpx.get(url, headers=dispatcher)
    assert kept.status_code == 200 and kept.headers["content-type"].startswith("image/jpeg")
    stored = Image.open(io.BytesIO(kept.content))
    assert stored.size == (40, 30) and not stored.getexif().get_ifd(0x8825) and 0x010F not in stored.getexif()
    assert httpx.get(url, headers=south.headers).status_code == 404
    assert httpx.head(url, headers=south.headers).status_code == 404


# -- tokens --------------------------------------------------------------------------------------


def test_tokens_die_with_their_user_and_never_pass_to_another(
    seeded: Seeded, engine: Engine, server: LiveServer,
) -> None:
    with write_session(engine) as session:
        temp = create_user(session, username="temp-crew", password=PASSWORD, role="crew",
                           crew_id=seeded.crews["north"])
        temp_id = temp.id
    token = sign_in(server.url, "temp-crew")
    assert httpx.get(f"{server.url}/api/me", headers=token).status_code == 200
    with write_session(engine) as session:
        session.exec(delete(User).where(User.id == temp_id))  # type: ignore[call-overload, arg-type]
    assert httpx.get(f"{server.url}/api/me", headers=token).status_code == 401
    with write_session(engine) as session:  # a new admin gets the same id (SQLite reuses it)
        admin = create_user(session, username="new-admin", password=PASSWORD, role="admin")
        if admin.id != temp_id:
            session.exec(update(User).where(User.id == admin.id).values(id=temp_id))  # type: ignore[call-overload, arg-type]
    me = httpx.get(f"{server.url}/api/me", headers=token)
    assert me.status_code == 401
    assert httpx.get(f"{server.url}/api/users", headers=token).status_code == 401
    assert httpx.get(f"{server.url}/api/me", headers=sign_in(server.url, "new-admin")).json()["id"] == temp_id

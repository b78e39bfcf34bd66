"""The PWA's offline sync client (pwa/sync/) in real Chromium against a real server.

The server is really stopped for the offline part (no network emulation): edits made
while it is down wait in IndexedDB, survive closing the page, and are applied exactly
once and in order when the server is back on the same port — even when the answer to
the first push is lost on the way.
"""

from __future__ import annotations

import base64
import re
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, expect
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from server.auth.users import create_crew, create_user
from server.db import write_session
from server.intake.importer import import_file
from server.models import Blob, WorkOrder, WorkOrderEvent
from server.settings import Settings
from server.workorders.changes import Actor, assign, set_notes
from sync.models import SyncClient, SyncConflict, SyncIdentity, SyncMutation, SyncRejection
from tests.conftest import DATA, LiveServer, load_city_areas

pytestmark = pytest.mark.browser

LA_FILE = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
USERNAME = "crew.sync"
PASSWORD = "offline-edits-never-get-lost"
SYNC_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Seeded:
    crew_id: int
    other_crew_id: int
    mine: list[int]  # open work orders assigned to the signed-in crew
    theirs: int  # an open work order of another crew


@pytest.fixture(scope="module")
def seeded(engine: Engine, settings: Settings) -> Seeded:
    load_city_areas(engine, "la")
    import_file(engine, LA_FILE, settings=settings.intake)
    actor = Actor(None, "test", "api")
    with write_session(engine) as session:
        crew = create_crew(session, name="Sync crew")
        other = create_crew(session, name="Other crew")
        assert crew.id is not None and other.id is not None
        create_user(session, username=USERNAME, password=PASSWORD, role="crew", crew_id=crew.id)
        orders = session.exec(
            select(WorkOrder)
            .where(WorkOrder.is_open, WorkOrder.crew_id.is_(None), WorkOrder.deleted_at.is_(None))  # type: ignore[union-attr]
            .order_by(WorkOrder.id)  # type: ignore[arg-type]
            .limit(6)
        ).all()
        assert len(orders) == 6, "the LA file should give at least 6 open work orders"
        for order in orders[:5]:
            assign(session, order, crew_id=crew.id, actor=actor)
        assign(session, orders[5], crew_id=other.id, actor=actor)
        ids = [order.id for order in orders]
        return Seeded(crew.id, other.id, ids[:5], ids[5])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(seeded: Seeded, settings: Settings) -> Iterator[LiveServer]:
    """A server of this module's own: the tests stop and restart it."""
    live = LiveServer(settings)
    live.start()
    yield live
    live.stop()


@pytest.fixture
def running(server: LiveServer) -> LiveServer:
    if server.process is None or server.process.poll() is not None:
        server.start()
    return server


@pytest.fixture
def context(browser):  # type: ignore[no-untyped-def]
    """A fresh browser profile (its own IndexedDB, so its own sync client id); fails the
    test on any uncaught error or unhandled rejection in its pages."""
    context = browser.new_context()
    errors: list[str] = []
    context.on("page", lambda page: page.on("pageerror", lambda error: errors.append(str(error))))
    yield context
    context.close()
    assert errors == []


# -- page helpers ----------------------------------------------------------------------------


def open_page(context, server: LiveServer) -> Page:  # type: ignore[no-untyped-def]
    page = context.new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.url.endswith(".js") and not r.ok else None)
    page.goto(server.url + "/sync-test.html")
    expect(page).to_have_title("Fieldwork sync check")
    try:
        page.wait_for_function("() => window.fieldworkSync !== undefined", timeout=10_000)
    except PlaywrightError:
        pytest.fail(f"the sync modules did not load: {failed}")
    return page


def sign_in(page: Page) -> None:
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signed-in-as")).to_have_text(f"Signed in as {USERNAME}.")


def order_row(page: Page, order_id: int):  # type: ignore[no-untyped-def]
    return page.locator(f'#orders tr[data-id="{order_id}"]')


def unsynced(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("#unsynced-count")


def queue_note(page: Page, order_id: int, text: str) -> None:
    page.get_by_label("Work order id").fill(str(order_id))
    page.get_by_label("Kind of edit").select_option("note")
    page.get_by_label("Note text, or new status").fill(text)
    page.get_by_role("button", name="Queue edit").click()
    expect(page.locator("#edit-result")).to_have_text(re.compile(rf"^Queued edit #\d+ for work order {order_id}\.$"))
    expect(page.get_by_label("Note text, or new status")).to_have_value("")


def hold_edits(page: Page) -> None:
    """Automatic sync off, and no sync still running: edits stay on the device until
    "Sync now"."""
    page.get_by_label("Sync automatically").uncheck()
    expect(page.locator("body")).to_have_attribute("data-syncing", "false")


def pending_edits(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("window.fieldworkSync.outbox.pendingEdits()")  # type: ignore[no-any-return]


def client_id(page: Page) -> str:
    return page.evaluate(
        "window.fieldworkSync.db.readMeta(['client_id']).then((m) => m.client_id)"
    )  # type: ignore[no-any-return]


def primed(page: Page, seeded: Seeded) -> None:
    for order_id in seeded.mine[:4]:  # the last one is reassigned away by a test
        expect(order_row(page, order_id)).to_be_visible(timeout=SYNC_TIMEOUT_MS)
    expect(order_row(page, seeded.theirs)).to_have_count(0)


def pull_until(page: Page, predicate: str, timeout_s: float = 30) -> Any:
    """Pull until the JS `predicate` (an async function) returns something truthy.

    A pull may come back without a change that has committed: on PostgreSQL the change feed
    holds back everything after a transaction still running anywhere on the server (other
    test databases included) until it ends. Later pulls bring it; a client keeps pulling.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        assert page.evaluate("window.fieldworkSync.client.pull().then((r) => r.ok)")
        value = page.evaluate(predicate)
        if value:
            return value
        assert time.monotonic() < deadline, f"no pull brought what {predicate!r} waits for"
        page.wait_for_timeout(200)


@contextmanager
def feed_held_back(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, keep a writing transaction open: pulls bring nothing that commits
    meanwhile (the feed waits for it), pushes still apply. A no-op on SQLite."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("SELECT pg_current_xact_id()"))  # takes a transaction id
        try:
            yield
        finally:
            transaction.rollback()


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- tests -------------------------------------------------------------------------------------


def test_edits_made_while_the_server_is_down_apply_once_and_in_order(
    running: LiveServer, seeded: Seeded, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    server = running
    page = open_page(context, server)
    sign_in(page)
    primed(page, seeded)  # signing in primes the device with the crew's jobs
    expect(page.locator("#sync-state")).to_contain_text("Last synced")
    expect(unsynced(page)).to_have_text("0")

    # Three edits held on the device while the server is up ...
    hold_edits(page)
    target = seeded.mine[0]
    marker = uuid.uuid4().hex[:8]
    texts = [f"offline {marker} #{n}" for n in range(1, 7)]
    for note in texts[:3]:
        queue_note(page, target, note)
    expect(unsynced(page)).to_have_text("3")

    # ... then the server really stops: three more, and a sync that cannot reach it.
    server.stop()
    stopped_at = datetime.now(UTC)
    page.get_by_label("Sync automatically").check()
    for note in texts[3:]:
        queue_note(page, target, note)
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#sync-error")).to_contain_text("cannot reach the server", timeout=SYNC_TIMEOUT_MS)
    expect(unsynced(page)).to_have_text("6")
    expect(order_row(page, target).locator("td").nth(3)).to_have_text("6")  # the optimistic overlay
    edits = pending_edits(page)
    assert [e["args"]["text"] for e in edits] == texts
    assert [e["seq"] for e in edits] == list(range(edits[0]["seq"], edits[0]["seq"] + 6))
    device = client_id(page)
    page.close()  # nothing but IndexedDB keeps the edits now

    # The server comes back on the same port; the answer to the first push gets lost.
    server.start()
    restarted_at = datetime.now(UTC)
    answers: list[Any] = []

    def lose_the_first_answer(route: Route) -> None:
        response = route.fetch()  # the server does receive and apply the batch
        if not answers:
            answers.append(("lost", response.status))
            route.abort("connectionreset")
            return
        answers.append(("delivered", response.json()))
        route.fulfill(response=response)

    context.route("**/sync/v1/push", lose_the_first_answer)
    page = open_page(context, server)
    expect(unsynced(page)).to_have_text("0", timeout=SYNC_TIMEOUT_MS)
    expect(order_row(page, target).locator("td").nth(3)).to_have_text("")
    expect(page.locator("#attention li")).to_have_count(0)
    expect(page.locator("#sync-error")).to_have_text("")
    context.unroute("**/sync/v1/push")

    assert answers[0] == ("lost", 200)
    resent = answers[1][1]
    assert [r["status"] for r in resent["results"]] == ["duplicate"] * 6
    assert {r["original_status"] for r in resent["results"]} == {"applied"}

    with Session(engine) as session:
        notes = [
            event for event in session.exec(
                select(WorkOrderEvent)
                .where(WorkOrderEvent.work_order_id == target, WorkOrderEvent.kind == "note")
                .order_by(WorkOrderEvent.id)  # type: ignore[arg-type]
            ).all()
            if marker in (event.data or {}).get("text", "")
        ]
        applied = session.exec(
            select(SyncMutation).where(SyncMutation.client_id == device).order_by(SyncMutation.seq)  # type: ignore[arg-type]
        ).all()
        registered = session.get(SyncClient, device)
    # Each edit exactly once, in the order it was made, with the device's ids and times.
    assert [n.data["text"] for n in notes] == texts  # type: ignore[index]
    assert [n.uid for n in notes] == [e["args"]["uid"] for e in edits]
    assert all(n.channel == "sync" for n in notes)
    for note, edit in zip(notes, edits, strict=True):
        assert aware(note.occurred_at) == datetime.fromisoformat(edit["device_ts"])
    assert all(stopped_at <= aware(n.occurred_at) < restarted_at for n in notes[3:])
    assert all(aware(n.recorded_at) >= restarted_at for n in notes)
    assert [(m.seq, m.mid, m.status) for m in applied] == [(e["seq"], e["mid"], "applied") for e in edits]
    assert registered is not None and registered.last_seq == edits[-1]["seq"]

    # A pull brings the server's own copy of the notes to the device.
    synced_texts = pull_until(page, f"""async () => {{
        const texts = (await window.fieldworkSync.outbox.getWorkOrder({target}))
            .events.filter((e) => e.kind === "note" && e.data.text.includes("{marker}")).map((e) => e.data.text);
        return texts.length === 6 && texts;
    }}""")
    assert synced_texts == texts


def test_a_rejected_edit_is_kept_in_needs_attention(
    running: LiveServer, seeded: Seeded, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    page = open_page(context, running)
    sign_in(page)
    primed(page, seeded)

    queue_note(page, seeded.theirs, "a note for another crew's job")  # sent at once (automatic)
    attention = page.locator("#attention li")
    expect(attention).to_have_count(1, timeout=SYNC_TIMEOUT_MS)
    expect(attention).to_contain_text("is not assigned to your crew")
    expect(attention).to_contain_text("a note for another crew's job")
    expect(page.locator("#attention-count")).to_have_text("1")
    expect(unsynced(page)).to_have_text("0")
    mid = attention.get_attribute("data-mid")

    page.reload()  # kept on the device, not only on the screen
    expect(page.locator("#attention li")).to_have_count(1)
    expect(page.locator(f'#attention li[data-mid="{mid}"]')).to_be_visible()

    with Session(engine) as session:
        rejection = session.exec(select(SyncRejection).where(SyncRejection.mid == mid)).one()
        assert rejection.name == "note" and rejection.args["work_order_id"] == seeded.theirs  # type: ignore[index]
        uid = rejection.args["uid"]  # type: ignore[index]
        assert session.exec(select(WorkOrderEvent).where(WorkOrderEvent.uid == uid)).first() is None


def test_a_reassigned_job_leaves_the_device_only_after_its_edits_are_acknowledged(
    running: LiveServer, seeded: Seeded, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    page = open_page(context, running)
    sign_in(page)
    primed(page, seeded)
    job = seeded.mine[-1]
    hold_edits(page)
    queue_note(page, job, "made while the job was still ours")
    expect(unsynced(page)).to_have_text("1")

    with write_session(engine) as session:
        order = session.get(WorkOrder, job)
        assert order is not None
        assign(session, order, crew_id=seeded.other_crew_id, actor=Actor(None, "dispatcher:test", "api"))

    # Evicted, but an edit for it still waits: the job stays, marked as leaving.
    pull_until(page, f"window.fieldworkSync.outbox.getWorkOrder({job}).then((o) => o.leaving)")
    expect(order_row(page, job).locator("td").nth(3)).to_have_text("1 (leaving after sync)")

    page.get_by_role("button", name="Sync now").click()
    expect(unsynced(page)).to_have_text("0", timeout=SYNC_TIMEOUT_MS)
    expect(order_row(page, job)).to_have_count(0)
    expect(page.locator("#attention li")).to_have_count(0)
    with Session(engine) as session:
        notes = session.exec(
            select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == job, WorkOrderEvent.kind == "note")
        ).all()
    assert [n.data["text"] for n in notes] == ["made while the job was still ours"]  # type: ignore[index]


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x80\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_photo_is_uploaded_before_the_edit_that_refers_to_it(
    running: LiveServer, seeded: Seeded, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    page = open_page(context, running)
    sign_in(page)
    primed(page, seeded)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url.split('/sync/v1/')[-1]}")
            if "/sync/v1/" in r.url and "events" not in r.url else None)
    png = tiny_png()
    record = page.evaluate(
        """async ([data, orderId]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const file = new File([bytes], "pothole.png", { type: "image/png" });
            return window.fieldworkSync.outbox.queuePhoto(file, { work_order_id: orderId, caption: "before" });
        }""",
        [base64.b64encode(png).decode(), seeded.mine[1]],
    )
    # syncNow() joins a sync already running and goes round again, so this one includes the photo.
    assert page.evaluate("window.fieldworkSync.client.syncNow().then((r) => r.ok)")
    expect(unsynced(page)).to_have_text("0")
    sha = record["args"]["sha256"]
    uploads = [i for i, r in enumerate(requests) if r.endswith(f"blobs/{sha}") and r.startswith("PUT")]
    pushes = [i for i, r in enumerate(requests) if r == "POST push"]
    assert uploads and pushes and uploads[0] < pushes[0]
    stored = page.evaluate(f"""async () => {{
        const {{ transaction, get }} = window.fieldworkSync.db;
        const blob = await transaction(["blobs"], "readonly", (tx) => get(tx, "blobs", "{sha}"));
        return {{ uploaded: blob.uploaded, isBuffer: blob.data instanceof ArrayBuffer, size: blob.size }};
    }}""")
    assert stored == {"uploaded": True, "isBuffer": True, "size": len(png)}
    with Session(engine) as session:
        blob = session.get(Blob, sha)
        assert blob is not None and bytes(blob.data) == png
        photo = session.exec(select(WorkOrderEvent).where(WorkOrderEvent.uid == record["args"]["uid"])).one()
    assert photo.kind == "photo" and photo.data == {"sha256": sha, "caption": "before"}


def test_shared_notes_edited_twice_offline_apply_and_a_lost_race_is_a_conflict(
    running: LiveServer, seeded: Seeded, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    page = open_page(context, running)
    sign_in(page)
    primed(page, seeded)
    job = seeded.mine[2]
    hold_edits(page)
    queue_notes = """async ([id, text]) => (await window.fieldworkSync.outbox.queueEdit(
        "notes", { work_order_id: id, text })).args.base_version"""
    # Two edits of the shared notes before any sync: the second builds on the first.
    assert page.evaluate(queue_notes, [job, "first draft"]) == 0
    assert page.evaluate(queue_notes, [job, "second draft"]) == 1
    expect(unsynced(page)).to_have_text("2")
    with feed_held_back(engine):
        page.get_by_role("button", name="Sync now").click()
        expect(unsynced(page)).to_have_text("0", timeout=SYNC_TIMEOUT_MS)
        expect(page.locator("#attention li")).to_have_count(0)
        with Session(engine) as session:
            order = session.get(WorkOrder, job)
            assert order is not None and (order.notes, order.notes_version) == ("second draft", 2)
        # Acknowledged, but (on PostgreSQL) no pull has brought version 2 yet: the device
        # still shows the crew's text and knows which version its next edit builds on.
        view = page.evaluate(f"window.fieldworkSync.outbox.getWorkOrder({job})")
        assert (view["notes"], view["pending_edits"]) == ("second draft", 0)
        assert page.evaluate(queue_notes, [job, "crew's text"]) == 2

    # The dispatcher edits the notes while the crew edits the version it saw: the server's
    # text stays, the crew's is kept as a conflict, visible on the device.
    with write_session(engine) as session:
        order = session.get(WorkOrder, job)
        assert order is not None
        set_notes(session, order, text="dispatcher's text", base_version=2, actor=Actor(None, "dispatcher:test", "api"))
    page.get_by_role("button", name="Sync now").click()
    attention = page.locator("#attention li")
    expect(attention).to_have_count(1, timeout=SYNC_TIMEOUT_MS)
    expect(attention).to_contain_text("conflict")
    expect(attention).to_contain_text("crew's text")
    pull_until(page, f"""window.fieldworkSync.outbox.getWorkOrder({job})
        .then((o) => o.notes === "dispatcher's text" && o.pending_edits === 0)""")
    with Session(engine) as session:
        order = session.get(WorkOrder, job)
        conflict = session.exec(select(SyncConflict).where(SyncConflict.entity_id == str(job))).one()
    assert order is not None and order.notes == "dispatcher's text"
    assert (conflict.server_value, conflict.client_value) == ("dispatcher's text", "crew's text")


def test_a_refused_cursor_primes_again_and_drops_what_the_server_does_not_hold(
    running: LiveServer, seeded: Seeded, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    """A phone whose cursor came from another database (or a compacted feed) gets a 422:
    it primes again and forgets the jobs and reference data this server did not send,
    keeping a job whose edits are still waiting in the outbox."""
    page = open_page(context, running)
    sign_in(page)
    primed(page, seeded)
    hold_edits(page)
    job = seeded.mine[0]
    queue_note(page, job, "waiting while the server changed")
    ghost = 987654321
    page.evaluate(
        """async ([ghost, cursor]) => {
            const { db } = window.fieldworkSync;
            await db.transaction(["work_orders", "reference", "meta"], "readwrite", async (tx) => {
                await db.put(tx, "work_orders", {id: String(ghost), version: 3, pending: [],
                    data: {id: ghost, number: "WO-GHOST", status: "assigned", events: []}});
                await db.put(tx, "reference", {entity: "service_type", id: "ghost-type", version: null,
                    data: {code: "ghost-type", name: "Ghost"}});
                await db.setMeta(tx, "cursor", cursor);
            });
        }""",
        [ghost, f"v2.{'ab' * 16}.0.1"],
    )
    assert page.evaluate("window.fieldworkSync.client.pull().then((r) => r.ok)")
    assert page.evaluate(f"window.fieldworkSync.outbox.getWorkOrder({ghost})") is None
    kept = page.evaluate("""async () => {
        const { db } = window.fieldworkSync;
        return db.transaction(["reference", "meta"], "readonly", async (tx) => ({
            ghost: await db.get(tx, "reference", ["service_type", "ghost-type"]),
            references: (await db.getAll(tx, "reference")).length,
            cursor: await db.getMeta(tx, "cursor"),
        }));
    }""")
    assert kept["ghost"] is None and kept["references"] > 0
    with Session(engine) as session:
        name = session.exec(select(SyncIdentity.database_id)).one()
    assert kept["cursor"].startswith(f"v2.{name}.")
    for order_id in seeded.mine[:4]:
        expect(order_row(page, order_id)).to_be_visible()
    expect(unsynced(page)).to_have_text("1")  # the outbox is untouched
    page.get_by_role("button", name="Sync now").click()
    expect(unsynced(page)).to_have_text("0", timeout=SYNC_TIMEOUT_MS)


def test_a_priming_cut_short_starts_again_and_still_drops_what_the_server_does_not_hold(
    running: LiveServer, seeded: Seeded, context  # type: ignore[no-untyped-def]
) -> None:
    """The server refuses the phone's cursor and the priming that follows loses the
    network after its first page: the next sync primes from the start, so the jobs the
    server no longer sends still go (before, it went on from the middle and kept them)."""
    page = open_page(context, running)
    sign_in(page)
    primed(page, seeded)
    hold_edits(page)  # no sync of the app's own runs beside the ones below
    ghost = 987654322
    page.evaluate(
        """async ([ghost, cursor]) => {
            const { db } = window.fieldworkSync;
            await db.transaction(["work_orders", "meta"], "readwrite", async (tx) => {
                await db.put(tx, "work_orders", {id: String(ghost), version: 3, pending: [],
                    data: {id: ghost, number: "WO-GHOST", status: "assigned", events: []}});
                await db.setMeta(tx, "cursor", cursor);
            });
        }""",
        [ghost, f"v2.{'cd' * 16}.0.1"],
    )
    pulls: list[str] = []

    def first_page_then_no_network(route) -> None:  # type: ignore[no-untyped-def]
        cursor = (route.request.post_data_json or {}).get("cursor")
        pulls.append(str(cursor))
        if cursor is not None and cursor.startswith("v2.cdcd"):
            route.continue_()  # the refused cursor: 422, priming begins
            return
        if len(pulls) == 2:  # the priming's first page, said to have more after it
            response = route.fetch()
            body = response.json()
            body["changes"], body["has_more"] = body["changes"][:3], True
            route.fulfill(response=response, json=body)
            return
        route.abort("internetdisconnected")

    page.route("**/sync/v1/pull", first_page_then_no_network)
    assert not page.evaluate("window.fieldworkSync.client.pull().then((r) => r.ok, () => false)")
    assert len(pulls) == 3, pulls
    cursor = page.evaluate("""async () => {
        const { db } = window.fieldworkSync;
        return db.transaction(["meta"], "readonly", (tx) => db.getMeta(tx, "cursor"));
    }""")
    assert cursor == f"v2.{'cd' * 16}.0.1", "a priming cut short must not leave its middle as the cursor"
    page.unroute("**/sync/v1/pull")
    assert page.evaluate("window.fieldworkSync.client.pull().then((r) => r.ok)")
    assert page.evaluate(f"window.fieldworkSync.outbox.getWorkOrder({ghost})") is None
    for order_id in seeded.mine[:4]:
        expect(order_row(page, order_id)).to_be_visible()

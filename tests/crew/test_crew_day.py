"""A crew's day in the crew app (/crew/), real Chromium against a real server on loopback:
starting on one bar of signal, the dispatcher's route order, and the forms of a job."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect
from playwright.sync_api import Error as PlaywrightError
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.db import write_session
from server.models import WorkOrder, WorkOrderEvent
from server.workorders.changes import set_route
from sync.models import SyncMutation
from tests.conftest import LiveServer
from tests.crew.browsing import (
    SYNC_MS,
    UI_MS,
    back_to_list,
    crew_jobs,
    offline_ready,
    open_app,
    open_job,
    pull_until,
    sign_in,
)
from tests.crew.support import DISPATCH, CrewSeed

pytestmark = pytest.mark.browser

AT_ONCE_MS = 6_000  # "at once" on a shared, loaded test machine; the app has no timeout this short


class Hang:
    """Lie-fi: every request that reaches the network is held and never answered (the
    connection is up, nothing comes back). What the service worker serves from its cache
    never reaches the network."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.held: list[Route] = []

    def __enter__(self) -> Hang:
        self.context.route("**/*", self.hold)
        return self

    def hold(self, route: Route) -> None:
        self.held.append(route)

    def __exit__(self, *exc: object) -> None:
        self.context.unroute("**/*", self.hold)
        for route in self.held:
            with contextlib.suppress(PlaywrightError):  # the page may have given up on it already
                route.abort("connectionreset")


@pytest.fixture
def primed(running: LiveServer, seeded: CrewSeed, engine, context) -> Iterator[tuple[Page, int]]:  # type: ignore[no-untyped-def]
    """A phone signed in, with the crew's jobs and the app shell kept on it."""
    page = open_app(context, running)
    jobs = crew_jobs(engine, seeded)
    sign_in(page, jobs)
    offline_ready(page)
    expect(page.locator("body")).to_have_attribute("data-syncing", "false", timeout=60_000)
    yield page, jobs


# -- one bar of signal -------------------------------------------------------------------------


def test_the_day_shows_at_once_when_the_server_never_answers(
    primed: tuple[Page, int], seeded: CrewSeed, context  # type: ignore[no-untyped-def]
) -> None:
    """A request that never answers (not a refused one: the phone is not offline) must not
    keep the crew from its day: the list, and a job's moves, come from what the phone keeps."""
    page, jobs = primed
    with Hang(context) as hang:
        page.reload(wait_until="commit")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=AT_ONCE_MS)
        expect(page.locator("#jobs li")).to_have_count(jobs, timeout=AT_ONCE_MS)
        open_job(page, seeded.jobs[49])
        expect(page.get_by_role("button", name="En route")).to_be_visible(timeout=AT_ONCE_MS)
        assert hang.held, "the app asked the server nothing: the test proves nothing"
        held = {route.request.url.removeprefix(page.url.split("/crew/")[0]) for route in hang.held}
        assert "/api/workflow" in held  # it did ask, and did not wait for the answer



# -- the dispatcher's route order ----------------------------------------------------------------


def listed(page: Page) -> list[int]:
    return [int(i) for i in page.locator("#jobs li").evaluate_all("(rows) => rows.map((r) => r.dataset.id)")]


def test_the_list_follows_the_route_the_dispatcher_set(
    primed: tuple[Page, int], seeded: CrewSeed, engine: Engine  # type: ignore[no-untyped-def]
) -> None:
    """The dispatcher numbers the crew's day (route_position); after a pull the list shows
    the jobs in that order, whatever their priority and due time say."""
    page, _ = primed
    before = listed(page)
    route = before[::-1]  # the opposite of the order the phone chose by itself
    with write_session(engine) as session:
        orders = [session.get(WorkOrder, job_id) for job_id in route]
        assert all(order is not None and order.is_open for order in orders)  # all open: one block
        set_route(session, orders, actor=DISPATCH, how="manual")  # type: ignore[arg-type]
    last = route[-1]
    pull_until(page, f"window.fieldworkCrew.outbox.getWorkOrder({last}).then((o) => o && o.route_position === {len(route)})")
    page.get_by_role("button", name="Sync now").click()  # a sync that ends redraws the list
    expect(page.locator("#jobs li").first).to_have_attribute("data-id", str(route[0]), timeout=UI_MS)
    assert listed(page) == route
    numbers = page.locator("#jobs li .order").all_inner_texts()
    assert numbers == [str(n) for n in range(1, len(route) + 1)]


# -- the forms of a job, through the screen -------------------------------------------------------


def said(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("#job-said")


def test_material_time_cannot_complete_and_on_hold_through_the_forms(
    primed: tuple[Page, int], seeded: CrewSeed, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    page, _ = primed
    device = page.evaluate("window.fieldworkCrew.db.readMeta(['client_id']).then((m) => m.client_id)")
    page.evaluate("window.fieldworkCrew.client.pause()")  # everything below waits on the phone
    blocked, held = seeded.jobs[1], seeded.jobs[2]

    open_job(page, blocked)
    page.get_by_label("What", exact=True).fill("asphalt patch")
    page.get_by_label("How much").fill("2000")  # more than the form allows
    page.get_by_role("button", name="Add material").click()  # the browser's own check says why
    assert page.get_by_label("How much").evaluate("(field) => field.validity.rangeOverflow")
    expect(page.locator("#unsynced")).to_have_attribute("data-count", "0")
    page.get_by_label("How much").fill("2.5")
    page.get_by_label("Unit").fill("kg")
    page.get_by_role("button", name="Add material").click()
    expect(said(page)).to_have_text("Material saved on this phone.", timeout=UI_MS)
    expect(page.get_by_label("What", exact=True)).to_have_value("")
    page.get_by_label("Time worked (minutes)").fill("45")
    page.get_by_role("button", name="Add time").click()
    expect(said(page)).to_have_text("Time saved on this phone.", timeout=UI_MS)
    history = page.locator("#job-history")
    expect(history).to_contain_text("2.5 kg asphalt patch", timeout=UI_MS)
    expect(history).to_contain_text("45 min worked")

    page.get_by_role("button", name="Cannot complete…").click()
    page.get_by_label("Why").select_option("no_access")
    page.get_by_label("Note (optional)").fill("gate locked, nobody home")
    page.get_by_role("button", name="Mark cannot complete").click()
    expect(said(page)).to_contain_text("Saved on this phone.", timeout=UI_MS)
    expect(page.locator("#job-actions")).to_contain_text("This job is finished: Cannot complete.", timeout=UI_MS)
    expect(page.locator("#job-forms")).to_be_empty()  # a finished job takes no more facts
    back_to_list(page)

    open_job(page, held)
    page.get_by_role("button", name="On hold…").click()
    page.get_by_role("button", name="Put on hold").click()  # nothing chosen yet
    expect(page.locator("#move-error")).to_have_text("Choose one first.", timeout=UI_MS)
    page.get_by_label("Why").select_option("weather")
    page.get_by_role("button", name="Put on hold").click()
    expect(said(page)).to_contain_text("On hold", timeout=UI_MS)
    expect(page.get_by_role("button", name="En route")).to_be_visible()  # on hold: still open, moves on
    expect(page.locator("#unsynced")).to_have_attribute("data-count", "4")

    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#unsynced")).to_have_attribute("data-count", "0", timeout=SYNC_MS)
    with Session(engine) as session:
        events = {(e.work_order_id, e.kind, e.to_status): e.data for e in session.exec(select(WorkOrderEvent).where(
            WorkOrderEvent.work_order_id.in_([blocked, held]), WorkOrderEvent.channel == "sync"))}  # type: ignore[attr-defined]
        blocked_order, held_order = session.get(WorkOrder, blocked), session.get(WorkOrder, held)
        mutations = session.exec(select(SyncMutation.status).where(SyncMutation.client_id == device)).all()
    assert mutations == ["applied"] * 4
    assert events[(blocked, "material", None)] == {"item": "asphalt patch", "quantity": 2.5, "unit": "kg"}
    assert events[(blocked, "time", None)]["minutes"] == 45  # type: ignore[index]
    assert events[(blocked, "status", "cannot_complete")] == {"reason": "No access to the site. gate locked, nobody home"}
    assert events[(held, "status", "on_hold")] == {"reason": "Weather"}
    assert blocked_order is not None and blocked_order.status == "cannot_complete"
    assert blocked_order.resolution == "No access to the site. gate locked, nobody home"
    assert held_order is not None and held_order.status == "on_hold"

# -- a long day's edits reach the server in few, bounded pushes --------------------------------

MAX_MUTATIONS, MAX_BODY = 500, 1_000_000  # what the server takes in one push


def test_a_thousand_queued_edits_go_in_seq_order_in_pushes_the_server_takes(
    primed: tuple[Page, int], seeded: CrewSeed, engine: Engine, context  # type: ignore[no-untyped-def]
) -> None:
    """600 short notes, then 400 long ones in a script of 3 bytes a character (a count of
    characters would undercount them threefold): every push within both of the server's
    limits, the seqs in order with no gap and no repeat, each edit applied once."""
    page, _ = primed
    device = page.evaluate("window.fieldworkCrew.db.readMeta(['client_id']).then((m) => m.client_id)")
    page.evaluate("window.fieldworkCrew.client.pause()")
    page.evaluate("""async (ids) => {
        const { outbox } = window.fieldworkCrew;
        for (let i = 0; i < 1000; i += 1) {
            const text = i < 600 ? `short note ${i}` : `${i} ` + "日".repeat(1000);
            await outbox.queueEdit("note", { work_order_id: ids[i % ids.length], text });
        }
    }""", seeded.jobs)
    pushes: list[tuple[int, list[int]]] = []  # (bytes, seqs) of each push

    def record(route: Route) -> None:
        body = route.request.post_data_buffer or b""
        pushes.append((len(body), [m["seq"] for m in json.loads(body)["mutations"]]))
        route.continue_()

    context.route("**/sync/v1/push", record)
    try:
        page.get_by_role("button", name="Sync now").click()
        expect(page.locator("#unsynced")).to_have_attribute("data-count", "0", timeout=120_000)
    finally:
        context.unroute("**/sync/v1/push", record)
    seqs = [seq for _, batch in pushes for seq in batch]
    assert seqs == list(range(seqs[0], seqs[0] + 1000)), "seq order, no gap, nothing twice"
    assert all(len(batch) <= MAX_MUTATIONS and size <= MAX_BODY for size, batch in pushes), [
        (size, len(batch)) for size, batch in pushes]
    assert len(pushes[0][1]) == MAX_MUTATIONS  # full batches, not a hundred at a time
    assert any(size > 800_000 and len(batch) < MAX_MUTATIONS for size, batch in pushes)  # cut by bytes
    with Session(engine) as session:
        statuses = session.exec(select(SyncMutation.status).where(
            SyncMutation.client_id == device, SyncMutation.seq >= seqs[0])).all()
    assert len(statuses) == 1000 and set(statuses) == {"applied"}

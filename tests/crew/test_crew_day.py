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

from sync.models import SyncMutation
from tests.conftest import LiveServer
from tests.crew.browsing import crew_jobs, offline_ready, open_app, open_job, sign_in
from tests.crew.support import CrewSeed

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

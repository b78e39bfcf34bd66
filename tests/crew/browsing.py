"""Steps a crew member takes in the crew app, shared by its browser tests."""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.models import WorkOrder
from tests.conftest import LiveServer
from tests.crew.support import PASSWORD, USERNAME, CrewSeed

SYNC_MS = 60_000
UI_MS = 15_000  # a step on the phone, on a machine shared with other test runs


def open_app(context, server: LiveServer, path: str = "/crew/") -> Page:  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(server.url + path)
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=20_000)
    return page


def crew_jobs(engine: Engine, seeded: CrewSeed) -> int:
    """How many jobs the crew holds now (earlier tests hand some over)."""
    with Session(engine) as session:
        return len(session.exec(select(WorkOrder.id).where(WorkOrder.crew_id == seeded.crew_id)).all())


def sign_in(page: Page, jobs: int) -> None:
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#jobs li")).to_have_count(jobs, timeout=SYNC_MS)
    # The workflow comes in the background on a first start, and its arrival redraws the
    # rows (their moves and states depend on it): a test that marks elements waits for it.
    page.wait_for_function("window.fieldworkCrew.store.getWorkflow() !== null", timeout=SYNC_MS)


def offline_ready(page: Page) -> None:
    """The service worker controls the page: the shell is cached."""
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=20_000)


def open_job(page: Page, job_id: int) -> None:
    row = page.locator(f'#jobs li[data-id="{job_id}"]')
    number = row.get_attribute("data-number")
    row.locator("a").click()
    try:
        page.locator("#job-title").wait_for(state="visible", timeout=5_000)
    except PlaywrightTimeoutError:
        # A redraw now keeps unchanged rows (see the redraw test in test_crew_app.py), but a row that
        # changed at the moment of the tap is still replaced under it. Tap again, as a crew would.
        row.locator("a").click()
    expect(page.locator("#job-title")).to_be_visible(timeout=UI_MS)
    expect(page.locator("#job-title")).to_contain_text(str(number), timeout=UI_MS)


def back_to_list(page: Page) -> None:
    page.get_by_role("link", name="Back to the jobs").click()
    expect(page.locator("#jobs-title")).to_be_visible(timeout=UI_MS)


def pull_until(page: Page, predicate: str, timeout_s: float = 60) -> Any:
    """Pull until the JS `predicate` holds (on PostgreSQL the change feed may hold a change
    back while any transaction on the server is still running)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert page.evaluate("window.fieldworkCrew.client.pull().then((r) => r.ok)")
        value = page.evaluate(predicate)
        if value:
            return value
        assert time.monotonic() < deadline, f"no pull brought what {predicate!r} waits for"
        page.wait_for_timeout(300)

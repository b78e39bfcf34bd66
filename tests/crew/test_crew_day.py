"""A crew's day in the crew app (/crew/), real Chromium against a real server on loopback:
starting on one bar of signal, the dispatcher's route order, and the forms of a job."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

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
            try:
                route.abort("connectionreset")
            except Exception:  # noqa: BLE001 - the page may have given up on it already
                pass


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

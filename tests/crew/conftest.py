"""Fixtures of the crew app's browser tests: a seeded crew, a server of the module's own
(the tests stop, kill and restart it) and a 360 × 740 phone-sized browser context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from server.settings import Settings
from tests.conftest import LiveServer
from tests.crew.support import CrewSeed, seed_crew

JOBS = 50


@pytest.fixture(scope="module")
def seeded(engine: Engine, settings: Settings) -> CrewSeed:
    return seed_crew(engine, settings, JOBS)


@pytest.fixture(scope="module")
def server(seeded: CrewSeed, settings: Settings) -> Iterator[LiveServer]:
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
    """A fresh phone: its own IndexedDB, caches and service worker; fails the test on any
    uncaught error in its pages."""
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=1)
    errors: list[str] = []
    context.on("page", lambda page: page.on("pageerror", lambda error: errors.append(str(error))))
    yield context
    context.close()
    assert errors == []

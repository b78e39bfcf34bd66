"""The resident's tracking page in real Chromium against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.intake.importer import import_file
from server.models import Case, WorkOrder
from server.settings import IntakeSettings
from tests.conftest import DATA, LiveServer, load_city_areas

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seeded(engine: Engine) -> Engine:
    load_city_areas(engine, "nyc")
    import_file(engine, DATA / "nyc/records/nyc_311_2023-12-09__kexinjiao_api.csv.gz",
                settings=IntakeSettings(timezone="America/New_York"))
    return engine


@pytest.fixture(scope="module")
def server(seeded: Engine, live_server: LiveServer) -> Iterator[LiveServer]:
    yield live_server


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def test_resident_sees_the_status_of_a_real_report(server: LiveServer, seeded: Engine, page) -> None:  # type: ignore[no-untyped-def]
    with Session(seeded) as session:
        closed = session.exec(
            select(Case).join(WorkOrder, Case.work_order_id == WorkOrder.id).where(WorkOrder.status == "completed")  # type: ignore[arg-type]
        ).first()
        open_case = session.exec(
            select(Case).join(WorkOrder, Case.work_order_id == WorkOrder.id).where(WorkOrder.is_open)  # type: ignore[arg-type]
        ).first()
    assert closed is not None and open_case is not None

    page.goto(server.url + "/")
    assert page.title() == "Fieldwork"
    page.get_by_label("Your service request number").fill(str(closed.id))
    page.get_by_role("button", name="Show status").click()
    status = page.locator("#track-result .status")
    status.wait_for()
    assert status.inner_text() == "Closed"
    assert closed.service_name in page.locator("#track-result").inner_text()

    page.get_by_label("Your service request number").fill(str(open_case.id))
    page.get_by_role("button", name="Show status").click()
    page.wait_for_function("document.querySelector('#track-result .status')?.textContent === 'Open'")

    page.get_by_label("Your service request number").fill("999999999")
    page.get_by_role("button", name="Show status").click()
    page.locator("#track-result .error").wait_for()
    assert "No report with number 999999999" in page.locator("#track-result").inner_text()


def test_api_docs_render_in_the_browser(server: LiveServer, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.url + "/api/docs")
    page.wait_for_selector("text=Fieldwork", timeout=15000)

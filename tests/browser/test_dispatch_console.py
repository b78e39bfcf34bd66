"""The dispatcher console in real Chromium against a real server loaded with LA's real 311
data: filter, bulk-assign 20 work orders selected on the map (through the overload
warning), see a crew's change arrive live, an emergency alert, resolve a crew's conflict in
one click, place an unlocated case, export GeoJSON and open it with a GeoJSON reader."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from shapely.geometry import shape
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.db import write_session
from server.models import Case, District, WorkOrder
from server.settings import Settings
from server.workorders.changes import Actor, _bump
from sync.models import SyncConflict
from tests.api.support import PASSWORDS, USERNAMES, Api, Seed, seed_database
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seed(engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    return seed_database(engine, settings, tmp_path_factory.mktemp("rejects"))


@pytest.fixture(scope="module")
def api(live_server: LiveServer, seed: Seed) -> Iterator[Api]:
    client = Api(live_server, seed)
    yield client
    client.close()


@pytest.fixture
def page(browser: Any, api: Api) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 900}, timezone_id="UTC", accept_downloads=True)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: print("console:", message.text))
    page.goto(api.server.url + "/dispatch/")
    page.fill("#username", USERNAMES["dispatcher"])
    page.fill("#password", PASSWORDS["dispatcher"])
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#board tbody tr")
    page.wait_for_function("Number(document.getElementById('map').dataset.markers) > 0")
    page.locator("#live.on").wait_for()
    yield page
    context.close()
    assert errors == []


def twenty_new_in_a_window(engine: Engine) -> tuple[list[int], datetime, datetime]:
    """20 new, unassigned work orders that a date range (to the second) picks out exactly."""
    with Session(engine) as session:
        rows = list(session.exec(
            select(WorkOrder.id, WorkOrder.first_reported_at).where(WorkOrder.status == "new",
                                                                   col(WorkOrder.deleted_at).is_(None))
            .order_by(col(WorkOrder.first_reported_at), col(WorkOrder.id))
        ).all())
    for i in range(1, len(rows) - 20):
        since = rows[i][1].replace(microsecond=0)
        until = rows[i + 19][1].replace(microsecond=0) + timedelta(seconds=1)
        if rows[i - 1][1] < since and rows[i + 20][1] >= until:
            return [r[0] for r in rows[i:i + 20]], since, until  # type: ignore[misc]
    raise AssertionError("no such window in the data")


def local(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_dispatchers_morning(page: Any, api: Api, engine: Engine, seed: Seed) -> None:
    # -- filter, then select 20 on the map and assign them through the overload warning -------
    jobs, since, until = twenty_new_in_a_window(engine)
    page.select_option("#f-status", "new")
    page.fill("#f-since", local(since))
    page.fill("#f-until", local(until))
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.getElementById('map').dataset.markers === '20'")
    page.wait_for_function("document.querySelectorAll('#board tbody tr').length === 20")
    page.click("#box-select")
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 8)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    page.mouse.move(box["x"] + box["width"] - 8, box["y"] + box["height"] - 28, steps=4)
    page.mouse.up()
    page.locator("#selected-count", has_text="20 selected").wait_for()
    page.select_option("#bulk-crew", str(seed.crew_a))
    page.click("#bulk-assign")
    dialog = page.locator("#confirm")
    dialog.wait_for()
    assert "Crew A" in page.locator("#confirm-text").inner_text()  # 40 open jobs on 10 hours already
    page.click("#confirm-ok")
    page.wait_for_function("document.getElementById('selected-count').textContent === '0 selected'")
    with Session(engine) as session:
        crews = set(session.exec(select(WorkOrder.crew_id).where(col(WorkOrder.id).in_(jobs))).all())
    assert crews == {seed.crew_a}

    # -- a crew's change arrives live -------------------------------------------------------
    page.select_option("#f-status", "")
    page.select_option("#f-crew", str(seed.crew_a))
    page.fill("#f-since", "")
    page.fill("#f-until", "")
    page.click("#filters button[type=submit]")
    row = page.locator(f"#board tbody tr[data-id='{jobs[0]}']")
    row.wait_for()
    assert "Assigned" in row.inner_text()
    crew = {"Authorization": f"Bearer {api.tokens['crew_a']}"}
    device = f"dev-{uuid.uuid4().hex[:10]}"

    def push(seq: int, name: str, **args: Any) -> dict[str, Any]:
        body = {"client_id": device, "schema_version": 1, "mutations": [
            {"seq": seq, "mid": uuid.uuid4().hex, "name": name, "args": args,
             "device_ts": datetime.now(UTC).isoformat()}]}
        response = httpx.post(f"{api.server.url}/sync/v1/push", json=body, headers=crew, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["results"][0]

    assert push(1, "status", work_order_id=jobs[0], to="en_route")["status"] == "applied"
    page.locator(f"#board tbody tr[data-id='{jobs[0]}']", has_text="Crew en route").wait_for(timeout=15_000)

    # -- an emergency alert appears at once, with its words -----------------------------------
    with write_session(engine) as session:
        order = session.get(WorkOrder, jobs[1])
        assert order is not None
        _bump(session, order, "alert", Actor(None, "system", "system"), occurred_at=None,
              data={"reason": "emergency keyword", "keyword": "downed power line"})
    page.locator("#alerts .alert", has_text="downed power line").wait_for(timeout=15_000)

    # -- a crew's late edit becomes a conflict; one click takes the crew's value ---------------
    cancelled = api.request("PATCH", "dispatcher", f"/api/dispatch/workorders/{jobs[0]}",
                            json={"status": "cancelled", "reason": "duplicate call"})
    assert cancelled.status_code == 200
    assert push(2, "status", work_order_id=jobs[0], to="completed")["status"] == "conflict"
    with Session(engine) as session:
        number = session.get(WorkOrder, jobs[0]).number  # type: ignore[union-attr]
        conflict_id = session.exec(select(SyncConflict.id).where(SyncConflict.entity_id == str(jobs[0]))).one()
    page.click("[data-tab=conflicts]")
    conflict = page.locator(f"#tab-conflicts tr[data-conflict='{conflict_id}']")
    conflict.wait_for()
    text = conflict.inner_text()
    assert number in text and "Crew A" in text and USERNAMES["crew_a"] in text
    assert "cancelled" in text and "completed" in text
    conflict.get_by_role("button", name="Take crew's value").click()
    conflict.wait_for(state="detached")
    with Session(engine) as session:
        assert session.get(WorkOrder, jobs[0]).status == "completed"  # type: ignore[union-attr]
        assert session.get(SyncConflict, conflict_id).status == "resolved"  # type: ignore[union-attr]

    # -- place an unlocated case by clicking the map ------------------------------------------
    with write_session(engine) as session:
        case = session.exec(select(Case).where(Case.location_state == "unlocated").order_by(col(Case.id))).first()
        assert case is not None
        case.closed_at = None  # the export's unlocated cases are all closed: this one is open
        session.add(case)
        case_id = case.id
        district = session.exec(select(District).where(col(District.primary)).order_by(col(District.id))).first()
        point = shape(district.geometry).representative_point()  # type: ignore[union-attr]
    page.click("[data-tab=unlocated]")
    item = page.locator(f"#unlocated-list li[data-case='{case_id}']")
    item.wait_for()
    item.locator("button.place").click()
    page.evaluate(f"window.fieldworkDispatch.map.setView([{point.y}, {point.x}], 15, {{animate: false}})")
    page.wait_for_timeout(300)
    page.locator("#map").click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    item.wait_for(state="detached")
    with Session(engine) as session:
        placed = session.get(Case, case_id)
        assert placed is not None and placed.location_state == "located" and placed.work_order_id is not None
        assert placed.district_id == district.id  # type: ignore[union-attr]
        assert abs(placed.lat - point.y) < 0.01 and abs(placed.lon - point.x) < 0.01  # type: ignore[operator]

    # -- export the filtered set as GeoJSON and read it back --------------------------------
    with page.expect_download() as download:
        page.click("#export-geojson")
    collection = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    with Session(engine) as session:
        expected = set(session.exec(select(WorkOrder.id).where(
            WorkOrder.crew_id == seed.crew_a, col(WorkOrder.is_open), col(WorkOrder.deleted_at).is_(None))).all())
    assert collection["type"] == "FeatureCollection"
    assert {f["id"] for f in collection["features"]} == expected
    assert all(shape(f["geometry"]).geom_type == "Point" for f in collection["features"])
    assert all(f["properties"]["crew"] == "Crew A" for f in collection["features"])


def open_job_not_on(engine: Engine, crew_id: int, skip: set[int]) -> WorkOrder:
    with Session(engine) as session:
        order = session.exec(select(WorkOrder).where(
            col(WorkOrder.is_open), col(WorkOrder.deleted_at).is_(None), col(WorkOrder.crew_id).is_(None),
            col(WorkOrder.id).not_in(skip)).order_by(col(WorkOrder.id).desc())).first()
        assert order is not None
        session.expunge(order)
        return order


def crew_of(engine: Engine, work_order_id: int) -> int | None:
    with Session(engine) as session:
        return session.get(WorkOrder, work_order_id).crew_id  # type: ignore[union-attr]


def search(page: Any, order: WorkOrder) -> Any:
    page.fill("#f-q", order.number)
    page.click("#filters button[type=submit]")
    row = page.locator(f"#board tbody tr[data-id='{order.id}']")
    row.wait_for()
    page.wait_for_function("document.querySelectorAll('#board tbody tr').length === 1")
    return row


def test_every_way_of_assigning_warns_before_overloading_a_crew(page: Any, engine: Engine, seed: Seed) -> None:
    # Crew A already has more hours of open work than its capacity: any job more overloads it.
    one = open_job_not_on(engine, seed.crew_a, set())
    # -- from the detail panel: "Cancel" leaves the job alone, "Assign anyway" assigns it -----
    search(page, one).locator("a").click()
    page.locator("#tab-detail h2", has_text=one.number).wait_for()
    dialog = page.locator("#confirm")
    for answer in ("cancel", "ok"):
        page.select_option("#d-crew", str(seed.crew_a))
        page.locator("#tab-detail form", has=page.locator("#d-crew")).get_by_role("button", name="Assign").click()
        dialog.wait_for()
        text = page.locator("#confirm-text").inner_text()
        assert text.startswith("Crew A would have ") and "h of capacity" in text and text.endswith("Assign anyway?")
        page.click("#confirm-ok" if answer == "ok" else "#confirm button[value=cancel]")
        dialog.wait_for(state="hidden")
        if answer == "cancel":
            page.wait_for_timeout(300)
            assert crew_of(engine, one.id) is None  # type: ignore[arg-type]
    page.wait_for_function(f"() => {{ const row = document.querySelector(\"#board tbody tr[data-id='{one.id}']\");"
                           " return row && row.textContent.includes('Crew A'); }")
    assert crew_of(engine, one.id) == seed.crew_a  # type: ignore[arg-type]

    # The change comes back on the live stream and redraws the list: wait for it, so that the
    # row dragged below is not replaced under the mouse.
    page.wait_for_function(f"(document.body.dataset.lastChange || '').split(',').includes('{one.id}')")

    # -- a row dragged from the list onto a crew in the Crews tab: the same warning ----------
    two = open_job_not_on(engine, seed.crew_a, {one.id})  # type: ignore[arg-type]
    row = search(page, two)
    page.click("[data-tab=crews]")
    target = page.locator(f"#tab-crews tr[data-crew='{seed.crew_a}']")
    target.wait_for()
    row.drag_to(target)
    dialog.wait_for()
    assert page.locator("#confirm-text").inner_text().startswith("Crew A would have ")
    page.click("#confirm-ok")
    page.wait_for_function(f"() => {{ const row = document.querySelector(\"#board tbody tr[data-id='{two.id}']\");"
                           " return row && row.textContent.includes('Crew A'); }")
    assert crew_of(engine, two.id) == seed.crew_a  # type: ignore[arg-type]


def test_the_list_ends_up_with_the_whole_first_page_in_order(page: Any, api: Api) -> None:
    # The first frame lays out only the rows a window's height can show; the rest of the page
    # follows right after it, so in the end the list is the board's first page, in order.
    expected = api.get("dispatcher", "/api/dispatch/board", open_only="true", limit=100).json()
    ids = [str(item["id"]) for item in expected["items"]]
    assert len(ids) > 900 // 25  # more rows than the first frame lays out
    page.wait_for_function(f"document.querySelectorAll('#board tbody tr').length === {len(ids)}")
    assert page.eval_on_selector_all("#board tbody tr", "rows => rows.map((r) => r.dataset.id)") == ids
    assert page.locator("#more").is_visible() == bool(expected["next_cursor"])


def test_the_date_filters_become_date_and_time_inputs(page: Any) -> None:
    # Text boxes in the page's HTML (their widgets are costly to build while it is parsed),
    # date-and-time inputs once the first screen is painted.
    assert page.eval_on_selector_all("#f-since, #f-until", "inputs => inputs.map((i) => i.type)") == [
        "datetime-local", "datetime-local"]


def test_the_map_shows_the_districts_when_no_tile_loads(page: Any, engine: Engine) -> None:
    # This machine has no network: no tile loads, and the districts are the map.
    with Session(engine) as session:
        primary = len(session.exec(select(District.id).where(col(District.primary))).all())
    assert primary > 0
    page.wait_for_function(f"document.getElementById('map').dataset.outlines === '{primary}'")
    assert page.locator(".leaflet-outlines-pane path").count() == primary
    assert page.locator(".leaflet-tile-loaded").count() == 0
    # The jobs are drawn above the districts, and a click on one still opens it.
    assert int(page.locator("#map").get_attribute("data-drawn")) > 0
    point = page.evaluate("""() => {
      const m = window.fieldworkDispatch.mapView;
      m.map.setView([m.data.lat[0], m.data.lon[0]], 17, { animate: false });
      const p = m.map.latLngToContainerPoint([m.data.lat[0], m.data.lon[0]]);
      return { x: p.x, y: p.y, id: m.data.id[m.hit(p).dot] };
    }""")
    page.locator("#map").click(position={"x": point["x"], "y": point["y"]})
    with Session(engine) as session:
        number = session.get(WorkOrder, point["id"]).number  # type: ignore[union-attr]
    page.locator("#tab-detail h2", has_text=number).wait_for()


def test_a_job_placed_from_its_address_says_how_sure(page: Any, engine: Engine) -> None:
    order_id = int(page.locator("#board tbody tr").first.get_attribute("data-id"))
    with write_session(engine) as session:
        case = session.exec(select(Case).where(Case.work_order_id == order_id).order_by(col(Case.id))).first()
        assert case is not None
        case.attributes = {**(case.attributes or {}), "open311:geocoded": ["nearby, confidence 0.54"]}
        session.add(case)
    page.locator("#board tbody tr").first.locator("a").click()
    line = page.locator("#tab-detail .geocoded")
    line.wait_for()
    assert line.inner_text() == "Placed from the address (a house nearby, 54% sure)"

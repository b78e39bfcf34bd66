"""The resident pages in real Chromium against a real server, with real LA data and a push
service stand-in on loopback: report a problem with a photo, track it in Spanish and in
Arabic (right to left), "Notify me", the job completed through the dispatcher API, the
push service receiving the notice, the service worker showing it and its click opening the
tracking page.

Two things a test cannot do for real are stood in for, as TOOLCHAIN.md says: the browser's
push subscription (PushManager.prototype.subscribe returns one pointing at the stand-in)
and the push delivery to the worker (DevTools' ServiceWorker.deliverPushMessage, with the
payload the stand-in decrypted). A test cannot click an OS notification either: the click
is dispatched inside the service worker, with one of our pages open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.auth.users import create_crew, create_user
from server.db import write_session
from server.intake.importer import import_file
from server.models import Case, PushSubscription, WorkOrder
from server.notify.catalog import catalog
from server.notify.vapid import VapidIdentity, ensure_keys
from server.settings import IntakeSettings, Settings
from tests.conftest import DATA, LiveServer, load_city_areas
from tests.notify.pushservice import PushService, Subscriber

pytestmark = pytest.mark.browser

LA_FILE = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
PASSWORD = "resident pages test password"
TEXTS = catalog("resident")


@dataclass
class World:
    server: LiveServer
    engine: Engine
    push: PushService
    identity: VapidIdentity
    crew_id: int


@pytest.fixture(scope="module")
def world(engine: Engine, settings: Settings) -> Iterator[World]:
    load_city_areas(engine, "la")
    import_file(engine, LA_FILE, settings=IntakeSettings(timezone="America/Los_Angeles"))
    with write_session(engine) as session:
        identity, _ = ensure_keys(session)
        crew = create_crew(session, name="Graffiti crew")
        assert crew.id is not None
        create_user(session, username="dispatcher", password=PASSWORD, role="dispatcher")
        crew_id = crew.id
    server = LiveServer(settings, env_extra={"FIELDWORK_PUSH_ALLOW_LOOPBACK_HTTP": "1",
                                             "FIELDWORK_PUSH_POLL_SECONDS": "0.2"})
    server.start()
    with PushService(expected_key=identity.public_key) as push:
        yield World(server, engine, push, identity, crew_id)
    server.stop()


@pytest.fixture
def context_factory(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(locale: str, **options: Any) -> Any:
        context = browser.new_context(locale=locale, viewport={"width": 360, "height": 740}, **options)
        context.on("console", lambda message: print("console:", message.text))
        context.on("weberror", lambda error: print("page error:", error.error))
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@dataclass
class Reported:
    token: str
    case_id: int


@pytest.fixture(scope="module")
def reported(world: World, browser: Any) -> Reported:
    """A resident reports graffiti on the front page: a point on the map, a description, a photo."""
    context = browser.new_context(locale="en-US", viewport={"width": 360, "height": 740})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(world.server.url + "/")
        page.wait_for_function("document.querySelectorAll('#service option').length > 1")
        photo = page.screenshot()  # a real image to send: the page itself, as a PNG
        page.get_by_label(TEXTS.t("en", "report.service.label")).select_option(label="Graffiti Removal")
        page.locator("#map").click(position={"x": 170, "y": 130})
        page.locator("#where-status").filter(has_text=TEXTS.t("en", "report.where.placed")).wait_for()
        page.get_by_label(TEXTS.t("en", "report.description.label")).fill("Fresh tags on the underpass wall")
        page.get_by_label(TEXTS.t("en", "report.photo.label")).set_input_files(
            files=[{"name": "wall.png", "mimeType": "image/png", "buffer": photo}])
        page.locator("#photo-figure:not([hidden])").wait_for()
        page.get_by_role("button", name=TEXTS.t("en", "report.submit")).click()
        page.locator("#report-done:not([hidden])").wait_for()
        assert page.evaluate("document.activeElement.id") == "done-title"
        href = page.locator("#done-track").get_attribute("href") or ""
        assert href.startswith("/track/") and href.endswith("?lang=en")
        token = href.removeprefix("/track/").split("?")[0]
        number = page.locator("#done-number").inner_text()
        assert errors == []
    finally:
        context.close()
    with Session(world.engine) as session:
        case = session.exec(select(Case).where(Case.tracking_token == token)).one()
    assert case.id is not None and str(case.id) in number
    return Reported(token=token, case_id=case.id)


def test_a_report_with_a_photo_goes_through_the_intake(world: World, reported: Reported) -> None:
    with Session(world.engine) as session:
        case = session.get(Case, reported.case_id)
        assert case is not None
        order = session.get(WorkOrder, case.work_order_id)
    assert case.source == "web" and case.service_code == "graffiti-removal"
    assert case.description == "Fresh tags on the underpass wall"
    assert case.lat is not None and case.lon is not None
    assert 33.6 < case.lat < 34.4 and -118.8 < case.lon < -118.1  # on the map of Los Angeles
    assert order is not None and order.is_open and case.location_state == "located"
    assert case.media_url and "/api/resident/photos/" in case.media_url
    photo = httpx.get(case.media_url)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content[:3] == b"\xff\xd8\xff"  # resized to a JPEG on the phone


def _state_of(world: World, token: str) -> dict[str, Any]:
    response = httpx.get(f"{world.server.url}/api/resident/track/{token}")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def test_the_tracking_page_in_spanish_and_in_arabic(world: World, reported: Reported, context_factory: Any) -> None:
    data = _state_of(world, reported.token)
    for locale, language, direction in (("es-MX", "es", "ltr"), ("ar-EG", "ar", "rtl")):
        page = context_factory(locale).new_page()
        page.goto(f"{world.server.url}/track/{reported.token}")
        page.locator("#case:not([hidden])").wait_for()
        assert page.evaluate("[document.documentElement.lang, document.documentElement.dir]") == [language, direction]
        assert page.evaluate("getComputedStyle(document.body).direction") == direction
        assert page.locator("#case-state").inner_text() == TEXTS.t(language, f"state.{data['state']}")
        assert page.locator("#case-title").inner_text() == "Graffiti Removal"
        received = page.locator("#timeline li[data-kind=received] .what")
        assert received.inner_text() == TEXTS.t(language, "timeline.received")
        expected = page.locator("#case-expected").inner_text()
        assert expected and expected != TEXTS.t("en", "expected.range")
        assert TEXTS.t(language, "notify.button") == page.locator("#notify-on").inner_text()
        assert page.title() == TEXTS.t(language, "track.title")
    # The switch changes the language of the whole page at once.
    page.get_by_label(TEXTS.t("ar", "language.label")).select_option("fr")
    page.wait_for_function("document.documentElement.lang === 'fr' && document.documentElement.dir === 'ltr'")
    assert page.locator("#case-state").inner_text() == TEXTS.t("fr", f"state.{data['state']}")


def test_tracking_by_our_number_and_the_citys_number(world: World, reported: Reported, context_factory: Any) -> None:
    page = context_factory("en-US").new_page()
    page.goto(world.server.url + "/")
    page.get_by_label(TEXTS.t("en", "lookup.label")).fill(str(reported.case_id))
    page.get_by_role("button", name=TEXTS.t("en", "lookup.submit")).click()
    page.locator("#case:not([hidden])").wait_for()
    # By number anyone can look; notices need the reporter's own link.
    assert page.locator("#notify-status").inner_text() == TEXTS.t("en", "notify.need_token")
    with Session(world.engine) as session:
        imported = session.exec(select(Case).where(Case.source == "la").order_by(Case.id)).first()  # type: ignore[arg-type]
    assert imported is not None and imported.external_id.startswith("1-")
    page.goto(f"{world.server.url}/track/{imported.external_id}")
    page.locator("#case:not([hidden])").wait_for()
    assert imported.external_id in page.locator("#case-city-number").inner_text()
    page.goto(f"{world.server.url}/track/no-such-report-here")
    page.locator("#track-error:not([hidden])").wait_for()
    assert page.locator("#track-error").inner_text() == TEXTS.t("en", "track.not_found")


def _sign_in(world: World) -> dict[str, str]:
    response = httpx.post(f"{world.server.url}/api/auth/sign-in", json={"username": "dispatcher", "password": PASSWORD})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def notify_me(world: World, reported: Reported, context: Any, phone: Subscriber, language: str) -> Any:
    """Open the case's tracking page and press "Notify me"; the page, once subscribed."""
    context.grant_permissions(["notifications"], origin=world.server.url)
    # The browser's push service is out of reach here: subscribe() hands back the stand-in's.
    context.add_init_script(f"""
        const stand_in = {json.dumps(phone.subscription())};
        PushManager.prototype.subscribe = async function (options) {{
          return {{ endpoint: stand_in.endpoint, expirationTime: null, options,
                    toJSON() {{ return stand_in; }}, unsubscribe: async () => true }};
        }};
    """)
    page = context.new_page()
    page.goto(f"{world.server.url}/track/{reported.token}")
    page.locator("#case:not([hidden])").wait_for()
    page.get_by_role("button", name=TEXTS.t(language, "notify.button")).click()
    page.locator("#notify-status").filter(has_text=TEXTS.t(language, "notify.on")).wait_for()
    return page


def test_notify_me_then_the_fix_reaches_the_phone(
    world: World, reported: Reported, context_factory: Any
) -> None:
    phone = world.push.subscriber()
    context = context_factory("es-ES")
    page = notify_me(world, reported, context, phone, "es")
    with Session(world.engine) as session:
        bound = session.exec(select(PushSubscription).where(PushSubscription.case_id == reported.case_id)).all()
    assert [(s.endpoint, s.language) for s in bound] == [(phone.endpoint, "es")]

    # The job is done, through the dispatcher API.
    with Session(world.engine) as session:
        case = session.get(Case, reported.case_id)
        assert case is not None and case.work_order_id is not None
        order_id = case.work_order_id
    headers = _sign_in(world)
    url = f"{world.server.url}/api/dispatch/workorders/{order_id}"
    assert httpx.patch(url, json={"crew_id": world.crew_id}, headers=headers).status_code == 200
    done = httpx.patch(url, json={"status": "completed", "reason": "Pintura retirada con hidrolavadora"},
                       headers=headers)
    assert done.status_code == 200, done.text

    scheduled, fixed = world.push.wait_for(2, subscriber=phone, timeout=30)
    assert scheduled.payload is not None and fixed.payload is not None
    assert fixed.payload["title"] == TEXTS.t("es", "push.completed.title", service="Graffiti Removal")
    assert "Pintura retirada" in fixed.payload["body"]
    assert fixed.payload["url"] == f"/track/{reported.token}?lang=es"

    # Delivered to the page's service worker, it shows the notice.
    cdp = context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda event: registrations.extend(event["registrations"]))
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 10
    while not [r for r in registrations if not r["isDeleted"]] and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    (registration,) = {r["registrationId"]: r for r in registrations if not r["isDeleted"]}.values()
    assert registration["scopeURL"] == world.server.url + "/"
    cdp.send("ServiceWorker.deliverPushMessage", {
        "origin": world.server.url, "registrationId": registration["registrationId"],
        "data": json.dumps(fixed.payload),
    })
    # Polled with `evaluate`, which awaits the promise: `wait_for_function` takes an async
    # predicate's promise itself as its truthy answer, before any notice shows.
    shown = None
    deadline = time.monotonic() + 10
    while shown is None and time.monotonic() < deadline:
        shown = page.evaluate("""async () => {
            const registration = await navigator.serviceWorker.ready;
            const [notice] = await registration.getNotifications();
            return notice ? {title: notice.title, body: notice.body, lang: notice.lang, tag: notice.tag,
                             url: notice.data && notice.data.url} : null;
        }""")
        if shown is None:
            page.wait_for_timeout(50)
    assert shown == {"title": fixed.payload["title"], "body": fixed.payload["body"], "lang": "es",
                     "tag": f"case-{reported.case_id}", "url": f"/track/{reported.token}?lang=es"}

    # Its click opens the tracking page, in Spanish, now saying "fixed".
    page.goto(world.server.url + "/")
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    (worker,) = context.service_workers
    worker.evaluate("""async () => {
        const [notice] = await self.registration.getNotifications();
        self.dispatchEvent(new NotificationEvent("notificationclick", {notification: notice}));
    }""")
    page.wait_for_url(f"**/track/{reported.token}?lang=es")
    page.locator("#case:not([hidden])").wait_for()
    assert page.locator("#case-state").inner_text() == TEXTS.t("es", "state.fixed")
    assert "Pintura retirada" in page.locator("#resolution-text").inner_text()


def test_the_api_docs_render_in_the_browser(world: World, context_factory: Any) -> None:
    page = context_factory("en-US").new_page()
    page.goto(world.server.url + "/api/docs")
    page.wait_for_selector("text=Fieldwork", timeout=15000)


def test_the_service_worker_keeps_to_the_resident_pages(world: World, context_factory: Any) -> None:
    page = context_factory("en-US").new_page()
    page.goto(world.server.url + "/")
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    again = page.goto(world.server.url + "/")
    assert again is not None and again.from_service_worker  # ours: served through the worker
    for path in ("/api/docs", "/open311/v2/services.json", "/healthz", "/crew/", "/dispatch/", "/sync-test.html"):
        response = page.goto(world.server.url + path)
        assert response is not None and not response.from_service_worker, path
    # Offline, the resident pages still open from the cache.
    page.goto(world.server.url + "/")
    page.context.set_offline(True)
    try:
        page.reload()
        page.locator("#report-form").wait_for()
        assert page.evaluate("document.documentElement.lang") == "en"
    finally:
        page.context.set_offline(False)


def test_a_replaced_subscription_moves_to_the_new_endpoint(
    world: World, reported: Reported, context_factory: Any
) -> None:
    """`pushsubscriptionchange`: the worker subscribes again and the case follows the new
    endpoint. Chromium never fires the event itself, so the test dispatches it in the worker
    (with neither subscription on it, the hardest case: the worker must remember the old one)."""
    before, after = world.push.subscriber(), world.push.subscriber()
    context = context_factory("en-US")
    page = notify_me(world, reported, context, before, "en")
    page.wait_for_function("navigator.serviceWorker.controller !== null")

    def endpoints() -> set[str]:
        with Session(world.engine) as session:
            rows = session.exec(select(PushSubscription).where(PushSubscription.case_id == reported.case_id)).all()
        return {row.endpoint for row in rows}

    assert before.endpoint in endpoints()
    (worker,) = context.service_workers
    worker.evaluate(f"""async () => {{
        const next = {json.dumps(after.subscription())};
        PushManager.prototype.subscribe = async function () {{
          return {{ endpoint: next.endpoint, toJSON() {{ return next; }} }};
        }};
        self.dispatchEvent(new ExtendableEvent("pushsubscriptionchange"));
    }}""")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and before.endpoint in endpoints():
        time.sleep(0.1)
    found = endpoints()
    assert after.endpoint in found and before.endpoint not in found, found

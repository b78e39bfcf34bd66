"""Open311 as a city's integrator meets it (issue 9), over a real server on the real LA
export: closed requests' update times, imported updates at their real times, the window,
cap and paging of servicerequestupdates, HTTP niceties (HEAD, OPTIONS, CORS), errors.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import col, func, select

from server.auth import create_user
from server.db import read_session, write_session
from server.intake.catalogue import built_in
from server.intake.geocode import parse_address, suggest_position
from server.intake.importer import import_file
from server.models import Case, WorkOrder, WorkOrderEvent
from server.open311.service import list_services
from server.settings import IntakeSettings, Settings
from tests.conftest import DATA, FreshDatabase, LiveServer, load_city_areas
from tests.intake.test_import_integrator import sliced
from tests.open311.open311_support import Seed, assert_error, json_of, seed_database, xml_of


@pytest.fixture(scope="module")
def seed(engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    return seed_database(engine, settings, Path(tmp_path_factory.mktemp("rejects")), move_and_touch=False)


ALLOWED_ORIGIN = "https://residents.city.example"


@pytest.fixture(scope="module")
def live_server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    """The real server, with one web origin allowed to call Open311 from a browser."""
    server = LiveServer(settings, env_extra={"FIELDWORK_OPEN311_CORS_ORIGINS": f"{ALLOWED_ORIGIN}/, https://x.example"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(live_server: LiveServer, seed: Seed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{live_server.url}/open311/v2", timeout=60) as client:
        yield client


def w3c(value: datetime, settings: Settings) -> str:
    return value.astimezone(settings.intake.zone).isoformat(timespec="seconds")


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


# -- update times -----------------------------------------------------------------------


def test_a_closed_request_reports_its_close_time_not_the_import_time(
    api: httpx.Client, engine: Engine, seed: Seed, settings: Settings
) -> None:
    # (the demo's time shift moves close times past "now" to the import's moment: skip those)
    early = seed.imported_at - timedelta(minutes=1)
    with read_session(engine) as session:
        rows = session.exec(
            select(Case.id, WorkOrder.closed_at).join(WorkOrder, col(WorkOrder.id) == col(Case.work_order_id))
            .where(col(WorkOrder.is_open).is_(False), col(WorkOrder.closed_at) < early)
            .order_by(col(Case.id)).limit(20)
        ).all()
        # Closed cases never placed (no work order): their own close time, whatever it is (the
        # shift may have put it at the import's moment, which is then the time recorded).
        unlinked = session.exec(
            select(Case.id, Case.closed_at).where(col(Case.work_order_id).is_(None), col(Case.closed_at).is_not(None))
            .limit(5)
        ).all()
    assert len(rows) == 20 and unlinked
    for case_id, closed_at in [*rows, *unlinked]:
        assert closed_at is not None
        (item,) = json_of(api.get(f"/requests/{case_id}.json"))
        assert item["status"] == "closed"
        assert item["updated_datetime"] == w3c(closed_at, settings), (case_id, item["updated_datetime"])
    root = xml_of(api.get(f"/requests/{rows[0][0]}.xml"), "service_requests")
    assert root.findtext("request/updated_datetime") == w3c(rows[0][1], settings)  # type: ignore[arg-type]

    # updated_after filters by the same time: the import moment finds no closed history.
    since = seed.imported_at - timedelta(seconds=5)
    recent = json_of(api.get("/requests.json", params={"updated_after": since.isoformat(), "status": "closed"}))
    assert all(parse(r["updated_datetime"]) >= since for r in recent)
    closed_ids = {str(case_id) for case_id, _ in rows}
    assert not closed_ids & {r["service_request_id"] for r in recent}


def test_imported_updates_carry_their_real_time(
    api: httpx.Client, engine: Engine, seed: Seed, settings: Settings
) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with read_session(engine) as session:
        total = session.exec(select(func.count()).select_from(WorkOrderEvent)
                             .where(col(WorkOrderEvent.kind) == "status")).one()
        in_last_hour = session.exec(
            select(func.count()).select_from(WorkOrderEvent)
            .where(col(WorkOrderEvent.kind) == "status", col(WorkOrderEvent.occurred_at) >= hour_ago)
        ).one()
    assert total > 3000  # the export's closed requests, each closed by one imported event
    items = json_of(api.get("/servicerequestupdates.json", params={"start_date": hour_ago.isoformat()}))
    fixed = [u for u in items if u["status"] == "fixed"]
    # A poller asking for the last hour sees the requests closed in that hour, not all of them.
    # (the demo's time shift puts thousands of close times at the import's moment, so a page
    # can fill: the cap holds, and every update is of the last hour)
    assert in_last_hour < total - 2000
    assert len(fixed) == min(in_last_hour, 1000) or len(items) == 1000
    for update in items:
        assert parse(update["updated_datetime"]) >= hour_ago - timedelta(seconds=1)

    # One closed request: its "fixed" update is stamped with the export's close time.
    with read_session(engine) as session:
        case_id, closed_at = session.exec(
            select(Case.id, WorkOrder.closed_at).join(WorkOrder, col(WorkOrder.id) == col(Case.work_order_id))
            .where(col(WorkOrder.is_open).is_(False), col(WorkOrder.case_count) == 1,
                   col(WorkOrder.closed_at) < seed.imported_at - timedelta(minutes=1))
            .order_by(col(WorkOrder.closed_at).desc()).limit(1)
        ).one()
    assert closed_at is not None
    window = {"start_date": (closed_at - timedelta(minutes=1)).isoformat(),
              "end_date": (closed_at + timedelta(minutes=1)).isoformat()}
    updates = [u for u in json_of(api.get("/servicerequestupdates.json", params=window))
               if u["service_request_id"] == str(case_id)]
    assert [u["status"] for u in updates] == ["fixed"]
    assert updates[0]["updated_datetime"] == w3c(closed_at, settings)


def test_servicerequestupdates_has_a_window_a_cap_and_pages(api: httpx.Client, engine: Engine, seed: Seed) -> None:
    first = api.get("/servicerequestupdates.json")
    assert first.status_code == 200
    page1 = json_of(first)
    assert len(page1) == 1000  # capped, though the import made many more
    times = [parse(u["updated_datetime"]) for u in page1]
    assert times == sorted(times)  # oldest first
    assert min(times) >= datetime.now(UTC) - timedelta(days=90, minutes=1)  # the default window

    page2 = json_of(api.get("/servicerequestupdates.json", params={"page": "2"}))
    assert page2 and not {u["update_id"] for u in page1} & {u["update_id"] for u in page2}
    small = json_of(api.get("/servicerequestupdates.json", params={"page_size": "50", "page": "2"}))
    assert [u["update_id"] for u in small] == [u["update_id"] for u in page1[50:100]]
    root = xml_of(api.get("/servicerequestupdates.xml", params={"page_size": "10"}), "service_request_updates")
    assert [e.findtext("update_id") for e in root.findall("request_update")] == [u["update_id"] for u in page1[:10]]

    assert_error(api.get("/servicerequestupdates.json", params={"page_size": "1001"}), 400, "page_size")
    assert_error(api.get("/servicerequestupdates.json", params={
        "start_date": "2019-01-01T00:00:00Z", "end_date": "2019-06-01T00:00:00Z"}), 400, "90 days")
    # start_date alone reaches 90 days on, as in GET requests.
    old = json_of(api.get("/servicerequestupdates.json", params={"start_date": "2001-01-01T00:00:00Z"}))
    assert old == []


# -- HTTP manners ------------------------------------------------------------------------

GET_RESOURCES = ["/discovery.json", "/services.xml", "/services/graffiti-removal.json", "/requests.json",
                 "/requests.xml", "/servicerequestupdates.json"]


def test_head_answers_every_resource_as_get_would(api: httpx.Client, engine: Engine) -> None:
    with read_session(engine) as session:
        case_id, token = session.exec(select(Case.id, Case.tracking_token).limit(1)).one()
    for path in [*GET_RESOURCES, f"/requests/{case_id}.xml", f"/tokens/{token}.json"]:
        get, head = api.get(path), api.head(path)
        assert get.status_code == 200 and head.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert int(head.headers["content-length"]) == len(get.content) > 0, path
    assert api.head("/requests/999999999.json").status_code == 404
    assert api.head("/no-such-thing.json").status_code == 404


def test_options_names_get_and_post(api: httpx.Client) -> None:
    def allow(path: str) -> set[str]:
        response = api.options(path)
        assert response.status_code == 204, (path, response.status_code)
        return {m.strip() for m in response.headers["allow"].split(",")}

    for path in ("/requests.json", "/requests.xml", "/servicerequestupdates.json"):
        assert allow(path) == {"GET", "HEAD", "POST", "OPTIONS"}, path
    for path in ("/services.json", "/discovery.xml", "/requests/12.json", "/services/graffiti-removal.xml"):
        assert allow(path) == {"GET", "HEAD", "OPTIONS"}, path


def test_cors_for_allowed_origins_only(api: httpx.Client) -> None:
    ok = api.get("/services.json", headers={"Origin": ALLOWED_ORIGIN})
    assert ok.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "Origin" in ok.headers["vary"]
    error = api.get("/requests/999999999.json", headers={"Origin": ALLOWED_ORIGIN})
    assert error.status_code == 404 and error.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    other = api.get("/services.json", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers

    preflight = api.options("/requests.json", headers={
        "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    refused = api.options("/requests.json", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-methods" not in refused.headers


def test_paths_without_a_format_and_huge_pages_answer_open311_errors(api: httpx.Client) -> None:
    for path in ("/requests", "/services", "/servicerequestupdates", "/discovery", "/requests/"):
        response = api.get(path)
        assert_error(response, 404, ".json", ".xml")
        assert response.headers["content-type"].startswith("text/xml")  # the spec's own format
    assert_error(api.get("/requests", headers={"Accept": "application/json"}), 404, "requests.json")
    assert_error(api.post("/requests", data={"service_code": "x"}), 404, "format")
    for resource in ("/requests.json", "/servicerequestupdates.xml"):
        for field in ("page", "page_size"):
            assert_error(api.get(resource, params={field: "999999999999999999999"}), 400, field)


# -- service descriptions and attributes --------------------------------------------------


def test_built_in_types_are_described_and_ask_what_the_city_asks(api: httpx.Client, engine: Engine) -> None:
    services = {s["service_code"]: s for s in json_of(api.get("/services.json"))}
    assert len(services) >= 10
    for code, service in services.items():
        assert service["description"], code  # every type the LA export created has one
        assert service["keywords"], code
    assert "furniture" in services["bulky-items"]["description"]
    assert services["bulky-items"]["metadata"] is False
    light = services["single-streetlight-issue"]
    assert light["metadata"] is True and "pole" in light["keywords"]

    definition = json_of(api.get("/services/single-streetlight-issue.json"))
    by_code = {a["code"]: a for a in definition["attributes"]}
    assert by_code["POLE_NUMBER"]["datatype"] == "string" and by_code["POLE_NUMBER"]["required"] is False
    assert "Street Light Dayburning" in {v["name"] for v in by_code["PROBLEM"]["values"]}
    root = xml_of(api.get("/services/single-streetlight-issue.xml"), "service_definition")
    assert "POLE_NUMBER" in [e.findtext("code") for e in root.iter("attribute")]

    # A report answers them; a value not on the list is refused, naming the attribute.
    with read_session(engine) as session:
        lat, lon = session.exec(select(Case.lat, Case.lon).where(col(Case.lat).is_not(None)).limit(1)).one()
    form = {"api_key": "test-open311-key", "service_code": "single-streetlight-issue", "lat": str(lat),
            "long": str(lon), "attribute[POLE_NUMBER]": "E-1234", "attribute[PROBLEM]": "street_light_out"}
    created = json_of(api.post("/requests.json", data=form))
    with read_session(engine) as session:
        case = session.get(Case, int(created[0]["service_request_id"]))
    assert case is not None and case.attributes is not None
    assert case.attributes["POLE_NUMBER"] == ["E-1234"] and case.attributes["PROBLEM"] == ["street_light_out"]
    assert_error(api.post("/requests.json", data={**form, "attribute[PROBLEM]": "exploded"}), 400,
                 "attribute[PROBLEM]")


def test_built_in_types_are_described_in_nyc_and_chicago_too(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    """Every type the bundled NYC and Chicago exports name is described: Chicago's four and
    NYC's common ones by the catalogue, NYC's other ~150 from their own records (the complaint
    type and its descriptors), when the import first creates them."""
    engine = fresh_db.engine
    assert engine is not None
    load_city_areas(engine, "nyc")
    load_city_areas(engine, "chicago")
    files = sorted((DATA / "nyc/records").glob("*.gz"))
    for path in sorted((DATA / "chicago/records").glob("*.gz")):
        rows = itertools.count()
        files.append(sliced(path, tmp_path / path.name, lambda _row, rows=rows: next(rows) < 300))
    for path in files:
        summary = import_file(engine, path, settings=IntakeSettings(), rejects_dir=tmp_path / "rejects")
        assert summary.adds_up, summary.lines()
    with read_session(engine) as session:
        services = {s.service_code: s for s in list_services(session)}
    assert len(services) >= 160
    for code, service in services.items():
        assert service.description and service.keywords, code
    for code in ("street-lights-all-out", "street-light-1-out", "alley-light-out", "graffiti-removal",
                 "street-condition", "heat-hot-water"):
        assert services[code].description == built_in(code)["description"], code  # type: ignore[index]
    assert services["street-condition"].metadata is True
    plumbing = services["plumbing"]  # NYC's HPD category, described from its descriptors
    assert plumbing.description is not None and plumbing.keywords is not None
    assert plumbing.description.startswith('Reports filed under "Plumbing"') and "toilet" in plumbing.description
    assert "toilet" in plumbing.keywords.split(", ")
    noise = services["noise"]  # agency codes and the repeated "Noise:" are left out
    assert noise.description is not None and "Barking Dog" in noise.description and "(NR5)" not in noise.description


# -- tracking numbers -----------------------------------------------------------------------


def test_a_report_is_tracked_by_our_number_its_token_and_the_citys_number(
    api: httpx.Client, live_server: LiveServer, engine: Engine
) -> None:
    with read_session(engine) as session:
        lat, lon = session.exec(select(Case.lat, Case.lon).where(col(Case.lat).is_not(None)).limit(1)).one()
        city_case = session.exec(select(Case).where(col(Case.source) != "open311").order_by(col(Case.id))).first()
    assert city_case is not None and city_case.external_id.startswith("1-")  # LA's own SR number
    (created,) = json_of(api.post("/requests.json", data={
        "api_key": "test-open311-key", "service_code": "bulky-items", "lat": str(lat), "long": str(lon),
        "description": "A sofa on the sidewalk"}))
    with httpx.Client(base_url=f"{live_server.url}/api/resident", timeout=30) as resident:
        by_token = resident.get(f"/track/{created['token']}")
        assert by_token.status_code == 200, by_token.text
        assert by_token.json()["service_request_id"] == created["service_request_id"]
        assert by_token.json()["can_subscribe"] is True  # the token is the reporter's own link
        by_number = resident.get(f"/track/{created['service_request_id']}").json()
        assert by_number["service_request_id"] == created["service_request_id"] and by_number["can_subscribe"] is False
        assert by_number["token"] is None
        by_city = resident.get(f"/track/{city_case.external_id}").json()
        assert by_city["service_request_id"] == str(city_case.id)
        assert by_city["city_request_id"] == city_case.external_id
        assert resident.get("/track/1-0000000000").status_code == 404
        assert resident.get("/track/²").status_code == 404  # a digit to str.isdigit, not to int()
    assert_error(api.get("/requests/².json"), 404, "service_request_id")
    assert json_of(api.get("/requests.json", params={"service_request_id": "²"})) == []
    # Open311's own token lookup answers the same number.
    assert json_of(api.get(f"/tokens/{created['token']}.json"))[0]["service_request_id"] == created["service_request_id"]


# -- address-only reports are placed from the city's own history ------------------------------------


def test_an_address_only_report_is_placed_when_the_history_is_sure(api: httpx.Client, engine: Engine) -> None:
    with read_session(engine) as session:
        rows = session.exec(
            select(Case.address, Case.lat, Case.lon).where(
                Case.location_state == "located", col(Case.address).is_not(None), col(Case.source) == "la")
            .order_by(col(Case.id)).limit(500)
        ).all()
    address, lat, lon = next((a, la, lo) for a, la, lo in rows if a and a[:1].isdigit())
    base = {"api_key": "test-open311-key", "service_code": "bulky-items", "description": "A mattress"}
    (placed,) = json_of(api.post("/requests.json", data={**base, "address_string": address.title()}))
    (shown,) = json_of(api.get(f"/requests/{placed['service_request_id']}.json"))
    assert shown["lat"] is not None and shown["long"] is not None
    assert abs(shown["lat"] - lat) < 0.0005 and abs(shown["long"] - lon) < 0.0005  # tens of metres
    with read_session(engine) as session:
        case = session.get(Case, int(placed["service_request_id"]))
    assert case is not None and case.location_state == "located" and case.work_order_id is not None
    assert case.attributes is not None and case.attributes["open311:geocoded"][0].startswith("exact")

    (unknown,) = json_of(api.post("/requests.json", data={**base, "address_string": "12 Nowhere Lane, 90000"}))
    with read_session(engine) as session:
        waiting = session.get(Case, int(unknown["service_request_id"]))
    assert waiting is not None and waiting.location_state == "unlocated"  # left for a dispatcher


def _an_address_the_geocoder_guesses(engine: Engine) -> tuple[str, str]:
    """A house number never reported, on a street whose neighbours were: (address, method)."""
    with read_session(engine) as session:
        rows = session.exec(
            select(Case.address).where(
                Case.location_state == "located", col(Case.address).is_not(None), col(Case.source) == "la")
            .order_by(col(Case.id)).limit(3000)
        ).all()
        for address in rows:
            parsed = parse_address(address)
            if parsed is None:
                continue
            for step in (2, -2, 4, -4, 6):
                candidate = f"{parsed.number + step} {parsed.street}"
                suggestion = suggest_position(session, candidate)
                if suggestion is not None and suggestion.places and suggestion.method != "exact":
                    return candidate, suggestion.method
    raise AssertionError("no address on the LA export that the geocoder places by a guess")


def test_the_geocoder_does_not_learn_from_its_own_guesses(
    api: httpx.Client, engine: Engine, live_server: LiveServer
) -> None:
    address, method = _an_address_the_geocoder_guesses(engine)
    base = {"api_key": "test-open311-key", "service_code": "bulky-items", "description": "A mattress",
            "address_string": address}
    notes = []
    for _ in range(2):
        (placed,) = json_of(api.post("/requests.json", data=base))
        with read_session(engine) as session:
            case = session.get(Case, int(placed["service_request_id"]))
        assert case is not None and case.location_state == "located" and case.attributes is not None
        notes.append(case.attributes["open311:geocoded"])
    # The second report of the same address is as unsure as the first: the first one's
    # guessed point is not "an address located before".
    assert notes[0] == notes[1] and notes[0][0].startswith(method), notes

    # A dispatcher sees that the point is a guess, and how sure (the work-order detail).
    with write_session(engine) as session:
        create_user(session, username="geo.dispatcher", password="right-password-1", role="dispatcher")
    signed = httpx.post(f"{live_server.url}/api/auth/sign-in",
                        json={"username": "geo.dispatcher", "password": "right-password-1"}, timeout=30)
    assert signed.status_code == 200, signed.text
    headers = {"Authorization": f"Bearer {signed.json()['token']}"}
    assert case.work_order_id is not None
    for path in (f"/api/workorders/{case.work_order_id}", f"/api/dispatch/workorders/{case.work_order_id}"):
        detail = httpx.get(f"{live_server.url}{path}", headers=headers, timeout=30)
        assert detail.status_code == 200, detail.text
        by_id = {c["id"]: c for c in detail.json()["cases"]}
        guessed_method, confidence = notes[0][0].split(", confidence ")
        assert by_id[case.id]["geocoded"] == {"method": guessed_method, "confidence": float(confidence)}
        assert 0.5 <= by_id[case.id]["geocoded"]["confidence"] < 0.85
    with read_session(engine) as session:
        imported = session.exec(select(Case).where(col(Case.source) == "la", col(Case.work_order_id).is_not(None))
                                .order_by(col(Case.id))).first()
    assert imported is not None
    detail = httpx.get(f"{live_server.url}/api/workorders/{imported.work_order_id}", headers=headers, timeout=30)
    assert all(c["geocoded"] is None for c in detail.json()["cases"])  # the city's own point


# -- media: a multipart photo, or a media_url ----------------------------------------------------------


def jpeg_with_gps() -> bytes:
    """A phone's photo: a JPEG whose EXIF carries a GPS position and the camera's serial number."""
    from PIL import Image

    image = Image.new("RGB", (64, 48), (200, 60, 40))
    exif = Image.Exif()
    exif[0xA431] = "SERIAL-12345"  # BodySerialNumber
    exif[0x8825] = {1: "N", 2: (34.0, 3.0, 7.5), 3: "W", 4: (118.0, 14.0, 37.2)}  # GPSInfo
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    data = out.getvalue()
    assert b"SERIAL-12345" in data
    return data


def test_a_multipart_report_with_a_photo_is_kept_as_its_media_url(
    api: httpx.Client, engine: Engine, live_server: LiveServer
) -> None:
    from PIL import Image

    with read_session(engine) as session:
        lat, lon = session.exec(select(Case.lat, Case.lon).where(col(Case.lat).is_not(None)).limit(1)).one()
    fields = {"api_key": "test-open311-key", "service_code": "graffiti-removal", "lat": str(lat), "long": str(lon),
              "description": "Tags on the wall", "attribute[SURFACE]": "wall"}
    photo = jpeg_with_gps()
    response = api.post("/requests.json", data=fields, files={"media": ("IMG_0001.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    (created,) = json_of(response)
    (shown,) = json_of(api.get(f"/requests/{created['service_request_id']}.json"))
    assert shown["media_url"] and shown["media_url"].startswith(f"{live_server.url}/api/resident/photos/")
    root = xml_of(api.get(f"/requests/{created['service_request_id']}.xml"), "service_requests")
    assert root.findtext("request/media_url") == shown["media_url"]

    served = httpx.get(shown["media_url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert b"SERIAL-12345" not in served.content  # cleaned like a crew's photo: no EXIF
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.size == (64, 48) and not image.getexif()

    # A file under another name is refused, naming it; XML answers too.
    plain = api.post("/requests.xml", data=fields, files={"unused": ("notes.txt", b"abc", "text/plain")})
    assert_error(plain, 400, "unused")
    ok = api.post("/requests.xml", data=fields, files={"media": ("a.png", png(), "image/png")})
    assert xml_of(ok, "service_requests").findtext("request/service_request_id")


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(out, "PNG")
    return out.getvalue()


def test_a_bad_photo_is_refused_naming_media_and_nothing_is_written(api: httpx.Client, engine: Engine) -> None:
    with read_session(engine) as session:
        lat, lon = session.exec(select(Case.lat, Case.lon).where(col(Case.lat).is_not(None)).limit(1)).one()
        before = session.exec(select(func.count()).select_from(Case)).one()
    fields = {"api_key": "test-open311-key", "service_code": "bulky-items", "lat": str(lat), "long": str(lon)}
    for name, body, kind in (("x.jpg", b"\xff\xd8\xff<html>not a photo</html>", "image/jpeg"),
                             ("x.txt", b"hello", "text/plain")):
        assert_error(api.post("/requests.json", data=fields, files={"media": (name, body, kind)}), 400, "media")
    # A body that says multipart but is not: the spec's 400, saying no field could be read.
    broken = api.post("/requests.json", content=b"0=false",
                      headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error(broken, 400, "api_key")
    with read_session(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == before


def test_an_oversized_upload_is_refused_naming_media(api: httpx.Client, engine: Engine) -> None:
    with read_session(engine) as session:
        lat, lon = session.exec(select(Case.lat, Case.lon).where(col(Case.lat).is_not(None)).limit(1)).one()
        before = session.exec(select(func.count()).select_from(Case)).one()
    fields = {"api_key": "test-open311-key", "service_code": "bulky-items", "lat": str(lat), "long": str(lon)}
    big = b"\xff\xd8\xff" + b"\0" * (7 * 1024 * 1024)  # over the 6 MB a multipart POST may carry
    for fmt in ("json", "xml"):
        response = api.post(f"/requests.{fmt}", data=fields, files={"media": ("big.jpg", big, "image/jpeg")})
        assert_error(response, 413, "media")
    # Within the request's limit but over the photo's own 5 MB: a 400 naming media too.
    assert_error(api.post("/requests.json", data=fields,
                          files={"media": ("x.jpg", b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024 + 10), "image/jpeg")}),
                 400, "media")
    with read_session(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == before


def test_media_url_is_accepted_as_the_spec_says(api: httpx.Client, engine: Engine) -> None:
    with read_session(engine) as session:
        lat, lon = session.exec(select(Case.lat, Case.lon).where(col(Case.lat).is_not(None)).limit(1)).one()
    url = "https://photos.city.example/311/abc.jpg"
    for body in ({"data": {"media_url": url}}, {"data": {"media_url": url}, "files": {"none": None}}):
        form = {"api_key": "test-open311-key", "service_code": "bulky-items", "lat": str(lat), "long": str(lon),
                **body["data"]}
        response = api.post("/requests.json", data=form)
        (created,) = json_of(response)
        (shown,) = json_of(api.get(f"/requests/{created['service_request_id']}.json"))
        assert shown["media_url"] == url
    assert_error(api.post("/requests.json", data={**form, "media_url": "ftp://x"}), 400, "media_url")

"""Open311 GeoReport v2 writes through a real server: POST requests (api_key, location,
attributes, limits), tokens, mySociety's servicerequestupdates, and the rule that reporter
contact details never appear in any GET output.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func
from sqlmodel import col, select

from server.db import read_session, write_session
from server.models import Case, CaseContact, WorkOrder, WorkOrderEvent, utcnow
from server.settings import Settings
from server.status import STATUSES, Status
from tests.conftest import TEST_API_KEY
from tests.open311.open311_support import (
    DEAD_ANIMAL,
    GRAFFITI,
    RETIRED,
    Seed,
    assert_error,
    json_of,
    seed_database,
    validate,
    xml_of,
)

# Where a POST in these tests lands: real report locations of another type, one per call,
# so that no two tests share a spot by accident.
_spots = count()


@pytest.fixture(scope="module")
def seed(engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    return seed_database(engine, settings, Path(tmp_path_factory.mktemp("rejects")), move_and_touch=False)


@pytest.fixture(scope="module")
def spots(engine: Engine, seed: Seed) -> list[tuple[float, float]]:
    with read_session(engine) as session:
        rows = session.exec(
            select(Case.lat, Case.lon).where(Case.service_code == "bulky-items", Case.location_state == "located")
            .order_by(col(Case.id)).limit(200)
        ).all()
    return [(lat, lon) for lat, lon in rows if lat is not None and lon is not None]


@pytest.fixture(scope="module")
def api(live_server: Any, seed: Seed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{live_server.url}/open311/v2", timeout=30) as client:
        yield client


def spot(spots: list[tuple[float, float]]) -> dict[str, str]:
    lat, lon = spots[next(_spots) * 7 % len(spots)]
    return {"lat": repr(lat), "long": repr(lon)}


def graffiti(**extra: Any) -> dict[str, Any]:
    return {"api_key": TEST_API_KEY, "service_code": GRAFFITI, "attribute[SURFACE]": "wall", **extra}


def row_counts(engine: Engine) -> tuple[int, ...]:
    with read_session(engine) as session:
        return tuple(
            session.exec(select(func.count()).select_from(model)).one()
            for model in (Case, CaseContact, WorkOrder, WorkOrderEvent)
        )


def post_ok(api: httpx.Client, form: dict[str, Any], fmt: str = "json", **kwargs: Any) -> dict[str, Any]:
    response = api.post(f"/requests.{fmt}", data=form, **kwargs)
    assert response.status_code == 200, response.text
    (created,) = json_of(response)
    assert list(created) == ["service_request_id", "token", "service_notice", "account_id"]
    # The Swagger types account_id as a string; the spec's own example sends null when unknown.
    validate([{k: v for k, v in created.items() if v is not None}], "swagger.json#/definitions/RequestResponse[]")
    return created  # type: ignore[no-any-return]


def case_of(engine: Engine, service_request_id: str) -> Case:
    with read_session(engine) as session:
        case = session.get(Case, int(service_request_id))
    assert case is not None
    return case


# -- POST requests ----------------------------------------------------------------------


def test_post_with_lat_long_becomes_a_work_order(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]
) -> None:
    form = graffiti(**spot(spots), description="Tags on the underpass wall", media_url="https://example.org/p.jpg",
                    account_id="acct-77", **{"attribute[COLOURS][]": ["black", "silver"], "attribute[AREA_M2]": "2.5"})
    created = post_ok(api, form)
    assert created["service_request_id"].isdigit() and created["token"]
    assert created["account_id"] == "acct-77" and created["service_notice"]

    case = case_of(engine, created["service_request_id"])
    assert case.source == "open311" and len(case.external_id) == 32
    assert case.location_state == "located" and case.work_order_id is not None
    assert case.tracking_token == created["token"]
    assert case.attributes == {"SURFACE": ["wall"], "COLOURS": ["black", "silver"], "AREA_M2": ["2.5"]}
    assert case.media_url == "https://example.org/p.jpg"
    with read_session(engine) as session:
        order = session.get(WorkOrder, case.work_order_id)
        assert order is not None and order.is_open and order.service_code == GRAFFITI
        events = session.exec(select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == order.id)).all()
        assert {e.channel for e in events} >= {"open311"}

    (shown,) = json_of(api.get(f"/requests/{created['service_request_id']}.json"))
    assert shown["status"] == "open" and shown["service_code"] == GRAFFITI
    assert (shown["lat"], shown["long"]) == (float(form["lat"]), float(form["long"]))
    assert shown["description"] == "Tags on the underpass wall"
    assert shown["media_url"] == "https://example.org/p.jpg"
    assert shown["expected_datetime"] is not None


def test_second_report_at_the_same_spot_merges(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]
) -> None:
    where = spot(spots)
    first = post_ok(api, graffiti(**where, description="first"))
    second = post_ok(api, graffiti(**where, description="second"))
    assert first["service_request_id"] != second["service_request_id"]
    assert first["token"] != second["token"]
    assert "earlier report" in (second["service_notice"] or "")
    one, two = case_of(engine, first["service_request_id"]), case_of(engine, second["service_request_id"])
    assert one.work_order_id is not None and one.work_order_id == two.work_order_id
    with read_session(engine) as session:
        order = session.get(WorkOrder, one.work_order_id)
        assert order is not None and order.case_count >= 2


def test_address_only_lands_in_the_unlocated_queue(api: httpx.Client, engine: Engine) -> None:
    created = post_ok(api, graffiti(address_string="1200 W 7th St, Los Angeles, CA 90017"))
    case = case_of(engine, created["service_request_id"])
    assert case.location_state == "unlocated" and case.work_order_id is None
    assert "locate" in (created["service_notice"] or "")
    (shown,) = json_of(api.get(f"/requests/{created['service_request_id']}.json"))
    assert shown["status"] == "open" and shown["lat"] is None and shown["long"] is None
    assert shown["address"] == "1200 W 7th St, Los Angeles, CA 90017" and shown["zipcode"] == "90017"

    by_id = post_ok(api, graffiti(address_id="LA-PARCEL-5154-012-034"))
    (shown,) = json_of(api.get(f"/requests/{by_id['service_request_id']}.json"))
    assert shown["address_id"] == "LA-PARCEL-5154-012-034" and shown["address"] is None


def test_post_answers_in_xml(api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]) -> None:
    response = api.post("/requests.xml", data=graffiti(**spot(spots)))
    assert response.status_code == 200
    root = xml_of(response, "service_requests")
    (request,) = root.findall("request")
    assert [child.tag for child in request] == ["service_request_id", "token", "service_notice", "account_id"]
    case = case_of(engine, request.findtext("service_request_id") or "0")
    assert case.tracking_token == request.findtext("token")
    assert request.findtext("account_id") == ""


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_api_key_is_required_in_form_or_query(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]], fmt: str
) -> None:
    before = row_counts(engine)
    form = graffiti(**spot(spots))
    del form["api_key"]
    assert_error(api.post(f"/requests.{fmt}", data=form), 403, "api_key")
    assert_error(api.post(f"/requests.{fmt}", data={**form, "api_key": "wrong-key"}), 403, "api_key")
    assert_error(api.post(f"/requests.{fmt}", data={**form, "api_key": ""}), 403, "api_key")
    assert_error(api.post(f"/requests.{fmt}", params={"api_key": "wrong-key"}, data=form), 403)
    assert row_counts(engine) == before

    assert api.post(f"/requests.{fmt}", params={"api_key": TEST_API_KEY}, data=form).status_code == 200
    assert api.post(f"/requests.{fmt}", data={**form, "api_key": TEST_API_KEY}).status_code == 200


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_service_code_and_jurisdiction(api: httpx.Client, spots: list[tuple[float, float]], fmt: str) -> None:
    where = spot(spots)
    assert_error(api.post(f"/requests.{fmt}", data=graffiti(**where, service_code="no-such-type")), 404,
                 "service_code", "no-such-type")
    assert_error(api.post(f"/requests.{fmt}", data=graffiti(**where, service_code=RETIRED)), 404, "service_code")
    assert_error(api.post(f"/requests.{fmt}", data=graffiti(**where, service_code="")), 400, "service_code")
    assert_error(api.post(f"/requests.{fmt}", data=graffiti(**where, jurisdiction_id="elsewhere.gov")), 404,
                 "jurisdiction_id")
    assert api.post(f"/requests.{fmt}", data=graffiti(**where, jurisdiction_id="test.fieldwork")).status_code == 200


def test_location_is_required_and_checked(api: httpx.Client, engine: Engine) -> None:
    before = row_counts(engine)
    assert_error(api.post("/requests.json", data=graffiti()), 400, "location", "lat", "address_string", "address_id")
    assert_error(api.post("/requests.xml", data=graffiti(lat="", long="", address_string="", address_id="")),
                 400, "location")
    assert_error(api.post("/requests.json", data=graffiti(lat="34.05")), 400, "long")
    assert_error(api.post("/requests.json", data=graffiti(long="-118.25")), 400, "lat")
    assert_error(api.post("/requests.json", data=graffiti(lat="north", long="-118.25")), 400, "lat")
    assert_error(api.post("/requests.json", data=graffiti(lat="34.05", long="-218.25")), 400, "long")
    assert_error(api.post("/requests.json", data=graffiti(lat="nan", long="-118.25")), 400, "lat")
    assert row_counts(engine) == before


def test_empty_parameters_are_treated_as_absent(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]
) -> None:
    form = graffiti(**spot(spots), email="", phone="", first_name="", last_name="", device_id="",
                    description="", media_url="", account_id="", address_string="", address_id="",
                    jurisdiction_id="", **{"attribute[COLOURS][]": "", "attribute[AREA_M2]": ""})
    created = post_ok(api, form)
    assert created["account_id"] is None
    case = case_of(engine, created["service_request_id"])
    assert case.attributes == {"SURFACE": ["wall"]} and case.media_url is None and case.address is None
    with read_session(engine) as session:
        assert session.get(CaseContact, case.id) is None  # nothing personal was sent


def test_description_too_long_writes_nothing(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]
) -> None:
    before = row_counts(engine)
    where = spot(spots)
    assert_error(api.post("/requests.json", data=graffiti(**where, description="x" * 4001, email="a@b.example")),
                 400, "description", "4000")
    assert_error(api.post("/requests.xml", data=graffiti(**where, phone="5" * 41)), 400, "phone")
    assert_error(api.post("/requests.json", data=graffiti(**where, email="not-an-address")), 400, "email")
    assert_error(api.post("/requests.json", data=graffiti(**where, media_url="javascript:alert(1)")), 400, "media_url")
    assert row_counts(engine) == before
    assert post_ok(api, graffiti(**where, description="y" * 4000))


def test_attributes_follow_the_service_definition(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]
) -> None:
    before = row_counts(engine)
    where = spot(spots)
    no_surface = {k: v for k, v in graffiti(**where).items() if k != "attribute[SURFACE]"}
    assert_error(api.post("/requests.json", data=no_surface), 400, "attribute[SURFACE]", "required")
    assert_error(api.post("/requests.xml", data=graffiti(**where, **{"attribute[SURFACE]": "roof"})), 400,
                 "attribute[SURFACE]", "roof")
    assert_error(api.post("/requests.json", data=graffiti(**where, **{"attribute[SURFACE][]": ["wall", "fence"]})),
                 400, "attribute[SURFACE]")
    assert_error(api.post("/requests.json", data=graffiti(**where, **{"attribute[AREA_M2]": "big"})), 400,
                 "attribute[AREA_M2]", "number")
    assert_error(api.post("/requests.json", data=graffiti(**where, **{"attribute[COLOURS][]": ["red", "gold"]})),
                 400, "attribute[COLOURS]", "gold")
    assert_error(api.post("/requests.json", data=graffiti(**where, **{"attribute[WORDING]": "two\nlines"})), 400,
                 "attribute[WORDING]")
    errors = assert_error(api.post("/requests.json", data={
        "api_key": TEST_API_KEY, "service_code": DEAD_ANIMAL, **where, "attribute[SEEN_AT]": "last tuesday"}), 400)
    assert any("attribute[SEEN_AT]" in e for e in errors) and any("attribute[ANIMAL]" in e for e in errors)
    assert row_counts(engine) == before

    created = post_ok(api, graffiti(**where, **{
        "attribute[COLOURS][]": ["red", "black", "red"], "attribute[WORDING]": "none",
        "attribute[UNKNOWN]": "ignored", "attribute[ADVICE]": "not asked"}))
    assert case_of(engine, created["service_request_id"]).attributes == {
        "SURFACE": ["wall"], "COLOURS": ["red", "black"], "WORDING": ["none"]}
    single = post_ok(api, graffiti(**where, **{"attribute[COLOURS]": "silver", "attribute[SURFACE]": "fence"}))
    assert case_of(engine, single["service_request_id"]).attributes == {"SURFACE": ["fence"], "COLOURS": ["silver"]}
    animal = post_ok(api, {"api_key": TEST_API_KEY, "service_code": DEAD_ANIMAL, **spot(spots),
                           "attribute[SEEN_AT]": "2026-11-25T07:30:00-08:00", "attribute[ANIMAL]": "raccoon"})
    assert case_of(engine, animal["service_request_id"]).attributes == {
        "SEEN_AT": ["2026-11-25T07:30:00-08:00"], "ANIMAL": ["raccoon"]}


def test_post_must_be_form_encoded_and_bounded(api: httpx.Client, spots: list[tuple[float, float]]) -> None:
    assert_error(api.post("/requests.json", json=graffiti(**spot(spots))), 400, "Content-Type")
    # Litestar's own refusal of a large body is in the spec's format too.
    assert_error(api.post("/requests.xml", data=graffiti(**spot(spots), description="z" * 70_000)), 413)


def test_control_characters_are_dropped(api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]) -> None:
    created = post_ok(api, graffiti(**spot(spots), description="line one\nline\x00 two\x0b",
                                    **{"attribute[WORDING]": "bad\x07word"}))
    case = case_of(engine, created["service_request_id"])
    assert case.description == "line one\nline two"
    assert case.attributes == {"SURFACE": ["wall"], "WORDING": ["badword"]}


# -- tokens -----------------------------------------------------------------------------


def test_tokens_resolve_to_the_request(api: httpx.Client, spots: list[tuple[float, float]]) -> None:
    created = post_ok(api, graffiti(**spot(spots)))
    token = created["token"]
    body = json_of(api.get(f"/tokens/{token}.json"))
    validate(body, "swagger.json#/definitions/TokenResponse[]")
    assert body == [{"service_request_id": created["service_request_id"], "token": token}]
    root = xml_of(api.get(f"/tokens/{token}.xml"), "service_requests")
    (request,) = root.findall("request")
    assert request.findtext("service_request_id") == created["service_request_id"]
    assert request.findtext("token") == token
    assert_error(api.get("/tokens/no-such-token.json"), 404, "token")
    assert_error(api.get("/tokens/no-such-token.xml"), 404, "token")


# -- mySociety servicerequestupdates ----------------------------------------------------


def change_status(engine: Engine, order_id: int, target: Status, resolution: str | None = None) -> None:
    """A dispatcher's or crew's status change, as the work-order code records it."""
    with write_session(engine) as session:
        order = session.get(WorkOrder, order_id)
        assert order is not None
        now = utcnow()
        previous = order.status
        order.status = target.value
        order.is_open = STATUSES[target].kind == "open"
        order.version += 1
        order.updated_at = now
        if not order.is_open:
            order.closed_at = now
            order.resolution = resolution
        session.add(order)
        session.add(WorkOrderEvent(
            uid=uuid.uuid4().hex, work_order_id=order_id, version=order.version, kind="status",
            from_status=previous, to_status=target.value, data={"resolution": resolution} if resolution else None,
            channel="api", actor="dispatcher:test", occurred_at=now, recorded_at=now,
        ))


def updates_for(api: httpx.Client, since: datetime, request_id: str, fmt: str = "json") -> list[dict[str, Any]]:
    """Every page of the window (the seed's import may have put thousands of updates in it)."""
    window = {"start_date": since.isoformat(), "end_date": (utcnow() + timedelta(seconds=5)).isoformat()}
    found: list[dict[str, Any]] = []
    for page in range(1, 100):
        params = {**window, "page": str(page)}
        if fmt == "xml":
            root = xml_of(api.get("/servicerequestupdates.xml", params=params), "service_request_updates")
            items = [{child.tag: child.text or "" for child in update} for update in root.findall("request_update")]
        else:
            items = json_of(api.get("/servicerequestupdates.json", params=params))
        found.extend(u for u in items if u["service_request_id"] == request_id)
        if len(items) < 1000:
            return found
    raise AssertionError("more than 99 pages of updates")


def test_status_changes_become_mysociety_updates(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]
) -> None:
    since = utcnow() - timedelta(seconds=2)
    where = spot(spots)
    first = post_ok(api, graffiti(**where))
    second = post_ok(api, graffiti(**where))  # joins the first one's work order
    order_id = case_of(engine, first["service_request_id"]).work_order_id
    assert order_id is not None and case_of(engine, second["service_request_id"]).work_order_id == order_id

    with read_session(engine) as session:
        order = session.get(WorkOrder, order_id)
    assert order is not None
    if order.status == Status.NEW:
        change_status(engine, order_id, Status.ASSIGNED)
    change_status(engine, order_id, Status.COMPLETED, resolution="Painted over, 2 m2")

    updates = updates_for(api, since, first["service_request_id"])
    assert set(updates[0]) == {"update_id", "service_request_id", "status", "description", "updated_datetime",
                               "media_url", "external_status_code"}
    statuses = [(u["status"], u["external_status_code"]) for u in updates]
    assert statuses[0] in {("open", "new"), ("action_scheduled", "assigned")}  # the report received
    assert ("action_scheduled", "assigned") in statuses
    assert statuses[-1] == ("fixed", "completed")
    assert "Painted over, 2 m2" in updates[-1]["description"]
    assert len({u["update_id"] for u in updates}) == len(updates)

    merged = updates_for(api, since, second["service_request_id"])
    assert [u["status"] for u in merged][-1] == "fixed"
    assert "earlier report" in merged[0]["description"]

    xml_updates = updates_for(api, since, first["service_request_id"], fmt="xml")
    assert [(u["status"], u["external_status_code"]) for u in xml_updates] == statuses
    assert xml_updates[-1]["updated_datetime"] == updates[-1]["updated_datetime"]

    (shown,) = json_of(api.get(f"/requests/{first['service_request_id']}.json"))
    assert shown["status"] == "closed" and shown["status_notes"] == "Painted over, 2 m2"
    assert shown["expected_datetime"] is None


def test_cannot_complete_and_cancel_map_to_extended_statuses(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]]
) -> None:
    since = utcnow() - timedelta(seconds=2)
    results = {}
    for target in (Status.CANNOT_COMPLETE, Status.CANCELLED):
        created = post_ok(api, graffiti(**spot(spots)))
        order_id = case_of(engine, created["service_request_id"]).work_order_id
        assert order_id is not None
        with read_session(engine) as session:
            order = session.get(WorkOrder, order_id)
        assert order is not None
        if order.status == Status.NEW and target == Status.CANNOT_COMPLETE:  # new → cannot_complete is no transition
            change_status(engine, order_id, Status.ASSIGNED)
        change_status(engine, order_id, target, resolution="see notes")
        results[target] = updates_for(api, since, created["service_request_id"])[-1]
    assert results[Status.CANNOT_COMPLETE]["status"] == STATUSES[Status.CANNOT_COMPLETE].extended
    assert results[Status.CANCELLED]["status"] == STATUSES[Status.CANCELLED].extended == "no_further_action"


def test_updates_window_and_errors(api: httpx.Client) -> None:
    future = (utcnow() + timedelta(days=1)).isoformat()
    assert json_of(api.get("/servicerequestupdates.json", params={"start_date": future})) == []
    assert_error(api.get("/servicerequestupdates.json", params={"start_date": "soon"}), 400, "start_date")
    assert_error(api.get("/servicerequestupdates.xml", params={
        "start_date": "2020-02-01T00:00:00Z", "end_date": "2020-01-01"}), 400, "end_date")
    assert_error(api.get("/servicerequestupdates.xml", params={"api_key": "wrong"}), 403, "api_key")
    ok = api.get("/servicerequestupdates.json", params={"api_key": TEST_API_KEY, "page_size": "5"})
    assert ok.status_code == 200 and len(ok.json()) <= 5


# -- personal data ----------------------------------------------------------------------


def test_no_contact_detail_appears_in_any_get_output(
    api: httpx.Client, engine: Engine, spots: list[tuple[float, float]], seed: Seed
) -> None:
    marker = uuid.uuid4().hex[:8]
    contact = {
        "first_name": f"Philippa{marker}",
        "last_name": f"Quackenbush{marker}",
        "email": f"philippa.{marker}@resident.example",
        "phone": f"+1 213 555 {marker[:4]}",
        "device_id": f"device-{marker}",
    }
    since = utcnow() - timedelta(seconds=2)
    located = post_ok(api, graffiti(**spot(spots), description="Fresh tags", **contact))
    unlocated = post_ok(api, graffiti(address_string="Near the library", **contact))
    with read_session(engine) as session:
        stored = session.get(CaseContact, int(located["service_request_id"]))
    assert stored is not None and stored.email == contact["email"]  # kept, apart from the case
    order_id = case_of(engine, located["service_request_id"]).work_order_id
    assert order_id is not None
    change_status(engine, order_id, Status.CANCELLED, resolution="duplicate of a city job")

    ids = f"{located['service_request_id']},{unlocated['service_request_id']}"
    window = {"start_date": since.isoformat(), "end_date": (utcnow() + timedelta(minutes=1)).isoformat()}
    bodies: list[str] = []
    for fmt in ("json", "xml"):
        for path, params in (
            (f"/requests.{fmt}", {}),
            (f"/requests.{fmt}", {"service_request_id": ids}),
            (f"/requests.{fmt}", {"service_code": GRAFFITI, "status": "open"}),
            (f"/requests.{fmt}", window),
            (f"/requests/{located['service_request_id']}.{fmt}", {}),
            (f"/requests/{unlocated['service_request_id']}.{fmt}", {}),
            (f"/tokens/{located['token']}.{fmt}", {}),
            (f"/servicerequestupdates.{fmt}", window),
            (f"/services.{fmt}", {}),
            (f"/services/{GRAFFITI}.{fmt}", {}),
            (f"/discovery.{fmt}", {}),
        ):
            response = api.get(path, params=params)
            assert response.status_code == 200, (path, response.text[:300])
            bodies.append(response.text)
    everything = "\n".join(bodies)
    assert located["service_request_id"] in everything and unlocated["service_request_id"] in everything
    for value in (*contact.values(), marker):
        assert value not in everything, value

"""Open311 GeoReport v2 reads through a real server: discovery, services, service
definitions, GET requests with every filter, GET requests/{id}, errors and formats.

Each response is checked in JSON (against the public GeoReport v2 JSON Schemas) and in XML
(parsed with ElementTree); expected rows come from the database itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from server.db import read_session
from server.models import Case, ServiceType, WorkOrder
from server.residents.expected import CloseTimes
from server.settings import Settings
from tests.open311.open311_support import (
    DEAD_ANIMAL,
    GRAFFITI,
    GRAFFITI_ATTRIBUTES,
    RETIRED,
    W3C_WITH_OFFSET,
    Seed,
    assert_error,
    ids,
    json_of,
    seed_database,
    validate,
    xml_of,
)

REQUEST_FIELDS = [
    "service_request_id", "status", "status_notes", "service_name", "service_code", "description",
    "agency_responsible", "service_notice", "requested_datetime", "updated_datetime", "expected_datetime",
    "address", "address_id", "zipcode", "lat", "long", "media_url",
]


@pytest.fixture(scope="module")
def seed(engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    return seed_database(engine, settings, Path(tmp_path_factory.mktemp("rejects")))


@pytest.fixture(scope="module")
def api(live_server: Any, seed: Seed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{live_server.url}/open311/v2", timeout=30) as client:
        yield client


def w3c(value: datetime | None, settings: Settings) -> str | None:
    return value.astimezone(settings.intake.zone).isoformat(timespec="seconds") if value else None


def db_ids(engine: Engine, *where: Any, limit: int = 1000) -> list[str]:
    """Case ids in the API's order (newest requested first, then highest id)."""
    with read_session(engine) as session:
        rows = session.exec(
            select(Case.id).where(*where)
            .order_by(col(Case.requested_at).desc(), col(Case.id).desc()).limit(limit)
        ).all()
    return [str(i) for i in rows]


def recent() -> Any:
    return col(Case.requested_at) >= datetime.now(UTC) - timedelta(days=90)


# -- discovery and services -------------------------------------------------------------


def test_discovery_names_our_endpoint_and_formats(api: httpx.Client, live_server: Any) -> None:
    body = json_of(api.get("/discovery.json"))
    assert set(body) == {"changeset", "contact", "key_service", "endpoints"}
    (endpoint,) = body["endpoints"]
    assert endpoint["url"] == f"{live_server.url}/open311/v2"
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["type"] == "production"
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}

    root = xml_of(api.get("/discovery.xml"), "discovery")
    assert root.findtext("changeset") == body["changeset"]
    xml_endpoint = root.find("endpoints/endpoint")
    assert xml_endpoint is not None
    assert xml_endpoint.findtext("url") == endpoint["url"]
    assert [f.text for f in xml_endpoint.findall("formats/format")] == endpoint["formats"]


def test_services_list_active_types_with_metadata(api: httpx.Client, engine: Engine) -> None:
    services = json_of(api.get("/services.json"))
    validate(services, "services.json")
    with read_session(engine) as session:
        active = set(session.exec(select(ServiceType.code).where(col(ServiceType.active).is_(True))).all())
    by_code = {s["service_code"]: s for s in services}
    assert set(by_code) == active and RETIRED not in by_code
    assert all(s["type"] == "realtime" for s in services)
    assert by_code[GRAFFITI]["metadata"] is True and by_code[DEAD_ANIMAL]["metadata"] is True
    assert by_code["bulky-items"]["metadata"] is False
    assert by_code[GRAFFITI]["keywords"] == "test, open311"
    assert by_code[GRAFFITI]["group"] == "Graffiti"

    root = xml_of(api.get("/services.xml"), "services")
    xml_services = root.findall("service")
    assert [s.findtext("service_code") for s in xml_services] == [s["service_code"] for s in services]
    graffiti = next(s for s in xml_services if s.findtext("service_code") == GRAFFITI)
    assert graffiti.findtext("metadata") == "true"
    assert graffiti.findtext("service_name") == by_code[GRAFFITI]["service_name"]


def test_service_definition_in_both_formats(api: httpx.Client) -> None:
    definition = json_of(api.get(f"/services/{GRAFFITI}.json"))
    validate(definition, "service-definition.json")
    assert definition["service_code"] == GRAFFITI
    attributes = definition["attributes"]
    assert [a["code"] for a in attributes] == [a["code"] for a in GRAFFITI_ATTRIBUTES]
    assert [a["order"] for a in attributes] == [1, 2, 3, 4, 5]
    surface = attributes[0]
    assert surface["datatype"] == "singlevaluelist" and surface["required"] is True and surface["variable"] is True
    assert surface["values"] == [{"key": "wall", "name": "Wall"}, {"key": "fence", "name": "Fence"},
                                 {"key": "sign", "name": "Traffic sign"}]
    assert "values" not in attributes[2]  # a number has no list of values
    assert attributes[2]["datatype_description"] == "a number, e.g. 2.5"
    assert attributes[4]["variable"] is False

    root = xml_of(api.get(f"/services/{GRAFFITI}.xml"), "service_definition")
    assert root.findtext("service_code") == GRAFFITI
    xml_attributes = root.findall("attributes/attribute")
    assert [a.findtext("code") for a in xml_attributes] == [a["code"] for a in attributes]
    assert [v.findtext("key") for v in xml_attributes[0].findall("values/value")] == ["wall", "fence", "sign"]
    assert xml_attributes[0].findtext("required") == "true"
    assert xml_attributes[4].findtext("variable") == "false"

    plain = json_of(api.get("/services/bulky-items.json"))
    assert plain == {"service_code": "bulky-items", "attributes": []}


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_and_retired_service_codes_are_404(api: httpx.Client, fmt: str) -> None:
    assert_error(api.get(f"/services/no-such-type.{fmt}"), 404, "service_code", "no-such-type")
    assert_error(api.get(f"/services/{RETIRED}.{fmt}"), 404, "service_code")


# -- GET requests -----------------------------------------------------------------------


def test_requests_default_is_the_last_90_days_newest_first(
    api: httpx.Client, engine: Engine, seed: Seed
) -> None:
    body = json_of(api.get("/requests.json"))
    validate(body, "requests.json")
    assert ids(body) == db_ids(engine, recent())  # the spec's first 1000 of the window
    assert len(body) == 1000
    assert all(list(item) == REQUEST_FIELDS for item in body)
    assert all(W3C_WITH_OFFSET.match(item["requested_datetime"]) for item in body)
    stamps = [datetime.fromisoformat(item["requested_datetime"]) for item in body]
    assert stamps == sorted(stamps, reverse=True)

    # The reports moved 100 days back are outside the default window, inside an explicit one.
    dead = json_of(api.get("/requests.json", params={"service_code": DEAD_ANIMAL}))
    assert ids(dead) == db_ids(engine, Case.service_code == DEAD_ANIMAL, recent())
    assert not set(ids(dead)) & {str(i) for i in seed.old_case_ids}
    old_start = (datetime.now(UTC) - timedelta(days=110)).isoformat()
    old_end = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    old = json_of(api.get("/requests.json", params={"start_date": old_start, "end_date": old_end}))
    assert sorted(ids(old)) == sorted(str(i) for i in seed.old_case_ids)


def test_requests_xml_carries_the_same_requests(api: httpx.Client) -> None:
    params = {"service_code": "dead-animal-removal,electronic-waste", "page_size": "40"}
    body = json_of(api.get("/requests.json", params=params))
    root = xml_of(api.get("/requests.xml", params=params), "service_requests")
    requests = root.findall("request")
    assert [r.findtext("service_request_id") for r in requests] == ids(body)
    for element, item in zip(requests, body, strict=True):
        assert [child.tag for child in element] == REQUEST_FIELDS
        for name in ("status", "service_code", "requested_datetime", "updated_datetime", "address", "zipcode"):
            assert (element.findtext(name) or None) == item[name], name
        if item["lat"] is not None:
            assert float(element.findtext("lat") or "nan") == item["lat"]


def test_request_fields_come_from_case_and_work_order(
    api: httpx.Client, engine: Engine, settings: Settings
) -> None:
    with read_session(engine) as session:
        open_case, open_order = session.exec(
            select(Case, WorkOrder).join(WorkOrder, col(WorkOrder.id) == col(Case.work_order_id))
            .where(col(WorkOrder.is_open).is_(True), col(Case.location_state) == "located")
            .order_by(col(Case.id))
        ).first()  # type: ignore[misc]
        closed_case, closed_order = session.exec(
            select(Case, WorkOrder).join(WorkOrder, col(WorkOrder.id) == col(Case.work_order_id))
            .where(col(WorkOrder.is_open).is_(False)).order_by(col(Case.id))
        ).first()  # type: ignore[misc]
        unlocated = session.exec(
            select(Case).where(col(Case.location_state) == "unlocated", col(Case.closed_at).is_(None))
        ).first()
        assert unlocated is not None

    (item,) = json_of(api.get(f"/requests/{open_case.id}.json"))
    validate([item], "requests.json")
    assert item["service_request_id"] == str(open_case.id)
    assert item["status"] == "open"
    assert item["service_code"] == open_case.service_code and item["service_name"] == open_case.service_name
    assert item["requested_datetime"] == w3c(open_case.requested_at, settings)
    assert item["requested_datetime"].endswith("-08:00")  # Los Angeles, winter
    # The upper end of the honest range from this city's closed work orders (its 80th
    # percentile of time-to-close), not the SLA; the same range in words in service_notice.
    with read_session(engine) as session:
        expected = CloseTimes.build(session).expect_order(open_order)
    assert expected.basis != "sla"
    assert item["expected_datetime"] == w3c(expected.high_at, settings)
    assert item["service_notice"] and "4 in 5" in item["service_notice"]
    assert item["updated_datetime"] == w3c(max(open_case.updated_at, open_order.updated_at), settings)
    assert (item["lat"], item["long"]) == (open_case.lat, open_case.lon)
    assert item["address"] == open_case.address
    assert item["zipcode"] == (open_case.address or "").rsplit(" ", 1)[-1]
    assert item["agency_responsible"] == open_case.agency

    (item,) = json_of(api.get(f"/requests/{closed_case.id}.json"))
    assert item["status"] == "closed"
    assert item["status_notes"] == closed_order.resolution
    assert item["expected_datetime"] is None

    (item,) = json_of(api.get(f"/requests/{unlocated.id}.json"))
    assert item["status"] == "open"  # the unlocated queue is open work
    assert item["lat"] is None and item["long"] is None
    assert item["address"] == unlocated.address

    root = xml_of(api.get(f"/requests/{open_case.id}.xml"), "service_requests")
    (request,) = root.findall("request")
    assert request.findtext("service_request_id") == str(open_case.id)
    assert request.findtext("expected_datetime") == w3c(expected.high_at, settings)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_request_ids_are_404(api: httpx.Client, fmt: str) -> None:
    assert_error(api.get(f"/requests/999999999.{fmt}"), 404, "service_request_id", "999999999")
    assert_error(api.get(f"/requests/not-a-number.{fmt}"), 404, "service_request_id")


def test_service_request_id_list_overrides_every_other_filter(
    api: httpx.Client, engine: Engine, seed: Seed
) -> None:
    some = db_ids(engine, Case.service_code == "bulky-items", limit=3)
    old = str(seed.old_case_ids[0])
    (one,) = json_of(api.get("/requests.json", params={"service_request_id": some[0]}))
    assert one["service_request_id"] == some[0]

    wanted = [*some, old]
    body = json_of(api.get("/requests.json", params={
        "service_request_id": ",".join(wanted) + ",,999999999,abc",
        "service_code": GRAFFITI,  # ignored
        "status": "open",  # ignored (these are closed)
        "start_date": "2001-01-01T00:00:00Z", "end_date": "2001-01-02T00:00:00Z",  # ignored
        "page_size": "1",  # ignored
    }))
    assert sorted(ids(body)) == sorted(wanted)
    assert any(item["status"] == "closed" for item in body)
    root = xml_of(api.get("/requests.xml", params={"service_request_id": " , ".join(wanted)}), "service_requests")
    assert sorted(r.findtext("service_request_id") or "" for r in root.findall("request")) == sorted(wanted)


def test_service_code_single_and_comma_list(api: httpx.Client, engine: Engine) -> None:
    single = json_of(api.get("/requests.json", params={"service_code": "electronic-waste"}))
    assert ids(single) == db_ids(engine, Case.service_code == "electronic-waste", recent())
    assert {item["service_code"] for item in single} == {"electronic-waste"}

    codes = ["electronic-waste", DEAD_ANIMAL, "other"]
    listed = json_of(api.get("/requests.json", params={"service_code": ",".join(codes)}))
    assert ids(listed) == db_ids(engine, col(Case.service_code).in_(codes), recent())
    assert {item["service_code"] for item in listed} == set(codes)
    repeated = json_of(api.get("/requests.json", params=[("service_code", c) for c in codes]))
    assert ids(repeated) == ids(listed)
    assert json_of(api.get("/requests.json", params={"service_code": "no-such-type"})) == []
    root = xml_of(api.get("/requests.xml", params={"service_code": "no-such-type"}), "service_requests")
    assert list(root) == []


def test_start_and_end_date_select_requested_datetime(
    api: httpx.Client, engine: Engine, settings: Settings
) -> None:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=20)
    start = end - timedelta(hours=2)
    expected = db_ids(engine, col(Case.requested_at) >= start, col(Case.requested_at) <= end)
    assert 10 < len(expected) < 1000

    local = {"start_date": w3c(start, settings), "end_date": w3c(end, settings)}
    body = json_of(api.get("/requests.json", params=local))
    assert ids(body) == expected
    utc = {"start_date": start.isoformat().replace("+00:00", "Z"), "end_date": end.isoformat()}
    assert ids(json_of(api.get("/requests.json", params=utc))) == expected
    # A '+' sent unencoded arrives as a space; it is still read as an offset.
    raw = (f"/requests.json?start_date={start:%Y-%m-%dT%H:%M:%S}+00:00"
           f"&end_date={end:%Y-%m-%dT%H:%M:%S}+00:00")
    assert ids(json_of(api.get(raw))) == expected

    # start alone: 90 days from it; end alone: 90 days up to it.
    after = json_of(api.get("/requests.json", params={"start_date": utc["start_date"], "page_size": "1000"}))
    assert ids(after) == db_ids(engine, col(Case.requested_at) >= start)
    before = json_of(api.get("/requests.json", params={"end_date": utc["end_date"], "page_size": "1000"}))
    assert ids(before) == db_ids(engine, col(Case.requested_at) <= end,
                                 col(Case.requested_at) >= end - timedelta(days=90))


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_bad_dates_are_400_naming_the_field(api: httpx.Client, fmt: str) -> None:
    assert_error(api.get(f"/requests.{fmt}", params={"start_date": "yesterday"}), 400, "start_date")
    assert_error(api.get(f"/requests.{fmt}", params={"end_date": "2020-13-45T00:00:00Z"}), 400, "end_date")
    assert_error(api.get(f"/requests.{fmt}", params={"start_date": "2020-01-01T00:00:00"}), 400,
                 "start_date", "time zone")
    assert_error(api.get(f"/requests.{fmt}", params={
        "start_date": "2020-03-01T00:00:00Z", "end_date": "2020-01-01T00:00:00Z"}), 400, "end_date")
    assert_error(api.get(f"/requests.{fmt}", params={
        "start_date": "2020-01-01T00:00:00Z", "end_date": "2020-06-01T00:00:00Z"}), 400, "90 days")
    assert_error(api.get(f"/requests.{fmt}", params={"updated_after": "soon"}), 400, "updated_after")
    # Several problems are all reported at once.
    errors = assert_error(api.get(f"/requests.{fmt}", params={"start_date": "x", "status": "pending"}), 400)
    assert len(errors) == 2


def test_status_filter_splits_open_from_closed(api: httpx.Client, engine: Engine) -> None:
    end = datetime.now(UTC) - timedelta(hours=2)
    window = {"start_date": (end - timedelta(hours=2)).isoformat(), "end_date": end.isoformat()}
    everything = json_of(api.get("/requests.json", params=window))
    assert 0 < len(everything) < 1000  # the whole window fits in one page
    opened = json_of(api.get("/requests.json", params={**window, "status": "open"}))
    closed = json_of(api.get("/requests.json", params={**window, "status": "CLOSED"}))
    both = json_of(api.get("/requests.json", params={**window, "status": "open,closed"}))
    repeated = json_of(api.get("/requests.json", params=[*window.items(), ("status", "open"), ("status", "closed")]))
    assert ids(repeated) == ids(both)
    assert opened and closed
    assert {i["status"] for i in opened} == {"open"} and {i["status"] for i in closed} == {"closed"}
    assert sorted(ids(opened) + ids(closed)) == sorted(ids(everything)) == sorted(ids(both))
    assert not set(ids(opened)) & set(ids(closed))

    with read_session(engine) as session:
        open_orders = set(session.exec(select(WorkOrder.id).where(col(WorkOrder.is_open).is_(True))).all())
        rows = session.exec(select(Case.id, Case.work_order_id, Case.closed_at)
                            .where(col(Case.id).in_([int(i) for i in ids(everything)]))).all()
    expected_open = {str(cid) for cid, wid, closed_at in rows
                     if (wid in open_orders) or (wid is None and closed_at is None)}
    assert set(ids(opened)) == expected_open
    assert_error(api.get("/requests.json", params={"status": "pending"}), 400, "status")


def test_page_and_page_size(api: httpx.Client) -> None:
    params = {"service_code": "bulky-items,metal-household-appliances"}
    first_fifty = ids(json_of(api.get("/requests.json", params={**params, "page_size": "50"})))
    page1 = ids(json_of(api.get("/requests.json", params={**params, "page_size": "25", "page": "1"})))
    page2 = ids(json_of(api.get("/requests.json", params={**params, "page_size": "25", "page": "2"})))
    assert len(first_fifty) == 50 and page1 + page2 == first_fifty
    assert json_of(api.get("/requests.json", params={**params, "page_size": "25", "page": "100000"})) == []
    root = xml_of(api.get("/requests.xml", params={**params, "page_size": "25", "page": "2"}), "service_requests")
    assert [r.findtext("service_request_id") for r in root.findall("request")] == page2
    # Empty parameters are absent.
    assert ids(json_of(api.get("/requests.json", params={**params, "page_size": "50", "page": ""}))) == first_fifty

    assert_error(api.get("/requests.json", params={"page_size": "1001"}), 400, "page_size")
    assert_error(api.get("/requests.json", params={"page_size": "0"}), 400, "page_size")
    assert_error(api.get("/requests.xml", params={"page": "0"}), 400, "page")
    assert_error(api.get("/requests.xml", params={"page": "two"}), 400, "page")


def test_updated_after_and_before(api: httpx.Client, seed: Seed, settings: Settings) -> None:
    middle = seed.imported_at + timedelta(minutes=5)
    after = json_of(api.get("/requests.json", params={"updated_after": w3c(middle, settings)}))
    assert sorted(ids(after)) == sorted(str(i) for i in seed.touched_case_ids)
    assert all(item["updated_datetime"] == w3c(seed.touched_at, settings) for item in after)

    before = json_of(api.get("/requests.json", params={"updated_before": middle.isoformat()}))
    assert len(before) == 1000 and not set(ids(before)) & {str(i) for i in seed.touched_case_ids}
    # updated_* are date filters: no default 90-day window, so the old reports are in reach.
    old = json_of(api.get("/requests.json", params={"updated_before": middle.isoformat(),
                                                      "service_code": DEAD_ANIMAL}))
    assert {str(i) for i in seed.old_case_ids} <= set(ids(old))
    both = json_of(api.get("/requests.json", params={
        "updated_after": middle.isoformat(), "updated_before": (seed.touched_at + timedelta(seconds=1)).isoformat()}))
    assert sorted(ids(both)) == sorted(ids(after))


# -- formats, paths and jurisdiction ----------------------------------------------------


def test_unsupported_formats_and_paths_are_404_in_spec_format(api: httpx.Client) -> None:
    for path in ("/services.csv", "/requests.html", "/requests/1.yaml", "/services/graffiti-removal",
                 "/no-such-thing.json", "/tokens/abc/def.json", "/"):
        response = api.get(path)
        assert_error(response, 404)
    # The requested format decides, else the Accept header, else XML (the spec's own).
    assert api.get("/no-such-thing.json").headers["content-type"].startswith("application/json")
    assert api.get("/services.csv").headers["content-type"].startswith("text/xml")
    assert api.get("/services.csv", headers={"Accept": "application/json"}).headers["content-type"].startswith(
        "application/json")


def test_wrong_methods_are_405_in_spec_format(api: httpx.Client) -> None:
    assert_error(api.put("/requests.json"), 405, "PUT")
    assert_error(api.delete("/services.xml"), 405, "DELETE")
    assert_error(api.post("/services/graffiti-removal.json"), 405, "POST")


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_jurisdiction_id_is_optional_but_must_be_ours(api: httpx.Client, fmt: str) -> None:
    assert api.get(f"/services.{fmt}", params={"jurisdiction_id": "test.fieldwork"}).status_code == 200
    assert api.get(f"/services.{fmt}", params={"jurisdiction_id": ""}).status_code == 200
    for path in ("/services", f"/services/{GRAFFITI}", "/requests", "/requests/1", "/servicerequestupdates"):
        assert_error(api.get(f"{path}.{fmt}", params={"jurisdiction_id": "elsewhere.gov"}), 404, "jurisdiction_id")

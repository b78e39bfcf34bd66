"""Seed data, schema validation and small helpers shared by the Open311 test modules.

Seeding (once per module and database kind): LA's council districts, the real MyLA311
export of 2020-01-01..03 imported through the intake pipeline with a time shift that makes
its newest record about now, service definitions on two types, and one retired type.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy import Engine, func
from sqlmodel import select

from server.db import read_session, write_session
from server.intake.importer import import_file
from server.models import Case, ServiceType, WorkOrder
from tests.conftest import DATA, load_city_areas

LA_FILE = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
LA_ZONE = ZoneInfo("America/Los_Angeles")
SCHEMA_DIR = DATA.parent / "open311-schemas"
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'
W3C_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")

GRAFFITI = "graffiti-removal"
DEAD_ANIMAL = "dead-animal-removal"
RETIRED = "report-water-waste"

GRAFFITI_ATTRIBUTES: list[dict[str, Any]] = [
    {"code": "SURFACE", "datatype": "singlevaluelist", "required": True, "order": 1,
     "description": "What is painted on?",
     "values": [{"key": "wall", "name": "Wall"}, {"key": "fence", "name": "Fence"},
                {"key": "sign", "name": "Traffic sign"}]},
    {"code": "COLOURS", "datatype": "multivaluelist", "required": False, "order": 2,
     "description": "Which colours?",
     "values": [{"key": "black", "name": "Black"}, {"key": "red", "name": "Red"},
                {"key": "silver", "name": "Silver"}]},
    {"code": "AREA_M2", "datatype": "number", "required": False, "order": 3,
     "description": "About how many square metres?", "datatype_description": "a number, e.g. 2.5"},
    {"code": "WORDING", "datatype": "string", "required": False, "order": 4,
     "description": "Is it offensive? Quote it if so."},
    {"code": "ADVICE", "datatype": "text", "required": False, "variable": False, "order": 5,
     "description": "Please do not paint over it yourself."},
]
DEAD_ANIMAL_ATTRIBUTES: list[dict[str, Any]] = [
    {"code": "SEEN_AT", "datatype": "datetime", "required": True, "order": 1,
     "description": "When did you see it?"},
    {"code": "ANIMAL", "datatype": "string", "required": True, "order": 2, "description": "Which animal?"},
]


@dataclass
class Seed:
    imported_at: datetime  # the import's own time: every open imported row was updated then
    old_case_ids: list[int]  # dead-animal cases moved to 100 days ago
    touched_case_ids: list[int]  # cases (or their work orders) updated 10 minutes after it
    touched_at: datetime


def newest_record(path: Path = LA_FILE) -> datetime:
    """The latest `createddate` of the export (wall-clock Los Angeles time), as UTC."""
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        newest = max(row["createddate"] for row in csv.DictReader(fh))
    return datetime.strptime(newest, "%Y-%m-%d %H:%M:%S").replace(tzinfo=LA_ZONE).astimezone(UTC)


def seed_database(engine: Engine, settings: Any, rejects_dir: Path, *, move_and_touch: bool = True) -> Seed:
    load_city_areas(engine, "la")
    shift = datetime.now(UTC) - newest_record()  # the newest report becomes about now
    summary = import_file(engine, LA_FILE, settings=settings.intake, time_shift=shift, rejects_dir=rejects_dir)
    assert summary.adds_up and summary.created > 7000, summary.lines()

    with write_session(engine) as session:
        for code, attributes in ((GRAFFITI, GRAFFITI_ATTRIBUTES), (DEAD_ANIMAL, DEAD_ANIMAL_ATTRIBUTES)):
            stype = session.get(ServiceType, code)
            assert stype is not None
            stype.attributes = attributes
            stype.description = f"{stype.name} (reported through 311)"
            stype.keywords = "test, open311"
            session.add(stype)
        retired = session.get(ServiceType, RETIRED)
        assert retired is not None
        retired.active = False
        session.add(retired)

    with read_session(engine) as session:
        imported_at = session.exec(select(func.max(Case.updated_at))).one()
    seed = Seed(imported_at=imported_at, old_case_ids=[], touched_case_ids=[],
                touched_at=imported_at + timedelta(minutes=10))
    if move_and_touch:
        _move_and_touch(engine, seed)
    return seed


def _move_and_touch(engine: Engine, seed: Seed) -> None:
    with write_session(engine) as session:
        # Three real reports of one type become 100 days old: outside the default window.
        old = session.exec(
            select(Case).where(Case.service_code == DEAD_ANIMAL).order_by(Case.id).limit(3)
        ).all()
        for case in old:
            case.requested_at = case.requested_at - timedelta(days=100)
            session.add(case)
        seed.old_case_ids = [c.id for c in old if c.id is not None]

        # Two cases changed themselves, and two work orders changed (all their cases count).
        # Open ones: a closed request's update time is its close time.
        cases = session.exec(
            select(Case).join(WorkOrder, WorkOrder.id == Case.work_order_id)  # type: ignore[arg-type]
            .where(Case.service_code == GRAFFITI, Case.location_state == "located", WorkOrder.is_open)
            .order_by(Case.id).limit(4)
        ).all()
        for case in cases[:2]:
            case.updated_at = seed.touched_at
            session.add(case)
        touched = {c.id for c in cases[:2]}
        for case in cases[2:]:
            order = session.get(WorkOrder, case.work_order_id)
            assert order is not None
            order.updated_at = seed.touched_at
            session.add(order)
            touched.update(session.exec(select(Case.id).where(Case.work_order_id == order.id)).all())
        seed.touched_case_ids = sorted(i for i in touched if i is not None)


# -- JSON Schemas (open311/schema-validation) -------------------------------------------


def _registry() -> Registry:
    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(contents, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def validate(instance: Any, schema_ref: str) -> None:
    """Validate against one of the stored schemas, e.g. "requests.json" or
    "swagger.json#/definitions/RequestResponse" (use "[]" as a suffix for an array of it)."""
    many = schema_ref.endswith("[]")
    ref = schema_ref.removesuffix("[]")
    schema: dict[str, Any] = {"$ref": ref}
    if many:
        schema = {"type": "array", "items": {"$ref": ref}}
    Draft202012Validator(schema, registry=REGISTRY).validate(instance)


# -- HTTP helpers -----------------------------------------------------------------------


def xml_of(response: httpx.Response, root: str) -> ET.Element:
    assert response.headers["content-type"].startswith("text/xml"), response.headers["content-type"]
    assert "charset=utf-8" in response.headers["content-type"].lower()
    assert response.text.startswith(XML_DECLARATION)
    element = ET.fromstring(response.content)
    assert element.tag == root, ET.tostring(element)[:200]
    return element


def json_of(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    return response.json()


def assert_error(response: httpx.Response, status: int, *words: str) -> list[str]:
    """The spec's error document, in the response's format; returns the descriptions."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    if response.headers["content-type"].startswith("text/xml"):
        root = xml_of(response, "errors")
        errors = [(int(e.findtext("code") or 0), e.findtext("description") or "") for e in root.findall("error")]
    else:
        body = json_of(response)
        assert isinstance(body, list) and body
        errors = [(e["code"], e["description"]) for e in body]
        assert all(set(e) == {"code", "description"} for e in body)
    assert errors and all(code == status for code, _ in errors), errors
    text = " | ".join(d for _, d in errors)
    for word in words:
        assert word in text, (word, text)
    return [d for _, d in errors]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["service_request_id"] for item in items]

"""The intake steps on real rows: locate, district, merge, prioritise, route."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.db import write_session
from server.intake.formats import read_batches
from server.intake.importer import import_file
from server.intake.pipeline import Pipeline
from server.intake.records import IncomingCase
from server.intake.servicetypes import load_overrides
from server.models import Case, Crew, District, RoutingRule, ServiceType, WorkOrder, WorkOrderEvent
from server.settings import IntakeSettings
from tests.conftest import DATA, load_city_areas

NY = IntakeSettings(timezone="America/New_York")
NYC_OPEN_PULL = DATA / "nyc/records/nyc_311_2023-12-09__kexinjiao_api.csv.gz"
NYC_2013 = DATA / "nyc/records/nyc_311_2013-12-25__nikeiubel.csv.gz"


def real_cases(path: Path, tz: IntakeSettings = NY) -> list[IncomingCase]:
    return [item for batch in read_batches(path, tz=tz.zone) for item in batch if isinstance(item, IncomingCase)]


@pytest.fixture(scope="module")
def nyc(engine: Engine) -> Engine:
    load_city_areas(engine, "nyc")
    import_file(engine, NYC_OPEN_PULL, settings=NY)
    import_file(engine, NYC_2013, settings=NY)
    return engine


def ingest(engine: Engine, cases: list[IncomingCase], pipeline: Pipeline | None = None):  # type: ignore[no-untyped-def]
    with write_session(engine) as session:
        return (pipeline or Pipeline()).ingest(session, cases, channel="api", actor="test")


def test_real_duplicates_share_one_work_order(nyc: Engine) -> None:
    """Open reports of one type at one spot (several callers) became one job."""
    groups: dict[tuple[str, float, float], list[str]] = defaultdict(list)
    for case in real_cases(NYC_OPEN_PULL):
        if not case.is_closed and case.lat is not None:
            groups[(case.service_code, round(case.lat, 5), round(case.lon or 0, 5))].append(case.external_id)
    repeated = [ids for ids in groups.values() if len(ids) > 1]
    assert len(repeated) >= 5, "the real pull has several multi-caller problems"
    with Session(nyc) as session:
        for ids in repeated:
            orders = set(
                session.exec(
                    select(Case.work_order_id).where(Case.source == "nyc", Case.external_id.in_(ids))  # type: ignore[attr-defined]
                ).all()
            )
            assert len(orders) == 1, ids
            order = session.get(WorkOrder, orders.pop())
            assert order is not None and order.case_count >= len(ids)
            merges = session.exec(
                select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == order.id, WorkOrderEvent.kind == "merged")
            ).all()
            assert len(merges) == order.case_count - 1


def test_merge_respects_radius_window_type_and_closed(nyc: Engine) -> None:
    base = next(c for c in real_cases(NYC_OPEN_PULL) if not c.is_closed and c.lat is not None)
    with Session(nyc) as session:
        stype = session.get(ServiceType, base.service_code)
        assert stype is not None
        radius, window = stype.duplicate_radius_m, stype.duplicate_window_hours
    metres_per_degree_lat = 111_195.0
    near = replace(base, external_id="t-near", lat=base.lat + (radius * 0.5) / metres_per_degree_lat)  # type: ignore[operator]
    far = replace(base, external_id="t-far", lat=base.lat + (radius * 3) / metres_per_degree_lat)  # type: ignore[operator]
    late = replace(base, external_id="t-late", requested_at=base.requested_at + timedelta(hours=window * 3))
    other = replace(base, external_id="t-type", service_code="t-other-type", service_name="Other type")
    closed = replace(base, external_id="t-closed", closed_at=base.requested_at + timedelta(hours=1))
    result = ingest(nyc, [near, far, late, other, closed])
    outcomes = {c.external_id: o for c, o in zip([near, far, late, other, closed], result.outcomes, strict=True)}
    with Session(nyc) as session:
        base_order = session.exec(
            select(Case.work_order_id).where(Case.source == "nyc", Case.external_id == base.external_id)
        ).one()
    assert outcomes["t-near"].outcome == "merged" and outcomes["t-near"].work_order_id == base_order
    for key in ("t-far", "t-late", "t-type", "t-closed"):
        assert outcomes[key].outcome == "created", key


def test_emergency_keyword_raises_the_flag_and_alerts(nyc: Engine) -> None:
    """A real NYC 'Aided/Injury' report, and a resident who writes that it smells of gas."""
    aided = [c for c in real_cases(NYC_2013) if "injury" in f"{c.service_name} {c.description}".lower()]
    assert aided, "the 2013 file has an Aided/Injury report"
    with Session(nyc) as session:
        # It has no coordinates: it waits in the unlocated queue, flagged for the dispatcher.
        case = session.exec(select(Case).where(Case.source == "nyc", Case.external_id == aided[0].external_id)).one()
        assert case.emergency and case.location_state == "unlocated"

    located = replace(aided[0], external_id="t-aided", lat=40.8296, lon=-73.8762, closed_at=None)
    result = ingest(nyc, [located])
    with Session(nyc) as session:
        order = session.get(WorkOrder, result.outcomes[0].work_order_id)
        assert order is not None and order.emergency and order.priority == 1
        alert = session.exec(
            select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == order.id, WorkOrderEvent.kind == "alert")
        ).one()
        assert alert.data == {"reason": "emergency keyword", "keyword": "injury"}

    base = next(c for c in real_cases(NYC_OPEN_PULL) if not c.is_closed and c.lat is not None)
    gas = replace(base, external_id="t-gas", service_code="t-gas-type", service_name="Street Condition",
                  description="Strong smell of gas near the manhole")
    result = ingest(nyc, [gas])
    with Session(nyc) as session:
        order = session.get(WorkOrder, result.outcomes[0].work_order_id)
        assert order is not None and order.emergency and order.priority == 1
        assert order.sla_due_at is not None
        assert order.sla_due_at - order.first_reported_at <= timedelta(hours=4)


def test_sla_due_time_follows_the_service_type(nyc: Engine) -> None:
    with Session(nyc) as session:
        types = {t.code: t for t in session.exec(select(ServiceType)).all()}
        orders = session.exec(select(WorkOrder).where(WorkOrder.emergency == False)).all()  # noqa: E712
        assert len(orders) > 500
        for order in orders:
            expected = order.first_reported_at + timedelta(hours=types[order.service_code].sla_hours)
            # Merging an earlier report moves first_reported_at; the SLA stays that of the first job.
            assert order.sla_due_at is not None
            assert abs(order.sla_due_at - expected) <= timedelta(hours=types[order.service_code].duplicate_window_hours)


def test_unlocated_queue_takes_what_has_no_usable_point(nyc: Engine) -> None:
    base = next(c for c in real_cases(NYC_OPEN_PULL) if c.lat is not None)
    cases = [
        replace(base, external_id="t-none", lat=None, lon=None),
        replace(base, external_id="t-zero", lat=0.0, lon=0.0),
        replace(base, external_id="t-kansas", lat=39.0, lon=-98.0),
    ]
    result = ingest(nyc, cases)
    assert [o.outcome for o in result.outcomes] == ["unlocated"] * 3
    with Session(nyc) as session:
        problems = dict(
            session.exec(
                select(Case.external_id, Case.location_problem).where(Case.external_id.in_(["t-none", "t-zero", "t-kansas"]))  # type: ignore[attr-defined]
            ).all()
        )
        real_unlocated = session.exec(
            select(Case).where(Case.source == "nyc", Case.location_state == "unlocated")
        ).all()
    assert problems == {
        "t-none": "no coordinates",
        "t-zero": "0,0 is a placeholder, not a location",
        "t-kansas": "outside the service areas",
    }
    assert real_unlocated and all(c.work_order_id is None for c in real_unlocated)


def test_routing_rules_pick_the_crew(nyc: Engine) -> None:
    base = next(c for c in real_cases(NYC_OPEN_PULL) if not c.is_closed and c.lat is not None)
    with write_session(nyc) as session:
        district_crew = Crew(name="t-district-crew", skills=[], home_districts=[])
        type_crew = Crew(name="t-type-crew", skills=[], home_districts=[])
        session.add(district_crew)
        session.add(type_crew)
        session.flush()
        district_id = session.exec(select(Case.district_id).where(Case.external_id == base.external_id)).one()
        session.add(RoutingRule(district_id=district_id, service_code=None, crew_id=district_crew.id))  # type: ignore[arg-type]
    with write_session(nyc) as session:
        session.add(ServiceType(code="t-routed", name="Routed type", emergency_keywords=[], attributes=[]))
        session.flush()
        session.add(RoutingRule(district_id=None, service_code="t-routed", crew_id=type_crew.id))  # type: ignore[arg-type]
        other = session.exec(select(District.id).where(District.primary, District.id != district_id)).first()
    in_district = replace(base, external_id="t-route-1", service_code="t-fresh", service_name="Fresh")
    by_type = replace(base, external_id="t-route-2", service_code="t-routed", service_name="Routed type",
                      lat=base.lat + 0.05)  # type: ignore[operator]
    result = ingest(nyc, [in_district, by_type])
    with Session(nyc) as session:
        first = session.get(WorkOrder, result.outcomes[0].work_order_id)
        second = session.get(WorkOrder, result.outcomes[1].work_order_id)
    assert first is not None and first.crew_id == district_crew.id and first.status == "assigned"
    assert second is not None and other is not None
    # The (district, any) rule is more specific than (any, type) only inside that district.
    expected = district_crew.id if second.district_id == district_id else type_crew.id
    assert second.crew_id == expected


def test_service_type_overrides_from_yaml_and_toml(nyc: Engine, tmp_path: Path) -> None:
    yaml_file = tmp_path / "types.yaml"
    yaml_file.write_text("service_types:\n  '*':\n    duplicate_window_hours: 5\n  t-yaml:\n    sla_hours: 2\n    default_priority: 1\n")
    toml_file = tmp_path / "types.toml"
    toml_file.write_text('[service_types.t-toml]\nsla_hours = 9.5\nemergency_keywords = ["flood"]\n')
    bad = tmp_path / "bad.yaml"
    bad.write_text("service_types:\n  t-x:\n    colour: red\n")
    with pytest.raises(ValueError, match="unknown fields: colour"):
        load_overrides(bad)
    base = next(c for c in real_cases(NYC_OPEN_PULL) if not c.is_closed and c.lat is not None)
    ingest(nyc, [replace(base, external_id="t-y", service_code="t-yaml", service_name="Yaml")],
           Pipeline(overrides=load_overrides(yaml_file)))
    ingest(nyc, [replace(base, external_id="t-t", service_code="t-toml", service_name="Toml",
                         description="basement flood")],
           Pipeline(overrides=load_overrides(toml_file)))
    with Session(nyc) as session:
        yaml_type = session.get(ServiceType, "t-yaml")
        toml_type = session.get(ServiceType, "t-toml")
        toml_order = session.exec(
            select(WorkOrder).join(Case, Case.work_order_id == WorkOrder.id).where(Case.external_id == "t-t")  # type: ignore[arg-type]
        ).one()
    assert yaml_type is not None and (yaml_type.sla_hours, yaml_type.default_priority) == (2, 1)
    assert yaml_type.duplicate_window_hours == 5
    assert toml_type is not None and toml_type.sla_hours == 9.5
    assert toml_order.emergency


def test_closed_export_rows_become_completed_work_orders(engine: Engine) -> None:
    la = IntakeSettings(timezone="America/Los_Angeles")
    load_city_areas(engine, "la")  # LA becomes the primary layer for this module's last test
    path = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        closed_row = next(r for r in csv.DictReader(fh) if r["status"] == "Closed" and r["latitude"])
    import_file(engine, path, settings=la)
    with Session(engine) as session:
        case = session.exec(select(Case).where(Case.source == "la", Case.external_id == closed_row["srnumber"])).one()
        order = session.get(WorkOrder, case.work_order_id)
    assert order is not None and order.status == "completed" and not order.is_open
    assert order.closed_at == case.closed_at and order.closed_at is not None
    assert order.resolution == case.resolution

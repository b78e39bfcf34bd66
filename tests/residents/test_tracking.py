"""A case as its reporter sees it: the timeline in plain-word kinds, the state, merged
reports keeping their own numbers (SQLite and PostgreSQL, through the real writer)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from server.errors import NotFound
from server.residents.service import tracking
from server.settings import Settings
from tests.notify.support import HERE, crew_a, prepare, push_settings, report, set_crew, set_status


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return push_settings(database_url)


@pytest.fixture(scope="module", autouse=True)
def prepared(engine: Engine) -> None:
    prepare(engine)


def kinds(engine: Engine, ref: str) -> list[str]:
    with Session(engine) as session:
        return [entry.kind for entry in tracking(session, ref).timeline]


def test_the_story_of_a_merged_pothole(engine: Engine, settings: Settings) -> None:
    lat, lon = HERE[0] + 0.3, HERE[1]
    first = report(engine, settings, lat=lat, lon=lon)
    second = report(engine, settings, lat=lat + 0.00004, lon=lon)
    assert second.outcome == "merged" and first.work_order_id == second.work_order_id
    order_id = first.work_order_id
    assert order_id is not None
    set_status(engine, order_id, "on_hold")
    with Session(engine) as session:
        assert tracking(session, second.token).state == "acknowledged"
    set_crew(engine, order_id, crew_a(engine))
    set_status(engine, order_id, "assigned")
    third = report(engine, settings, lat=lat, lon=lon + 0.00004)
    set_status(engine, order_id, "en_route")
    set_status(engine, order_id, "completed", reason="Filled and rolled")

    assert kinds(engine, first.token) == ["received", "acknowledged", "scheduled", "also_reported", "en_route",
                                          "fixed"]
    assert kinds(engine, second.token) == ["first_reported", "received", "merged", "acknowledged", "scheduled",
                                           "also_reported", "en_route", "fixed"]
    with Session(engine) as session:
        seen = tracking(session, third.token)
        by_number = tracking(session, str(third.case_id))
    assert seen.service_request_id == str(third.case_id) and seen.token == third.token  # its own number and token
    assert seen.state == "fixed" and not seen.open and seen.reports == 3 and seen.expected is None
    assert seen.resolution == "Filled and rolled"
    merged = next(e for e in seen.timeline if e.kind == "merged")
    assert merged.count == 3
    assert next(e for e in seen.timeline if e.kind == "fixed").detail == "Filled and rolled"
    assert by_number.token is None and not by_number.can_subscribe


def test_a_duplicate_and_a_reopened_job(engine: Engine, settings: Settings) -> None:
    case = report(engine, settings, lat=HERE[0] + 0.31, lon=HERE[1])
    assert case.work_order_id is not None
    set_status(engine, case.work_order_id, "cancelled", reason="Duplicate of report 12")
    with Session(engine) as session:
        assert tracking(session, case.token).state == "duplicate"
    set_status(engine, case.work_order_id, "new")
    with Session(engine) as session:
        seen = tracking(session, case.token)
    assert [e.kind for e in seen.timeline] == ["received", "duplicate", "reopened"]
    assert seen.state == "received" and seen.open and seen.expected is not None


def test_unknown_references_are_not_found(engine: Engine, settings: Settings) -> None:
    with Session(engine) as session:
        for ref in ("", "999999999", "no-such-token-anywhere-at-all", "x" * 200):
            with pytest.raises(NotFound):
                tracking(session, ref)

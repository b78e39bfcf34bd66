"""The geocoder from the city's own located history (server/intake/geocode.py), on the real
LA export in SQLite and PostgreSQL: exact addresses, interpolation along a street, what it
refuses, and its accuracy when coordinates are hidden (the figures: bench/geocode.py)."""

from __future__ import annotations

import itertools
import statistics
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.db import write_session
from server.intake import geocode
from server.intake.formats import read_batches
from server.intake.geocode import GeocodeIndex, metres_between, parse_address, suggest_position
from server.intake.importer import import_file
from server.intake.pipeline import Pipeline
from server.intake.records import IncomingCase
from server.models import Case
from server.open311.service import submit_request
from server.settings import IntakeSettings, Settings
from tests.conftest import DATA, load_city_areas

LA_2018 = DATA / "la/records/la_myla311_2018-01-01_2018-01-04.csv.gz"
CHICAGO_GRAFFITI = DATA / "chicago/records/chi_graffiti_removal_historical_2011-2018.csv.gz"


@pytest.fixture(scope="module")
def located(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, float, float]]:
    load_city_areas(engine, "la")
    summary = import_file(engine, LA_2018, settings=IntakeSettings(), rejects_dir=tmp_path_factory.mktemp("r"))
    assert summary.adds_up
    with Session(engine) as session:
        rows = session.exec(select(Case.address, Case.lat, Case.lon).where(
            Case.location_state == "located", col(Case.address).is_not(None))).all()
    return [(a, la, lo) for a, la, lo in rows if a and la is not None and lo is not None]


def test_addresses_are_normalised() -> None:
    chicago, plain = parse_address("1557 W 13th Street, Chicago, IL 60608"), parse_address("1557 WEST 13 ST")
    assert chicago is not None and plain is not None
    assert (chicago.number, chicago.street, chicago.zipcode) == (plain.number, plain.street, "60608") == (
        1557, "W 13 ST", "60608")
    parsed = parse_address("2111 W BELLEVUE AVE, 90026")
    assert parsed is not None and (parsed.number, parsed.street, parsed.zipcode) == (2111, "W BELLEVUE AVE", "90026")
    assert parse_address("659 CAULDWELL AVENUE") == parse_address("659 Cauldwell Ave.")
    for nothing in ("", "FT WASHINGTON AVENUE", "BROADWAY & W 42 STREET", "Near the library"):
        assert parse_address(nothing) is None, nothing


def test_a_comma_inside_a_street_name_does_not_cut_it() -> None:
    # LA writes Martin Luther King Jr Blvd with a comma; the comma before the ZIP or the city ends it.
    la = parse_address("2032 W MARTIN LUTHER KING, JR BLVD, 90062")
    assert la is not None and (la.number, la.street, la.zipcode) == (2032, "W MARTIN LUTHER KING JR BLVD", "90062")
    assert parse_address("2032 W Martin Luther King Jr. Blvd") == parse_address("2032 W MARTIN LUTHER KING, JR BLVD")
    for text, street in (("1557 W 13th Street, Chicago, IL 60608", "W 13 ST"), ("123 Broadway, Apt 4, New York", "BROADWAY"),
                         ("100 Main St, Suite 5, Los Angeles", "MAIN ST")):
        parsed = parse_address(text)
        assert parsed is not None and parsed.street == street, text
    # So a resident who writes it without the comma finds the city's located records of it.
    index = GeocodeIndex()
    index.add("2030 W MARTIN LUTHER KING, JR BLVD, 90062", 34.0106, -118.3160)
    index.add("2030 W MARTIN LUTHER KING, JR BLVD, 90062", 34.0106, -118.3160)
    suggestion = index.suggest("2030 West Martin Luther King Jr Blvd, Los Angeles")
    assert suggestion is not None and suggestion.method == "exact" and suggestion.places


def test_an_address_seen_before_is_placed_where_it_was(engine: Engine, located: list[tuple[str, float, float]]) -> None:
    address, lat, lon = next(row for row in located if parse_address(row[0]))
    with Session(engine) as session:
        suggestion = suggest_position(session, address.lower())
    assert suggestion is not None and suggestion.method == "exact" and suggestion.places
    assert metres_between(suggestion.lat, suggestion.lon, lat, lon) < 100


def test_a_new_number_is_interpolated_between_its_neighbours(
    engine: Engine, located: list[tuple[str, float, float]]
) -> None:
    by_street: dict[str, dict[int, tuple[float, float]]] = {}
    for address, lat, lon in located:
        parsed = parse_address(address)
        if parsed:
            by_street.setdefault(parsed.street, {})[parsed.number] = (lat, lon)
    # Two located numbers of one side of a street, 4 to 40 apart, nothing between them.
    pair = None
    for street, numbers in sorted(by_street.items()):
        ordered = sorted(n for n in numbers if n % 2 == 0)
        for low, high in itertools.pairwise(ordered):
            near = metres_between(*numbers[low], *numbers[high])
            if 4 <= high - low <= 40 and 20 < near < 300 and not any(low < n < high for n in numbers):
                pair = (street, low, high, numbers[low], numbers[high])
                break
        if pair:
            break
    assert pair is not None
    street, low, high, p_low, p_high = pair
    middle = low + (high - low) // 4 * 2  # same side, between the two
    with Session(engine) as session:
        suggestion = suggest_position(session, f"{middle} {street}")
    assert suggestion is not None and suggestion.method == "interpolated"
    share = (middle - low) / (high - low)
    expected = (p_low[0] + share * (p_high[0] - p_low[0]), p_low[1] + share * (p_high[1] - p_low[1]))
    assert metres_between(suggestion.lat, suggestion.lon, *expected) < 1
    assert 0 < suggestion.confidence < 0.85  # less sure than an address seen before
    with Session(engine) as session:
        assert suggest_position(session, f"{middle} NO SUCH STREET") is None
        assert suggest_position(session, "the corner by the park") is None


def test_hidden_coordinates_are_found_again_within_tens_of_metres() -> None:
    """Chicago's graffiti export: every 10th located record hidden, the rest as history."""
    cases = [item for batch in read_batches(CHICAGO_GRAFFITI, tz=ZoneInfo("America/Chicago"))
             for item in batch if isinstance(item, IncomingCase) and item.lat is not None and item.address]
    hidden = cases[::10]
    index = GeocodeIndex()
    index.add_many((c.address, c.lat, c.lon) for i, c in enumerate(cases) if i % 10)
    errors = []
    for case in hidden:
        suggestion = index.suggest(case.address)
        if suggestion is not None and suggestion.places:
            assert case.lat is not None and case.lon is not None
            errors.append(metres_between(suggestion.lat, suggestion.lon, case.lat, case.lon))
    assert len(errors) > 0.3 * len(hidden)
    assert statistics.median(errors) < 30
    assert sorted(errors)[int(0.9 * len(errors))] < 150



def test_a_case_a_dispatcher_places_teaches_the_index(
    engine: Engine, settings: Settings, located: list[tuple[str, float, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index reads new cases by id; a case read while unlocated and placed later by a
    dispatcher (its id long read) is picked up at the next look at the waiting ones."""
    monkeypatch.setattr(geocode, "RECHECK_SECONDS", 0.0)
    address = "7 Fieldwork Test Way, 90012"
    with Session(engine) as session:
        assert suggest_position(session, address) is None  # the index is built, past every case
    with write_session(engine) as session:
        report = submit_request(session, form={"service_code": "bulky-items", "address_string": address,
                                               "description": "A sofa on the pavement"},
                                settings=settings, source="web", channel="web", actor="test resident")
        # A report after it, with a point: the index reads it, and its cursor passes both.
        submit_request(session, form={"service_code": "bulky-items", "lat": "34.0407", "long": "-118.2468",
                                      "address_string": "12 Elsewhere St, 90013", "description": "A fridge"},
                       settings=settings, source="web", channel="web", actor="test resident")
    with Session(engine) as session:
        assert suggest_position(session, address) is None  # read now, while it waits for a dispatcher
        assert suggest_position(session, "12 Elsewhere St") is not None
        case = session.get(Case, report.case_id)
        assert case is not None and case.location_state == "unlocated"
    with write_session(engine) as session:
        Pipeline().place(session, report.case_id, lat=34.0522, lon=-118.2437, actor="dispatcher:test", actor_user_id=None)
    with Session(engine) as session:
        suggestion = suggest_position(session, "7 FIELDWORK TEST WAY")
    assert suggestion is not None and suggestion.method == "exact"
    assert metres_between(suggestion.lat, suggestion.lon, 34.0522, -118.2437) < 1

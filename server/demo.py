"""`fieldwork demo`: a working city from the real data in ../shared/data/311, in one command.

Loads a city's service areas and every record of its exports, shifted in time so that the
newest record is now and the exports follow one another a day apart (order and spacing kept
within each; each case keeps its original time), and
creates a dispatcher and crews with routing rules, so the console and the crew app have
live-looking work to show.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from server.db import write_session
from server.dispatch.geography import group_districts
from server.intake.areas import load_areas
from server.intake.formats import read_batches
from server.intake.importer import ImportSummary, import_file
from server.intake.records import IncomingCase
from server.models import Crew, District, RoutingRule, SharedValue, User
from server.settings import IntakeSettings

__all__ = ["CITIES", "CityData", "DemoAccount", "FileSpan", "default_data_dir", "demo_shifts", "file_spans", "prepare_demo"]


@dataclass(frozen=True, slots=True)
class AreaLayer:
    file: str
    layer: str
    name_field: str
    code_field: str
    primary: bool


@dataclass(frozen=True, slots=True)
class CityData:
    name: str
    timezone: str
    layers: tuple[AreaLayer, ...]
    records: str  # a glob under the data folder
    crews: tuple[str, ...]
    # A point (lat, lon) in each crew's part of town, in `crews` order: the crew's yard, and
    # where its region of neighbouring districts grows from (server.dispatch.geography).
    anchors: tuple[tuple[float, float], ...] = ()


CITIES: dict[str, CityData] = {
    "la": CityData(
        "Los Angeles",
        "America/Los_Angeles",
        (
            AreaLayer("la/boundaries/la_city_council_districts_2012.geojson", "council_district",
                      "name", "name", True),
        ),
        "la/records/*.csv.gz",
        ("Valley North", "Valley South", "Central", "Harbor"),
        ((34.27, -118.47), (34.17, -118.45), (34.05, -118.25), (33.76, -118.28)),
    ),
    "chicago": CityData(
        "Chicago",
        "America/Chicago",
        (
            AreaLayer("chicago/boundaries/chi_community_areas.geojson", "community_area",
                      "COMMUNITY", "AREA_NUMBE", True),
        ),
        "chicago/records/*.csv.gz",
        ("North Side", "West Side", "South Side", "Far South"),
        ((41.95, -87.68), (41.88, -87.73), (41.79, -87.62), (41.69, -87.62)),
    ),
    "nyc": CityData(
        "New York City",
        "America/New_York",
        (
            AreaLayer("nyc/boundaries/nyc_community_districts_dcp2013.geojson", "community_district",
                      "BoroCD", "BoroCD", True),
        ),
        "nyc/records/*.gz",
        ("Manhattan", "Bronx", "Brooklyn", "Queens", "Staten Island"),
        ((40.78, -73.97), (40.85, -73.88), (40.65, -73.95), (40.72, -73.80), (40.58, -74.15)),
    ),
}


@dataclass(frozen=True, slots=True)
class DemoAccount:
    username: str
    password: str
    role: str
    crew: str | None


def default_data_dir() -> Path:
    """`FIELDWORK_DATA_DIR`, else ../shared/data/311 beside the checkout or the working folder."""
    if os.environ.get("FIELDWORK_DATA_DIR"):
        return Path(os.environ["FIELDWORK_DATA_DIR"])
    checkout = Path(__file__).resolve().parents[1]
    for base in (checkout.parent, Path.cwd().parent, Path.cwd()):
        candidate = base / "shared" / "data" / "311"
        if candidate.is_dir():
            return candidate
    return checkout.parent / "shared" / "data" / "311"


@dataclass(frozen=True, slots=True)
class FileSpan:
    path: Path
    oldest: datetime
    newest: datetime


FILE_GAP = timedelta(days=1)  # between two exports laid end to end


def file_spans(files: list[Path], intake: IntakeSettings) -> list[FileSpan]:
    """Each file's oldest and newest requested time (one streaming pass, nothing kept),
    oldest file first; files without a dated case are left out."""
    spans = []
    for path in files:
        oldest: datetime | None = None
        newest: datetime | None = None
        for batch in read_batches(path, tz=intake.zone):
            for item in batch:
                if isinstance(item, IncomingCase):
                    oldest = item.requested_at if oldest is None else min(oldest, item.requested_at)
                    newest = item.requested_at if newest is None else max(newest, item.requested_at)
        if oldest is not None and newest is not None:
            spans.append(FileSpan(path, oldest, newest))
    return sorted(spans, key=lambda span: span.newest)


def demo_shifts(spans: Sequence[FileSpan], now: datetime) -> dict[Path, timedelta]:
    """How far to move each file's times: the newest file ends now, and each earlier one ends
    a day before the next begins. The exports were taken years apart; kept apart, the oldest
    open jobs would be two years overdue, which no city's board looks like. Within a file,
    order and spacing are kept; files that overlap in time keep their overlap."""
    shifts: dict[Path, timedelta] = {}
    start_of_next: datetime | None = None  # after shifting
    shift_of_next = timedelta(0)
    for span in reversed(spans):
        if start_of_next is None:
            shift = now - span.newest
        elif span.newest + shift_of_next >= start_of_next - FILE_GAP:
            shift = shift_of_next  # close to or overlapping the next file: as it was
        else:
            shift = start_of_next - FILE_GAP - span.newest
        shifts[span.path] = shift
        start_of_next = span.oldest + shift if start_of_next is None else min(start_of_next, span.oldest + shift)
        shift_of_next = shift
    return shifts


def prepare_demo(
    engine: Engine,
    *,
    city: str,
    data_dir: Path,
    intake: IntakeSettings,
    rejects_dir: Path,
    on_file: Callable[[ImportSummary], None] | None = None,
    now: datetime | None = None,
) -> tuple[list[ImportSummary], list[DemoAccount], datetime, datetime]:
    """Load the city; returns the import summaries, the accounts, and when the shifted
    records begin and end (the "now" of the database's first demo start)."""
    spec = CITIES[city]
    for layer in spec.layers:
        load_areas(engine, data_dir / layer.file, layer=layer.layer, name_field=layer.name_field,
                   code_field=layer.code_field, primary=layer.primary)
    accounts = _ensure_crews_and_users(engine, spec)
    files = sorted(data_dir.glob(spec.records))
    if not files:
        raise FileNotFoundError(f"no records for {city} under the data folder ({spec.records})")
    now = now or _anchor(engine, city, datetime.now(UTC))
    spans = file_spans(files, intake)
    shifts = demo_shifts(spans, now)
    summaries = []
    for path in files:
        # Shifted times are capped at the same "now" on every start, so they come out the same.
        summary = import_file(engine, path, settings=intake, rejects_dir=rejects_dir,
                              time_shift=shifts.get(path, timedelta(0)), shift_until=now)
        summaries.append(summary)
        if on_file:
            on_file(summary)
    begins = min((span.oldest + shifts[span.path] for span in spans), default=now)
    return summaries, accounts, begins, now


def _anchor(engine: Engine, city: str, now: datetime) -> datetime:
    """The "now" the city's records were first shifted to, kept in the database: a demo
    started again on the same database shifts them the same way, so its import finds every
    record already there, unchanged. (Shifted to a new "now", each closed record would look
    like a new outcome from the city and gain a note, and every crew's phone would receive
    the city's whole closed history.)"""
    key = f"demo:{city}:now"
    with write_session(engine) as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.exec(insert(SharedValue).values(key=key, value=now.isoformat().encode(), expires_at=None)
                     .on_conflict_do_nothing(index_elements=["key"]))
        row = session.get(SharedValue, key)
        assert row is not None
        return datetime.fromisoformat(row.value.decode())


def _regions(spec: CityData, districts: Sequence[District]) -> list[list[int]]:
    """Each crew's districts: neighbours around its anchor (round-robin if the city has none)."""
    if spec.anchors and all(d.geometry for d in districts):
        return group_districts([(d.id, d.geometry) for d in districts], spec.anchors)  # type: ignore[misc]
    regions: list[list[int]] = [[] for _ in spec.crews]
    for number, district in enumerate(districts):
        regions[number % len(spec.crews)].append(district.id)  # type: ignore[arg-type]
    return regions


def _ensure_crews_and_users(engine: Engine, spec: CityData) -> list[DemoAccount]:
    """Crews get neighbouring districts by geography; passwords are new on every run and printed."""
    from server.auth.passwords import hash_password
    from server.auth.users import create_crew

    accounts: list[DemoAccount] = []
    with write_session(engine) as session:
        crews: list[Crew] = []
        for name in spec.crews:
            crew = session.exec(select(Crew).where(Crew.name == name)).first()
            if crew is None:
                crew = create_crew(session, name=name, capacity=12)
            crews.append(crew)
        districts = session.exec(select(District).where(col(District.primary)).order_by(col(District.id))).all()
        regions = _regions(spec, districts)
        for crew, anchor, region in zip(crews, spec.anchors or [None] * len(crews), regions, strict=True):
            if anchor is not None:
                crew.yard_lat, crew.yard_lon = anchor
            for district_id in region:
                rule = session.exec(
                    select(RoutingRule).where(RoutingRule.district_id == district_id, RoutingRule.service_code.is_(None))  # type: ignore[union-attr]
                ).first()
                if rule is None:
                    session.add(RoutingRule(district_id=district_id, service_code=None, crew_id=crew.id))  # type: ignore[arg-type]
            crew.home_districts = sorted({*(crew.home_districts or []), *region})
            session.add(crew)
        wanted = [("dispatcher", "dispatcher", None)] + [
            (f"crew{number + 1}", "crew", crew) for number, crew in enumerate(crews)
        ]
        for username, role, crew in wanted:
            password = secrets.token_urlsafe(9)
            user = session.exec(select(User).where(User.username == username)).first()
            if user is None:
                user = User(username=username, role=role, password_hash="",
                            display_name=crew.name if crew else "Demo dispatcher")
            user.password_hash = hash_password(password)
            user.crew_id = crew.id if crew else None
            user.active = True
            session.add(user)
            accounts.append(DemoAccount(username, password, role, crew.name if crew else None))
    return accounts

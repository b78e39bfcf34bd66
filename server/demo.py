"""`fieldwork demo`: a working city from the real data in ../shared/data/311, in one command.

Loads a city's service areas and every record of its exports, shifted in time so that the
newest record is today (order and spacing kept; each case keeps its original time), and
creates a dispatcher and crews with routing rules, so the console and the crew app have
live-looking work to show.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from server.db import write_session
from server.intake.areas import load_areas
from server.intake.formats import read_batches
from server.intake.importer import ImportSummary, import_file
from server.intake.records import IncomingCase
from server.models import Crew, District, RoutingRule, User
from server.settings import IntakeSettings

__all__ = ["CITIES", "CityData", "DemoAccount", "default_data_dir", "prepare_demo"]


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


def newest_request(files: list[Path], intake: IntakeSettings) -> datetime | None:
    """The newest requested time in the files (one streaming pass, nothing kept)."""
    newest: datetime | None = None
    for path in files:
        for batch in read_batches(path, tz=intake.zone):
            for item in batch:
                if isinstance(item, IncomingCase) and (newest is None or item.requested_at > newest):
                    newest = item.requested_at
    return newest


def prepare_demo(
    engine: Engine,
    *,
    city: str,
    data_dir: Path,
    intake: IntakeSettings,
    rejects_dir: Path,
    on_file: Callable[[ImportSummary], None] | None = None,
    now: datetime | None = None,
) -> tuple[list[ImportSummary], list[DemoAccount], timedelta]:
    spec = CITIES[city]
    for layer in spec.layers:
        load_areas(engine, data_dir / layer.file, layer=layer.layer, name_field=layer.name_field,
                   code_field=layer.code_field, primary=layer.primary)
    accounts = _ensure_crews_and_users(engine, spec)
    files = sorted(data_dir.glob(spec.records))
    if not files:
        raise FileNotFoundError(f"no records for {city} under the data folder ({spec.records})")
    now = now or datetime.now(UTC)
    newest = newest_request(files, intake) or now
    # Exactly so: the newest record lands on "now" and every other keeps its distance.
    shift = now - newest
    summaries = []
    for path in files:
        summary = import_file(engine, path, settings=intake, rejects_dir=rejects_dir, time_shift=shift)
        summaries.append(summary)
        if on_file:
            on_file(summary)
    return summaries, accounts, shift


def _ensure_crews_and_users(engine: Engine, spec: CityData) -> list[DemoAccount]:
    """Crews share the districts round-robin; passwords are new on every run and printed."""
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
        districts = session.exec(select(District).where(District.primary).order_by(District.id)).all()
        for number, district in enumerate(districts):
            crew = crews[number % len(crews)]
            rule = session.exec(
                select(RoutingRule).where(RoutingRule.district_id == district.id, RoutingRule.service_code.is_(None))  # type: ignore[union-attr]
            ).first()
            if rule is None:
                session.add(RoutingRule(district_id=district.id, service_code=None, crew_id=crew.id))  # type: ignore[arg-type]
            crew.home_districts = sorted({*(crew.home_districts or []), district.id})  # type: ignore[arg-type]
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

"""The `fieldwork` command, run as a user runs it (a subprocess), on real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from server.db import create_db_engine
from server.models import Case, District, RoutingRule, User
from server.settings import DatabaseSettings
from tests.conftest import DATA, ROOT


def fieldwork(*args: str, db_url: str, stdin: str | None = None, cwd: Path,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FIELDWORK_DATABASE_URL": db_url, "FIELDWORK_TIMEZONE": "America/New_York",
           "COLUMNS": "200", "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", *args], input=stdin, capture_output=True, text=True,
        env=env, cwd=cwd, timeout=300,
    )
    # The terminal output wraps long lines; compare words, not line breaks.
    result.stderr = " ".join(result.stderr.split())
    return result


@pytest.mark.slow  # several CLI processes, each importing a real export
def test_areas_import_users_and_routing_from_the_command_line(fresh_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = fresh_db.url
    loaded = fieldwork("areas", "load", str(DATA / "nyc/boundaries/nyc_community_districts_dcp2013.geojson"),
                       "--layer", "community_district", "--name-field", "BoroCD", db_url=url, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "71 added" in loaded.stderr

    bad = fieldwork("areas", "load", str(DATA / "nyc/boundaries/nyc_boroughs_simplified.geojson"),
                    "--layer", "x", "--name-field", "nope", db_url=url, cwd=tmp_path)
    assert bad.returncode == 2 and "no property 'nope'" in bad.stderr

    source = DATA / "nyc/records/nyc_311_2023-03-31__jun-yan_test_sample2.csv.gz"
    first = fieldwork("import", str(source), "--rejects-dir", str(tmp_path / "rejects"), db_url=url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    said = " ".join(first.stderr.split())
    assert "89 rows read" in said and "adds up" in said and "rejected 0" in said
    # Its five rows closed before they were opened are kept and flagged, not rejected.
    assert "5 closed before they were opened" in said
    assert "times read in America/New_York (the configured time zone)" in said
    assert not list((tmp_path / "rejects").glob("*.rejects.csv"))
    again = fieldwork("import", str(source), "--rejects-dir", str(tmp_path / "rejects"), db_url=url, cwd=tmp_path)
    assert "created 0" in again.stderr and "already present 89" in again.stderr

    compacted = fieldwork("sync", "compact", "--keep-days", "0", db_url=url, cwd=tmp_path)
    assert compacted.returncode == 0 and "sync feed compacted" in compacted.stderr, compacted.stderr

    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(source.read_bytes()[:300])
    failed = fieldwork("import", str(broken), db_url=url, cwd=tmp_path)
    assert failed.returncode == 1 and "import the file again" in " ".join(failed.stderr.split())

    crew = fieldwork("crews", "add", "Bronx North", db_url=url, cwd=tmp_path)
    assert crew.returncode == 0, crew.stderr
    rule = fieldwork("routing", "add", "--crew", "Bronx North", "--district", "203", db_url=url, cwd=tmp_path)
    assert rule.returncode == 0, rule.stderr
    user = fieldwork("users", "add", "maria", "--role", "crew", "--crew", "Bronx North", "--password-stdin",
                     db_url=url, stdin="a-long-enough-password\n", cwd=tmp_path)
    assert user.returncode == 0, user.stderr
    weak = fieldwork("users", "add", "bob", "--role", "dispatcher", "--password-stdin",
                     db_url=url, stdin="short\n", cwd=tmp_path)
    assert weak.returncode == 2 and "password" in weak.stderr

    engine = create_db_engine(DatabaseSettings(url=url))
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(District)).one() == 71
        assert session.exec(select(func.count()).select_from(Case)).one() == 89  # the five closed before they were opened are kept (flagged)
        assert session.exec(select(func.count()).select_from(RoutingRule)).one() == 1
        maria = session.exec(select(User).where(User.username == "maria")).one()
        assert maria.role == "crew" and maria.password_hash.startswith("$argon2id$")
    engine.dispose()


def test_an_unknown_time_zone_is_refused_naming_where_it_came_from(fresh_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = DATA / "nyc/records/nyc_311_2023-03-31__jun-yan_test_sample2.csv.gz"
    given = fieldwork("import", str(source), "--timezone", "Mars/Olympus", db_url=fresh_db.url, cwd=tmp_path)
    assert given.returncode == 2 and "Traceback" not in given.stderr, given.stderr
    assert "argument --timezone: not a time zone: 'Mars/Olympus'" in given.stderr
    configured = fieldwork("import", str(source), db_url=fresh_db.url, cwd=tmp_path,
                           env={"FIELDWORK_TIMEZONE": "Mars/Olympus"})
    assert configured.returncode == 2 and "Traceback" not in configured.stderr, configured.stderr
    assert "FIELDWORK_TIMEZONE must be a time zone name such as America/Chicago" in configured.stderr
    assert "'Mars/Olympus'" in configured.stderr
    engine = create_db_engine(DatabaseSettings(url=fresh_db.url))
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 0  # nothing was read
    engine.dispose()


def test_without_areas_queues_every_case_and_says_so(fresh_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = DATA / "nyc/records/nyc_311_2023-03-31__jun-yan_test_sample2.csv.gz"
    refused = fieldwork("import", str(source), "--rejects-dir", str(tmp_path), db_url=fresh_db.url, cwd=tmp_path)
    assert refused.returncode == 1 and "no service areas are loaded" in refused.stderr, refused.stderr
    assert "--without-areas" in refused.stderr
    queued = fieldwork("import", str(source), "--without-areas", "--rejects-dir", str(tmp_path),
                       db_url=fresh_db.url, cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr
    assert "unlocated 89" in queued.stderr and "adds up" in queued.stderr
    assert "NO SERVICE AREAS LOADED: every case waits in the unlocated queue" in queued.stderr
    engine = create_db_engine(DatabaseSettings(url=fresh_db.url))
    with Session(engine) as session:
        states = session.exec(select(Case.location_state, func.count()).group_by(Case.location_state)).all()
        assert dict(states) == {"unlocated": 89}
        assert session.exec(select(func.count()).select_from(Case).where(Case.district_id != None)).one() == 0  # noqa: E711
    engine.dispose()

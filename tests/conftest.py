"""Shared fixtures: real databases (a SQLite file and a PostgreSQL database per module),
real data from ../shared/data/311, and a real Hypercorn server on loopback.

Every database-backed test runs twice, on SQLite and on PostgreSQL (`db_kind` parameter).
PostgreSQL is not optional: if it cannot be reached the tests error, they do not skip.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import psycopg
import pytest
from sqlalchemy import Engine

from server.auth import passwords
from server.db import create_db_engine, migrate
from server.settings import AuthSettings, DatabaseSettings, IntakeSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FIELDWORK_DATA_DIR") or ROOT.parent / "shared" / "data" / "311")
PG_ADMIN_URL = os.environ.get("FIELDWORK_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_SECRET = "test-secret-" + "x" * 40
TEST_API_KEY = "test-open311-key"
# argon2id at a small cost: the suite creates and signs in hundreds of users (0.2 s of CPU
# each at the standard cost). Servers started by the tests get it too (LiveServer.env).
TEST_PASSWORD_COST = "test-only-cheap"
passwords.configure(TEST_PASSWORD_COST)

CITY_LAYERS = {
    # city: (file, layer, name field, code field, time zone)
    "la": ("la/boundaries/la_city_council_districts_2012.geojson", "council_district", "name", "name",
           "America/Los_Angeles"),
    "chicago": ("chicago/boundaries/chi_community_areas.geojson", "community_area", "COMMUNITY",
                "AREA_NUMBE", "America/Chicago"),
    "nyc": ("nyc/boundaries/nyc_community_districts_dcp2013.geojson", "community_district", "BoroCD",
            "BoroCD", "America/New_York"),
}


# -- test tiers and Hypothesis profiles ---------------------------------------------------
#
# `pytest -m "not slow"` is the fast tier a developer runs before each commit; browser tests
# count as slow. Hypothesis runs under the `dev` profile locally (a random seed per run,
# printed in the header and again after a failure) and under `ci` in CI (.ci/run passes
# --hypothesis-profile=ci: derandomised, so a CI run is repeatable, and no example database).

hypothesis.settings.register_profile(
    "dev", print_blob=True, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get("FIELDWORK_HYPOTHESIS_PROFILE", "dev"))

_SEED_OPTION = "hypothesis_seed"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # One random seed for the whole run unless derandomised or given: Hypothesis's own
    # plugin reads this option next, and we can print it (a failing run can be replayed
    # with --hypothesis-seed=N).
    derandomized = hypothesis.settings.get_current_profile_name() == "ci" or (
        config.getoption("hypothesis_profile", None) == "ci"
    )
    if config.getoption(_SEED_OPTION, None) is None and not derandomized:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**32))


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption(_SEED_OPTION, None)
    profile = config.getoption("hypothesis_profile", None) or hypothesis.settings.get_current_profile_name()
    return f"hypothesis: profile {profile}" + (f", seed {seed} (replay: --hypothesis-seed={seed})" if seed else "")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    seed = config.getoption(_SEED_OPTION, None)
    if exitstatus != 0 and seed:
        terminalreporter.write_line(f"Hypothesis seed of this run: {seed} (replay with --hypothesis-seed={seed})")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The fast tier (-m "not slow", before each commit) runs every test on SQLite; the full
    # run (CI) adds the same tests on PostgreSQL and the browser tests.
    for item in items:
        on_postgres = getattr(item, "callspec", None) is not None and item.callspec.params.get("db_kind") == "postgres"
        if (item.get_closest_marker("browser") or on_postgres) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_pg_database(template: str | None = None) -> str:
    """A new database (a copy of `template` if given: nobody may be connected to it)."""
    name = f"fieldwork_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def database_url(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if db_kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'fieldwork.db'}"
        return
    name = create_pg_database()
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


def make_settings(database_url: str, *, timezone: str = "America/Los_Angeles") -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url),
        auth=AuthSettings(secret=TEST_SECRET, open311_api_keys=(TEST_API_KEY,), password_cost=TEST_PASSWORD_COST),
        intake=IntakeSettings(timezone=timezone, jurisdiction_id="test.fieldwork"),
    )


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(settings.database)
    migrate(engine)
    yield engine
    engine.dispose()


def load_city_areas(engine: Engine, city: str) -> None:
    from server.intake.areas import load_areas

    file, layer, name_field, code_field, _ = CITY_LAYERS[city]
    load_areas(engine, DATA / file, layer=layer, name_field=name_field, code_field=code_field)


def city_settings(settings: Settings, city: str) -> Settings:
    return replace(settings, intake=replace(settings.intake, timezone=CITY_LAYERS[city][4]))


class LiveServer:
    """A real Hypercorn process serving `create_app()` on loopback, in a process group of
    its own (so that a crash kills its worker too), its stderr kept in `log`."""

    def __init__(self, settings: Settings, env_extra: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env_extra = env_extra or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log: deque[str] = deque(maxlen=200)  # the server's stderr, last lines

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("FIELDWORK_AUTH_SECRET", None)
        if self.settings.auth.secret is not None:  # else the server keeps one in the database
            env["FIELDWORK_AUTH_SECRET"] = self.settings.auth.secret
        env.update(
            {
                "FIELDWORK_DATABASE_URL": self.settings.database.url,
                "FIELDWORK_OPEN311_API_KEYS": ",".join(self.settings.auth.open311_api_keys),
                "FIELDWORK_PASSWORD_COST": self.settings.auth.password_cost,
                "FIELDWORK_TIMEZONE": self.settings.intake.timezone,
                "FIELDWORK_JURISDICTION_ID": self.settings.intake.jurisdiction_id,
                "FIELDWORK_PUBLIC_URL": self.url,
            }
        )
        env.update(self.env_extra)
        return env

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}",
             "--log-level", "WARNING", "server.app:create_app()"],
            cwd=ROOT, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        stream = self.process.stderr
        assert stream is not None
        # Keep draining stderr: a full pipe would block the server mid-request.
        threading.Thread(target=lambda: self.log.extend(line.decode(errors="replace") for line in stream),
                         daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the drain thread read what it said
                raise RuntimeError(f"server exited: {''.join(self.log)[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("server did not start in 30 s")

    def kill(self) -> None:
        """Kill the server and its worker at once, as a crash or a power cut would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # whatever of the group is left
            self.process.wait()


@pytest.fixture(scope="module")
def live_server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    """A real server on the module's database (migrated already by `engine`)."""
    server = LiveServer(settings)
    server.start()
    yield server
    server.stop()


class FreshDatabase:
    """A new, migrated database of the given kind, for tests that need one of their own."""

    def __init__(self, db_kind: str, folder: Path) -> None:
        self.db_kind = db_kind
        self.folder = folder
        self.pg_name: str | None = None
        self.engine: Engine | None = None
        self.url = ""

    def __enter__(self) -> FreshDatabase:
        if self.db_kind == "sqlite":
            self.url = f"sqlite:///{self.folder / f'db-{uuid.uuid4().hex[:8]}.db'}"
        else:
            self.pg_name = create_pg_database()
            self.url = pg_url(self.pg_name)
        self.engine = create_db_engine(DatabaseSettings(url=self.url))
        migrate(self.engine)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self.pg_name:
            drop_pg_database(self.pg_name)


@pytest.fixture
def fresh_db(db_kind: str, tmp_path: Path) -> Iterator[FreshDatabase]:
    with FreshDatabase(db_kind, tmp_path) as db:
        yield db


CHROMIUM = os.environ.get("FIELDWORK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright (Playwright cannot download browsers here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()

"""Module-scoped fixtures of the API tests: seeded data (see support.py) and a client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from server.settings import Settings
from tests.api.support import Api, Seed, seed_database
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def seed(engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    return seed_database(engine, settings, tmp_path_factory.mktemp("rejects"))


@pytest.fixture(scope="module")
def api(live_server: LiveServer, seed: Seed) -> Iterator[Api]:
    client = Api(live_server, seed)
    yield client
    client.close()

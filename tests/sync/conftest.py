"""Fixtures of the sync engine's tests: a database per module and kind (SQLite file and
PostgreSQL), holding only the sync tables and the toy domain's."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from server.db import create_db_engine, write_session
from server.settings import DatabaseSettings
from tests.sync.toy import ToyTicket, create_tables


@pytest.fixture(scope="module")
def sync_db(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(DatabaseSettings(url=database_url))
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def tx(sync_db: Engine) -> Callable[[], AbstractContextManager[Session]]:
    """A write transaction that commits on success (BEGIN IMMEDIATE on SQLite)."""
    return lambda: write_session(sync_db)


@pytest.fixture
def client_id() -> str:
    return f"client-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ticket(tx: Callable[[], AbstractContextManager[Session]]) -> ToyTicket:
    with tx() as session:
        ticket = ToyTicket(id=uuid.uuid4().hex, title="Pothole", crew="a")
        session.add(ticket)
    return ticket

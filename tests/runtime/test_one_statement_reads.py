"""One-statement reads outside a session (server/db.py): `fetch_one` on both databases, and
the SQLite reader the event loop uses for the token check, which never waits."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, bindparam, create_engine, select, text
from sqlmodel import col

from server.db import AsyncPgReader, LoopReader, create_db_engine, fetch_one, migrate, read_session, write_session
from server.models import Crew
from server.settings import DatabaseSettings
from tests.runtime.support import run_in_own_loop

_CREW = select(col(Crew.id), col(Crew.name)).where(col(Crew.name) == bindparam("name"))


def _add_crew(engine: Engine, name: str) -> int:
    with write_session(engine) as session:
        crew = Crew(name=name)
        session.add(crew)
        session.flush()
        assert crew.id is not None
        return crew.id


def test_fetch_one_reads_one_row_and_leaves_the_pool_as_it_was(engine: Engine) -> None:
    crew_id = _add_crew(engine, "fetch-one crew")
    for _ in range(engine.pool.size() + 2):  # every pooled connection, some twice
        assert fetch_one(engine, _CREW, name="fetch-one crew") == (crew_id, "fetch-one crew")
    assert fetch_one(engine, _CREW, name="nobody") is None
    # The connections it used still run transactions as sessions expect (no autocommit left).
    with write_session(engine) as session:
        session.add(Crew(name="rolled back"))
        session.flush()
        session.rollback()
    with read_session(engine) as session:
        assert session.exec(select(Crew.id).where(Crew.name == "rolled back")).first() is None


def test_the_loop_reader_is_only_for_sqlite_files(engine: Engine) -> None:
    assert (LoopReader.for_engine(engine) is None) == (engine.dialect.name != "sqlite")
    assert LoopReader.for_engine(create_engine("sqlite://")) is None
    assert LoopReader.for_engine(create_engine("sqlite:///file:shared?uri=true")) is None


def test_the_loop_reader_never_waits_and_recovers(tmp_path: Path) -> None:
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'reader.db'}"))
    migrate(engine)
    crew_id = _add_crew(engine, "loop crew")
    reader = LoopReader.for_engine(engine)
    assert reader is not None
    assert reader.fetch_one(_CREW, name="loop crew") == (crew_id, "loop crew")
    # A lock that even a WAL reader must wait for: a connection in exclusive locking mode
    # (which needs every other connection closed first).
    reader.close()
    engine.dispose()
    holder = sqlite3.connect(tmp_path / "reader.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE crew SET name = name")
    began = time.monotonic()
    with pytest.raises(sqlite3.OperationalError):
        reader.fetch_one(_CREW, name="loop crew")
    assert time.monotonic() - began < 1.0  # at once, not after the pool's 30 s busy timeout
    holder.execute("COMMIT")
    holder.close()  # its exclusive lock goes with it
    assert reader.fetch_one(_CREW, name="loop crew") == (crew_id, "loop crew")
    reader.close()
    engine.dispose()


def test_the_async_reader_reads_and_reconnects_after_its_connection_dies(engine: Engine) -> None:
    reader = AsyncPgReader.for_engine(engine)
    if engine.dialect.name != "postgresql":
        assert reader is None
        return
    assert reader is not None
    crew_id = _add_crew(engine, "async crew")

    async def scenario() -> None:
        assert await reader.fetch_one(_CREW, name="async crew") == (crew_id, "async crew")
        (connection,) = reader._idle
        with engine.connect() as admin:  # the server ends that session (a restart, an admin)
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": connection.info.backend_pid})
        with pytest.raises(psycopg.OperationalError):
            await reader.fetch_one(_CREW, name="async crew")
        assert reader._idle == []  # the broken connection is not kept
        assert await reader.fetch_one(_CREW, name="async crew") == (crew_id, "async crew")
        await reader.close()

    run_in_own_loop(scenario())

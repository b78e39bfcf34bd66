"""Database engine, sessions and migrations.

SQLite is the embedded default: WAL, a busy timeout, and write transactions opened with
``BEGIN IMMEDIATE`` so that a transaction that reads and then writes waits for the writer
lock instead of failing with SQLITE_BUSY. PostgreSQL needs none of that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Boolean, Connection, DateTime, Engine, Table, create_engine, event
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from server.settings import DatabaseSettings

__all__ = ["bulk_insert", "create_db_engine", "migrate", "read_session", "write_session", "MIGRATIONS_DIR"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_IMMEDIATE = "fieldwork_immediate"


def create_db_engine(settings: DatabaseSettings) -> Engine:
    if not settings.is_sqlite:
        return create_engine(settings.url, echo=settings.echo, pool_pre_ping=True, pool_size=10)
    _ensure_sqlite_dir(settings.url)
    engine = create_engine(
        settings.url,
        echo=settings.echo,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event issue BEGIN itself (the pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def writer(engine: Engine) -> Engine:
    """The same pool, with write transactions that take SQLite's writer lock up front."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_IMMEDIATE: True})


_SQLITE_WRITE_LOCKS: dict[str, threading.RLock] = {}


def _write_lock(engine: Engine) -> AbstractContextManager[object]:
    """On SQLite, one writer at a time in this process, queued here rather than in SQLite.

    SQLite makes a blocked writer sleep and retry (1, 2, 5 … 100 ms); with several handler
    threads that sleeping, not the work, sets the pace. A lock hands over at once.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    return _SQLITE_WRITE_LOCKS.setdefault(str(engine.url), threading.RLock())


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session for a unit of work that writes; commits on success, rolls back on error.

    Commits in the calling thread: keep the transaction inside one thread so that the
    writer lock is never held while the event loop does other work."""
    with _write_lock(engine), Session(writer(engine), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the same migrations on SQLite and PostgreSQL)."""
    command.upgrade(alembic_config(engine), revision)


def bulk_insert(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    memo: dict[datetime, str] | None = None,
) -> None:
    """Insert many rows (value tuples in `columns` order) with one driver-level executemany.

    SQLAlchemy's per-value bind processing costs more than SQLite's own insert for a city
    export, so values are converted here, a whole column at a time, exactly as the column
    types would store them (UTC datetimes, JSON text on SQLite, `Json` on PostgreSQL).
    A column that is not named is left to its database default (an id to its sequence).
    Pass one `memo` to the inserts of one batch: its rows share instants across tables.
    """
    if not rows:
        return
    dialect = connection.dialect.name
    by_name = table.columns
    memo = {} if memo is None else memo
    values: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for position, name in enumerate(columns):
        column_type = by_name[name].type
        if dialect == "sqlite" and isinstance(column_type, (UTCDateTime, DateTime)):
            values[position] = _sqlite_datetimes(values[position], memo)
        elif (convert := _converter(column_type, dialect)) is not None:
            values[position] = convert(values[position])
    mark = "?" if dialect == "sqlite" else "%s"
    quoted = ", ".join(connection.dialect.identifier_preparer.quote(n) for n in columns)
    sql = f"INSERT INTO {table.name} ({quoted}) VALUES ({', '.join([mark] * len(columns))})"  # noqa: S608
    connection.exec_driver_sql(sql, list(zip(*values)))


# Converters take and return a whole column: one call per column and batch, not per value.
_Column = Sequence[Any]


def _converter(column_type: Any, dialect: str) -> Callable[[_Column], _Column] | None:
    if isinstance(column_type, (UTCDateTime, DateTime)):
        return _aware  # PostgreSQL's driver stores aware datetimes as they are
    if isinstance(column_type, JSON):
        return _json_texts if dialect == "sqlite" else _pg_jsons
    if isinstance(column_type, Boolean) and dialect == "sqlite":
        return _sqlite_bools
    return None


def _sqlite_datetimes(column: _Column, memo: dict[datetime, str]) -> _Column:
    # A batch's rows share instants (its "now"; a request's time in its case, order and
    # events): convert each distinct one once, then look every value up without a Python
    # call per value.
    new = [value for value in set(column).difference(memo) if value is not None]
    memo.update(zip(new, _sqlite_datetime_texts(new)))
    return list(map(memo.get, column))  # None is not in the memo: it stays None


def _aware(column: _Column) -> _Column:
    for value in set(column):
        if value is not None and value.utcoffset() is None:
            raise ValueError("Datetime values must have timezone information")
    return column


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _sqlite_datetime_texts(values: list[datetime]) -> list[str]:
    """SQLAlchemy's SQLite DATETIME storage format, naive UTC to the microsecond: it compares as text.

    numpy formats a whole batch at once, several times faster than `isoformat` per value.
    """
    try:
        micros = [(value - _EPOCH) // _MICROSECOND for value in values]
    except TypeError:  # a naive datetime cannot be subtracted from an aware one
        raise ValueError("Datetime values must have timezone information") from None
    texts = np.datetime_as_string(np.array(micros, dtype="datetime64[us]")).tolist()
    return [text.replace("T", " ") for text in texts]


def _json_texts(column: _Column) -> _Column:
    # msgspec writes the same JSON as the json module, several times faster.
    encode = msgspec.json.encode
    return [None if value is None else encode(value).decode() for value in column]


def _pg_jsons(column: _Column) -> _Column:
    from psycopg.types.json import Json

    return [None if value is None else Json(value) for value in column]


def _sqlite_bools(column: _Column) -> _Column:
    return [None if value is None else int(bool(value)) for value in column]

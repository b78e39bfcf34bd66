"""Database engine, sessions and migrations.

One way to run a database session, for request handlers, background tasks and the CLI:

    with read_session(engine) as session:     # reads
        ...
    with statement_session(engine) as session:  # reads that are one statement each (no BEGIN)
        ...
    with write_session(engine) as session:    # commits at the end of the block, rolls back on error
        ...

A session is opened, committed and closed inside one `with` block, in one thread, never
across an `await`: a pooled connection is only ever held by a thread that is running. In
the server, handlers that use the database are synchronous (`sync_to_thread=True`) and run
in the app's worker threads, one per admitted request (server/admission.py); async code
hands a whole unit of work to a thread (`litestar.concurrency.sync_to_thread`). The pool has
no overflow and is sized to the threads plus a small reserve, so a request that has a thread
never waits for a connection; `pool_timeout` is only a backstop.

One exception, for the statement every authenticated request makes (the token check):
`fetch_one` runs a one-statement read on a pooled DB-API connection without SQLAlchemy's
objects around it, and on a SQLite file `LoopReader` runs it on the event loop itself, on a
connection of its own that never waits (a read that would wait goes to a thread instead).

SQLite is the embedded default: WAL, a busy timeout, and write transactions opened with
``BEGIN IMMEDIATE`` so that a transaction that reads and then writes waits for the writer
lock instead of failing with SQLITE_BUSY. PostgreSQL needs none of that.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Boolean, Connection, DateTime, Engine, Executable, Table, create_engine, event
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from server.settings import DatabaseSettings

__all__ = [
    "AsyncPgReader", "LoopReader", "bulk_insert", "create_db_engine", "fetch_one", "migrate", "one_statement", "read_session", "statement_session", "write_session",
    "writer_gate", "MIGRATIONS_DIR", "WriterGate",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_IMMEDIATE = "fieldwork_immediate"
_ONE_STATEMENT_OPTION = "fieldwork_one_statement"


def create_db_engine(settings: DatabaseSettings) -> Engine:
    pool = {"pool_size": settings.pool_size, "max_overflow": 0, "pool_timeout": settings.pool_timeout}
    if not settings.is_sqlite:
        return create_engine(settings.url, echo=settings.echo, pool_pre_ping=True, **pool)
    _ensure_sqlite_dir(settings.url)
    engine = create_engine(
        settings.url,
        echo=settings.echo,
        connect_args={"check_same_thread": False, "timeout": 30},
        **pool,
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

    gate = WriterGate.for_url(settings.url)

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        options = connection.get_execution_options()
        if options.get(_ONE_STATEMENT_OPTION, False):
            return  # a single statement runs in its own implicit transaction (one_statement)
        immediate = options.get(_IMMEDIATE, False)
        if immediate and gate is not None:
            gate.enter(connection.connection.dbapi_connection)
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                gate.leave(connection.connection.dbapi_connection)
                raise
            return
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    if gate is not None:
        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _on_end(connection) -> None:  # type: ignore[no-untyped-def]
            gate.leave(connection.connection.dbapi_connection)

    return engine


class WriterGate:
    """Lets a bulk writer in another process see that writers are waiting (SQLite).

    SQLite makes a blocked writer sleep and poll; a bulk import that takes the writer lock
    again right after each commit could keep a live server's writers waiting for its whole
    run. So every write transaction holds a shared lock on a file beside the database from
    before it asks for the writer lock until it ends (`enter`/`leave`), and the bulk writer
    calls `yield_to_writers` between its transactions: if anyone holds the shared lock, it
    waits until they are done. With nobody waiting it costs one system call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fds: dict[int, int] = {}
        self._guard = threading.Lock()

    @classmethod
    def for_url(cls, url: str) -> WriterGate | None:
        path = url.split("///", 1)[-1] if url.startswith("sqlite") else ""
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return cls(Path(f"{path}-writers.lock"))

    def _fd(self, dbapi_connection: object) -> int:
        key = id(dbapi_connection)
        with self._guard:
            if key not in self._fds:
                self._fds[key] = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            return self._fds[key]

    def enter(self, dbapi_connection: object) -> None:
        fcntl.flock(self._fd(dbapi_connection), fcntl.LOCK_SH)

    def leave(self, dbapi_connection: object) -> None:
        fd = self._fds.get(id(dbapi_connection))
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def yield_to_writers(self, timeout: float = 5.0) -> bool:
        """Wait (at most `timeout` s) until no other write transaction is waiting or running;
        True if some were."""
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return False
            except BlockingIOError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                time.sleep(0.002)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
            return True
        finally:
            os.close(fd)  # closing releases the lock


def writer_gate(engine: Engine) -> WriterGate | None:
    """The engine's gate (SQLite files only)."""
    return WriterGate.for_url(str(engine.url)) if engine.dialect.name == "sqlite" else None


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


_ONE_STATEMENT: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def one_statement(engine: Engine) -> Engine:
    """The same pool, for reads that are each a single statement (the token check, a list page).

    No transaction around them: one statement is its own consistent snapshot, and on
    PostgreSQL `BEGIN` and `ROLLBACK` would each cost a round trip to the server (on SQLite,
    two more statements). Two statements on it see two snapshots: use `read_session` for
    reads that must agree with each other.
    """
    variant = _ONE_STATEMENT.get(engine)
    if variant is None:
        options: dict[str, Any] = {_ONE_STATEMENT_OPTION: True}
        if engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        variant = _ONE_STATEMENT[engine] = engine.execution_options(**options)
    return variant


_COMPILED: dict[tuple[str, int], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}


def fetch_one(engine: Engine, statement: Executable, **params: Any) -> tuple[Any, ...] | None:
    """The first row of a read that is one statement, run on the pooled DB-API connection itself.

    For the statement every authenticated request makes (the token check): no SQLAlchemy
    connection, transaction or result objects around it (they cost several times the query
    on SQLite). Like `one_statement`, no transaction: on PostgreSQL the connection is in
    autocommit for this statement and back in its usual mode before it returns to the pool.
    Values come back as the driver gives them: plain numbers and text only.
    """
    sql, order, constants = _compiled(engine, statement)
    values: Any = {**constants, **params}
    if order is not None:
        values = [values[name] for name in order]
    connection = engine.raw_connection()  # from the pool (pre-pinged on PostgreSQL)
    try:
        autocommit = engine.dialect.name == "postgresql"
        if autocommit:
            connection.driver_connection.autocommit = True  # type: ignore[union-attr]
        try:
            cursor = connection.cursor()
            cursor.execute(sql, values)
            row = cursor.fetchone()
            cursor.close()
        finally:
            if autocommit:
                connection.driver_connection.autocommit = False  # type: ignore[union-attr]
    finally:
        connection.close()  # back to the pool
    return tuple(row) if row is not None else None


class LoopReader:
    """A SQLite connection of its own for one-statement reads made on the event loop itself.

    The token check is a read of a few index entries (microseconds on SQLite). Handing it to
    a worker thread costs far more than the read: the hop, and the event loop and the thread
    taking turns at the interpreter lock. So on a SQLite file it runs on the loop, on this
    connection (not the pool's: a pooled connection is only held by a running thread, see
    above). It never waits: no busy timeout, so a read that would have to wait (a WAL reader
    finding no free read mark, a recovery in progress) raises `sqlite3.OperationalError` at
    once, and the caller does it in a thread with the pool's patience instead. Readers never
    wait for writers in WAL mode, so that is rare.
    """

    def __init__(self, engine: Engine, path: str) -> None:
        self.engine = engine
        self.path = path
        self._connection: sqlite3.Connection | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> LoopReader | None:
        """A reader for a SQLite file; None for PostgreSQL and in-memory SQLite."""
        if engine.dialect.name != "sqlite":
            return None
        path = engine.url.database or ""
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return cls(engine, path)

    def fetch_one(self, statement: Executable, **params: Any) -> tuple[Any, ...] | None:
        """`fetch_one` on this connection; sqlite3.OperationalError instead of waiting."""
        sql, order, constants = _compiled(self.engine, statement)
        values = {**constants, **params}
        if self._connection is None:
            # Autocommit (each statement its own transaction); no busy handler: never wait.
            self._connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            row = self._connection.execute(sql, [values[name] for name in order or ()]).fetchone()
        except sqlite3.OperationalError:
            self.close()  # a fresh connection next time
            raise
        return tuple(row) if row is not None else None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class AsyncPgReader:
    """A few PostgreSQL connections of its own for one-statement reads awaited on the event loop.

    The token check on PostgreSQL is one round trip; in a worker thread it also costs the
    hop and the event loop and the thread taking turns at the interpreter lock, more than the
    round trip itself. Here it is awaited on the loop (psycopg's async connection, autocommit:
    one statement, its own snapshot), on at most `size` connections of its own, opened when
    first needed. Any error closes the connection it happened on and is raised: the caller
    then does the read in a thread, on the pool, as before.
    """

    def __init__(self, engine: Engine, size: int = 2, timeout_seconds: float = 2.0) -> None:
        self.engine = engine
        self.timeout_seconds = timeout_seconds
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.size = size
        self._idle: list[Any] = []
        self._slots: asyncio.Semaphore | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> AsyncPgReader | None:
        return cls(engine) if engine.dialect.name == "postgresql" else None

    async def fetch_one(self, statement: Executable, **params: Any) -> tuple[Any, ...] | None:
        import psycopg

        sql, _, constants = _compiled(self.engine, statement)  # psycopg's named parameters
        values = {**constants, **params}
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            # Bounded: a database that stops answering must not hold every signed-in request
            # here; past the timeout the caller takes the pool's way (with its own backstop).
            async with asyncio.timeout(self.timeout_seconds):
                connection = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True)
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    cursor = await connection.execute(sql, values)
                    row = await cursor.fetchone()
            except BaseException:
                await connection.close()
                raise
            self._idle.append(connection)
        return tuple(row) if row is not None else None

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


def _compiled(engine: Engine, statement: Executable) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
    key = (engine.dialect.name, id(statement))
    compiled = _COMPILED.get(key)
    if compiled is None:
        done = statement.compile(dialect=engine.dialect)  # type: ignore[attr-defined]
        order = tuple(done.positiontup) if done.positional else None
        compiled = _COMPILED[key] = (str(done), order, dict(done.params))
    return compiled


@contextmanager
def statement_session(engine: Engine) -> Iterator[Session]:
    """A read session for work that is one statement (see `one_statement`)."""
    with Session(one_statement(engine), expire_on_commit=False) as session:
        yield session


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema to `revision` (the same migrations on SQLite and PostgreSQL).

    "heads": independent branches of migrations (each area's tables) may stand side by
    side until a merge revision joins them."""
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
    connection.exec_driver_sql(sql, list(zip(*values, strict=False)))


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
    memo.update(zip(new, _sqlite_datetime_texts(new), strict=False))
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

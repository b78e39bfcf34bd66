"""Sync benchmark: crews' phones pushing and pulling over real HTTP, on SQLite and PostgreSQL.

For each database kind, a real Hypercorn server (`server.app:create_app()`, one worker by
default) on loopback, a database seeded with real LA records (../shared/data/311), crews of
crew users, and simulated phones (asyncio + one httpx.AsyncClient, one connection, each).
Prints:

1. push: `note` mutations/s acknowledged with N concurrent clients (10 crews x 5 users by
   default), each client pushing batches of 20 notes on its own work orders, back to back,
   for a fixed time; only mutations acknowledged (last_seq) inside the window count;
2. one client's 500 queued notes until acknowledged, on an idle server: as one push of
   500, and as the PWA sends them (pwa/sync/client.js: sequential pushes of at most 100);
3. pull: a fresh device priming from an empty cursor (limit 500 until has_more is false)
   in the scope of a crew that was assigned thousands of work orders; changes/s;
4. in the same run, two ceilings: (a) a bare SQLAlchemy Core executemany, on the same
   database, of exactly the rows one `note` mutation writes (the rows are counted before
   and after one push, and printed): per mutation one work_order UPDATE (version,
   updated_at), one work_order_event INSERT, two sync_change INSERTs (dispatch and crew
   scope), one sync_mutation INSERT, and per push one sync_client UPDATE (last_seq); in
   transactions of one push's size, and in transactions of 500 for context; (b) GET
   /healthz requests/s from the same N clients on the same server (and from N bare
   asyncio-socket clients, since httpx's own CPU cost can be the limit there);
5. ratios against the targets: push mutations/s / ceiling (>= 30%), pull changes/s /
   ceiling (>= 50%), and mutations/s / (healthz requests/s x batch) for context.

A phase whose requests stall (no answer within 20 s) is reported as STALLED and the server
is restarted before the next phase.

Also CPU use during each window (server process tree, this process, whole machine): the
load generator shares the machine's cores with the server and the database.

    .venv/bin/python bench/sync.py [--db sqlite|postgres|both] [--clients 50] [--seconds 10]
                                   [--batch 20] [--workers 1] [--pull-orders 5000]

Traffic goes to 127.0.0.1 only. Servers are stopped, the PostgreSQL database dropped and
temporary files deleted on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from sqlalchemy import Engine, bindparam, func, insert, select, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.auth.passwords import hash_password  # noqa: E402
from server.auth.tokens import issue_token  # noqa: E402
from server.db import create_db_engine, migrate, write_session, writer  # noqa: E402
from server.demo import default_data_dir  # noqa: E402
from server.intake.areas import load_areas  # noqa: E402
from server.intake.importer import import_file  # noqa: E402
from server.models import Crew, User, WorkOrder, WorkOrderEvent  # noqa: E402
from server.settings import AuthSettings, DatabaseSettings, IntakeSettings, Settings  # noqa: E402
from server.workorders.changes import DISPATCH_SCOPE, Actor, assign, crew_scope  # noqa: E402
from sync.models import SyncChange, SyncClient, SyncConflict, SyncMutation, SyncRejection  # noqa: E402

PG_ADMIN_URL = os.environ.get("FIELDWORK_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
LA_AREAS = ("la/boundaries/la_city_council_districts_2012.geojson", "council_district", "name", "name")
LA_RECORDS = "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
TIMEZONE = "America/Los_Angeles"
USERS_PER_CREW = 5
ORDERS_PER_CLIENT = 4  # each client notes its own jobs: no two clients wait on one row lock
PWA_BATCH = 100  # pwa/sync/client.js MAX_BATCH
PULL_LIMIT = 500
SEED_ACTOR = Actor(None, "bench", "api")
TARGET_PUSH, TARGET_PULL = 0.30, 0.50
WRITTEN_TABLES = (WorkOrderEvent, SyncChange, SyncMutation, SyncRejection, SyncConflict)
CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT = 20.0  # a request slower than this counts as stalled (SQLite's busy_timeout is 30 s)


# -- databases and the server ---------------------------------------------------------------


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A new database URL of `kind`, removed afterwards (the SQLite file goes with `folder`)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'fieldwork-bench.db'}"
        return
    name = f"fieldwork_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """Hypercorn serving `create_app()` on loopback, configured by FIELDWORK_* variables."""

    def __init__(self, settings: Settings, workers: int, log_path: Path) -> None:
        self.settings = settings
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update({
            "FIELDWORK_DATABASE_URL": self.settings.database.url,
            "FIELDWORK_AUTH_SECRET": self.settings.auth.secret,
            "FIELDWORK_TIMEZONE": self.settings.intake.timezone,
            "FIELDWORK_PUBLIC_URL": self.url,
            "FIELDWORK_MIGRATE_ON_START": "0",  # migrated already; workers must not race on it
        })
        command = [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}",
                   "--log-level", "WARNING"]
        if self.workers != 1:
            command += ["--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C reaches only this script, which then stops it in order.
            self.process = subprocess.Popen([*command, "server.app:create_app()"], cwd=ROOT, env=env,
                                            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        with httpx.Client(trust_env=False, timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log_tail()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    time.sleep(0.1)
        raise RuntimeError(f"server did not start in 30 s: {self.log_tail()}")

    def restart(self) -> None:
        """Stop (killing it if it does not stop) and start again on a new port."""
        self.stop()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM to the main process stops every worker
            try:
                self.process.wait(timeout=5)  # a stalled server does not stop gracefully
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# -- CPU accounting -------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def tree_cpu(pid: int) -> float:
    return _proc_cpu(pid) + sum(tree_cpu(child) for child in _children(pid))


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK, sum(values[:8]) / CLK_TCK


@dataclass
class CpuWindow:
    server_pid: int
    start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    wall: float = 0.0
    usage: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def begin(self) -> None:
        busy, total = machine_busy()
        times = os.times()
        self.start = (tree_cpu(self.server_pid), times.user + times.system, busy, total)
        self.wall = time.perf_counter()

    def end(self) -> None:
        busy, total = machine_busy()
        times = os.times()
        wall = time.perf_counter() - self.wall
        server, me, busy0, total0 = self.start
        cores = os.cpu_count() or 1
        self.usage = ((tree_cpu(self.server_pid) - server) / wall, (times.user + times.system - me) / wall,
                      (busy - busy0) / max(total - total0, 1e-9) * cores)

    def describe(self) -> str:
        server, me, machine = self.usage
        return (f"CPU, in cores of {os.cpu_count()}: server {server:.2f}, bench clients {me:.2f}, the rest"
                f" (database, other jobs on the machine) {max(machine - server - me, 0):.2f}")


# -- seeding --------------------------------------------------------------------------------


@dataclass
class Phone:
    """A simulated crew phone: a user's token, its own client id, outbox and jobs."""

    token: str
    crew_id: int
    orders: list[int]
    client_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:16]}")
    next_seq: int = 1
    outbox: list[dict[str, Any]] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def fill(self, size: int) -> None:
        while len(self.outbox) < size:
            uid = uuid.uuid4().hex
            self.outbox.append({
                "seq": self.next_seq, "mid": uid, "name": "note",
                "args": {"work_order_id": random.choice(self.orders), "uid": uid,
                         "text": f"checked on site, note {self.next_seq}"},
                "device_ts": datetime.now(UTC).isoformat(),
            })
            self.next_seq += 1

    def body(self, count: int) -> bytes:
        return msgspec.json.encode({"client_id": self.client_id, "schema_version": 1,
                                    "mutations": self.outbox[:count]})

    def acknowledge(self, last_seq: int) -> int:
        before = len(self.outbox)
        self.outbox = [m for m in self.outbox if m["seq"] > last_seq]
        return before - len(self.outbox)


@dataclass
class Seeded:
    phones: list[Phone]
    pull_token: str
    pull_crew_id: int
    pull_assigned: int
    user_ids: list[int]


def seed(engine: Engine, settings: Settings, data: Path, folder: Path, *, clients: int,
         pull_orders: int) -> Seeded:
    load_areas(engine, data / LA_AREAS[0], layer=LA_AREAS[1], name_field=LA_AREAS[2], code_field=LA_AREAS[3])
    import_file(engine, data / LA_RECORDS, settings=IntakeSettings(timezone=TIMEZONE), rejects_dir=folder)
    password_hash = hash_password("a-long-bench-password")  # argon2 once, shared by every user
    crew_count = max(1, -(-clients // USERS_PER_CREW))
    with write_session(engine) as session:
        crews = [Crew(name=f"bench-crew-{i:02d}") for i in range(crew_count)]
        pull_crew = Crew(name="bench-pull-crew")
        session.add_all([*crews, pull_crew])
        session.flush()
        users = [User(username=f"bench-{i // USERS_PER_CREW:02d}-{i % USERS_PER_CREW}",
                      password_hash=password_hash, role="crew", crew_id=crews[i // USERS_PER_CREW].id)
                 for i in range(clients)]
        pull_user = User(username="bench-pull", password_hash=password_hash, role="crew",
                         crew_id=pull_crew.id)
        session.add_all([*users, pull_user])
        session.flush()
        wanted = clients * ORDERS_PER_CLIENT
        orders = session.execute(
            select(WorkOrder).where(WorkOrder.crew_id.is_(None))  # type: ignore[union-attr]
            .order_by(WorkOrder.is_open.desc(), WorkOrder.id).limit(wanted)  # type: ignore[attr-defined]
        ).scalars().all()
        if len(orders) < wanted:
            raise RuntimeError(f"only {len(orders)} work orders for {wanted} client jobs")
        phones = []
        for index, user in enumerate(users):
            mine = orders[index * ORDERS_PER_CLIENT:(index + 1) * ORDERS_PER_CLIENT]
            for order in mine:
                assign(session, order, crew_id=user.crew_id, actor=SEED_ACTOR)
            phones.append(Phone(issue_token(settings, user).token, user.crew_id,  # type: ignore[arg-type]
                                [o.id for o in mine]))  # type: ignore[misc]
        pull_token = issue_token(settings, pull_user).token
        user_ids = [u.id for u in users]
    # Thousands of jobs for one crew, in a few transactions, through the normal path.
    assigned = 0
    while assigned < pull_orders:
        with write_session(engine) as session:
            chunk = session.execute(
                select(WorkOrder).where(WorkOrder.crew_id.is_(None)).order_by(WorkOrder.id)  # type: ignore[union-attr]
                .limit(min(1000, pull_orders - assigned))
            ).scalars().all()
            for order in chunk:
                assign(session, order, crew_id=pull_crew.id, actor=SEED_ACTOR)
        if not chunk:
            break
        assigned += len(chunk)
    return Seeded(phones, pull_token, pull_crew.id, assigned, user_ids)  # type: ignore[arg-type]


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows of the tables a push can write, the sum of work-order versions, sync clients."""
    with engine.connect() as conn:
        counts = {model.__tablename__: conn.execute(select(func.count()).select_from(model)).scalar_one()
                  for model in WRITTEN_TABLES}  # type: ignore[attr-defined]
        counts["work_order UPDATE (version + 1)"] = conn.execute(select(func.sum(WorkOrder.version))).scalar_one()
        counts["sync_client"] = conn.execute(select(func.count()).select_from(SyncClient)).scalar_one()
    return counts


# -- load -----------------------------------------------------------------------------------


@dataclass
class Window:
    """Counts of what completed between `start` and `end` (perf_counter seconds)."""

    start: float = float("inf")
    end: float = float("inf")
    requests: int = 0
    acked: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    stalled: int = 0

    @property
    def healthy(self) -> bool:
        return not self.errors and not self.stalled and self.requests > 0

    def trouble(self) -> str:
        parts = [f"{n} x {name}" for name, n in self.errors.most_common()]
        if self.stalled:
            parts.append(f"{self.stalled} clients still waiting for an answer {REQUEST_TIMEOUT + 2:.0f} s after the window")
        return "; ".join(parts)

    def inside(self, moment: float) -> bool:
        return self.start <= moment < self.end


def new_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=REQUEST_TIMEOUT,
                             limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


async def push_loop(url: str, phone: Phone, batch: int, window: Window, stop: asyncio.Event) -> None:
    async with new_client(url) as http:
        await _push_loop(http, phone, batch, window, stop)


async def _push_loop(http: httpx.AsyncClient, phone: Phone, batch: int, window: Window,
                     stop: asyncio.Event) -> None:
    while not stop.is_set():
        phone.fill(batch)
        started = time.perf_counter()
        try:
            response = await http.post("/sync/v1/push", content=phone.body(batch), headers=phone.headers)
        except httpx.HTTPError as exc:
            window.errors[f"{type(exc).__name__} after {time.perf_counter() - started:.0f} s"] += 1
            continue
        done = time.perf_counter()
        if response.status_code != 200:
            if window.inside(done):
                window.errors[f"HTTP {response.status_code}"] += 1
            await asyncio.sleep(0.05)
            continue
        answer = msgspec.json.decode(response.content)
        acked = phone.acknowledge(answer["last_seq"])
        if window.inside(done):
            window.requests += 1
            window.acked += acked
            window.latencies.append(done - started)
            for result in answer["results"]:
                window.statuses[result["status"]] += 1
                if result["status"] == "rejected":
                    window.reasons[result.get("reason") or ""] += 1


async def health_loop(url: str, window: Window, stop: asyncio.Event) -> None:
    async with new_client(url) as http:
        await _health_loop(http, window, stop)


async def raw_health_loop(port: int, window: Window, stop: asyncio.Event) -> None:
    """GET /healthz over one keep-alive connection with bare asyncio streams: a client far
    lighter than httpx, to see the server's own limit when httpx's CPU is the bottleneck."""
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    writer: asyncio.StreamWriter | None = None
    try:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                # The server closed the connection (or did not answer): count it, reconnect.
                if window.inside(time.perf_counter()):
                    window.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                continue
            done = time.perf_counter()
            if window.inside(done):
                if head[9:12] == b"200":
                    window.requests += 1
                    window.latencies.append(done - started)
                else:
                    window.errors[f"HTTP {head[9:12].decode()}"] += 1
    finally:
        if writer is not None:
            writer.close()


async def _health_loop(http: httpx.AsyncClient, window: Window, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            response = await http.get("/healthz")
        except httpx.HTTPError as exc:
            window.errors[f"{type(exc).__name__} after {time.perf_counter() - started:.0f} s"] += 1
            continue
        done = time.perf_counter()
        if window.inside(done):
            if response.status_code == 200:
                window.requests += 1
                window.latencies.append(done - started)
            else:
                window.errors[f"HTTP {response.status_code}"] += 1


async def drive(server: Server, loops: list[Callable[[Window, asyncio.Event], Awaitable[None]]],
                warmup: float, seconds: float) -> tuple[Window, CpuWindow]:
    """Run the client loops: `warmup` seconds uncounted, then a `seconds` window; then wait
    for the requests in flight (a request still unanswered after REQUEST_TIMEOUT is stalled)."""
    window = Window()
    cpu = CpuWindow(server.process.pid)  # type: ignore[union-attr]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(loop(window, stop)) for loop in loops]
    try:
        await asyncio.sleep(warmup)
        cpu.begin()
        window.start = time.perf_counter()
        window.end = window.start + seconds
        await asyncio.sleep(seconds)
        cpu.end()
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 2)
        window.stalled = len(pending)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return window, cpu


def quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {cuts[49] * 1000:.0f} ms, p95 {cuts[94] * 1000:.0f} ms"


async def queued_push(server: Server, phone: Phone, total: int, per_push: int) -> tuple[float, int]:
    """Seconds until `total` queued notes are all acknowledged, sending `per_push` at a time."""
    phone.fill(total)
    target = phone.next_seq - 1
    acked = 0
    async with new_client(server.url) as http:
        started = time.perf_counter()
        while phone.outbox:
            response = await http.post("/sync/v1/push", content=phone.body(per_push), headers=phone.headers)
            response.raise_for_status()
            last_seq = msgspec.json.decode(response.content)["last_seq"]
            acked += phone.acknowledge(last_seq)
        elapsed = time.perf_counter() - started
    assert acked == total and last_seq == target
    return elapsed, acked


async def prime(server: Server, token: str) -> tuple[float, int, int, Counter[str]]:
    """A fresh device pulling from an empty cursor: (seconds, changes, pages, entities)."""
    body: dict[str, Any] = {"client_id": f"bench-pull-{uuid.uuid4().hex[:12]}", "cursor": None,
                            "limit": PULL_LIMIT}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    changes = pages = 0
    entities: Counter[str] = Counter()
    async with new_client(server.url) as http:
        started = time.perf_counter()
        while True:
            response = await http.post("/sync/v1/pull", content=msgspec.json.encode(body), headers=headers)
            response.raise_for_status()
            answer = msgspec.json.decode(response.content)
            pages += 1
            changes += len(answer["changes"])
            entities.update(change["entity"] for change in answer["changes"])
            body["cursor"] = answer["cursor"]
            if not answer["has_more"]:
                break
        elapsed = time.perf_counter() - started
    return elapsed, changes, pages, entities


# -- the insert ceiling ---------------------------------------------------------------------


def insert_ceiling(engine: Engine, seeded: Seeded, *, per_txn: int, seconds: float,
                   mutations: int) -> tuple[int, float]:
    """Bare SQLAlchemy Core: the rows of `mutations` notes, `per_txn` notes a transaction.

    Per note: UPDATE work_order (version + 1, updated_at), INSERT work_order_event, INSERT
    two sync_change rows (dispatch and crew scope), INSERT sync_mutation; per transaction:
    UPDATE sync_client (last_seq, last_seen_at). Values are built before the clock starts.
    Stops after `seconds` if it has not run out of notes.
    """
    orders = [(order, phone.crew_id) for phone in seeded.phones for order in phone.orders]
    client_id = f"bench-ceiling-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    events, changes, results = [], [], []
    bumps = []
    for seq in range(1, mutations + 1):
        order_id, crew_id = orders[seq % len(orders)]
        uid = uuid.uuid4().hex
        text = f"checked on site, note {seq}"
        bumps.append({"b_id": order_id, "b_now": now})
        events.append({"uid": uid, "work_order_id": order_id, "version": seq, "kind": "note",
                       "from_status": None, "to_status": None, "data": {"text": text}, "channel": "sync",
                       "actor_user_id": seeded.user_ids[0], "actor": "crew:1:bench-00-0",
                       "occurred_at": now, "recorded_at": now})
        for scope in (DISPATCH_SCOPE, crew_scope(crew_id)):
            changes.append({"scope": scope, "entity": "work_order", "entity_id": str(order_id), "op": "upsert",
                            "version": seq, "recorded_at": now})
        results.append({"client_id": client_id, "seq": seq, "mid": uid, "name": "note",
                        "args": {"work_order_id": order_id, "uid": uid, "text": text}, "device_ts": now,
                        "received_at": now, "status": "applied", "result": {"event_uid": uid},
                        "reason": None, "server_version": seq})
    work_order = WorkOrder.__table__  # type: ignore[attr-defined]
    bump = (update(work_order).where(work_order.c.id == bindparam("b_id"))
            .values(version=work_order.c.version + 1, updated_at=bindparam("b_now")))
    add_event = insert(WorkOrderEvent.__table__)  # type: ignore[attr-defined]
    add_change = insert(SyncChange.__table__)  # type: ignore[attr-defined]  # txid from its default, as sync.feed
    add_result = insert(SyncMutation.__table__)  # type: ignore[attr-defined]
    client_table = SyncClient.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(insert(client_table).values(client_id=client_id, user_key=str(seeded.user_ids[0]),
                                                 last_seq=0, schema_version=1, app_version="",
                                                 created_at=now, last_seen_at=now))
    set_last_seq = (update(client_table).where(client_table.c.client_id == client_id)
                    .values(last_seq=bindparam("b_seq"), last_seen_at=bindparam("b_now")))
    done = 0
    started = time.perf_counter()
    while done < mutations and time.perf_counter() - started < seconds:
        part = slice(done, min(done + per_txn, mutations))
        with writer(engine).begin() as conn:  # BEGIN IMMEDIATE on SQLite, as the server does
            conn.execute(bump, bumps[part])
            conn.execute(add_event, events[part])
            conn.execute(add_change, changes[part.start * 2:part.stop * 2])
            conn.execute(add_result, results[part])
            conn.execute(set_last_seq, {"b_seq": part.stop, "b_now": now})
        done = part.stop
    return done, time.perf_counter() - started


# -- one database kind ----------------------------------------------------------------------


def run_kind(kind: str, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    say = lambda text="": print(text, flush=True)  # noqa: E731
    figures: dict[str, float] = {}
    with ExitStack() as stack:
        url = stack.enter_context(database(kind, folder))
        settings = Settings(database=DatabaseSettings(url=url), auth=AuthSettings(secret=uuid.uuid4().hex * 2),
                            intake=IntakeSettings(timezone=TIMEZONE))
        engine = create_db_engine(settings.database)
        stack.callback(engine.dispose)
        started = time.perf_counter()
        migrate(engine)
        seeded = seed(engine, settings, args.data, folder, clients=args.clients, pull_orders=args.pull_orders)
        crews = -(-args.clients // USERS_PER_CREW)
        say(f"== {kind}: seeded in {time.perf_counter() - started:.1f} s: {len(seeded.phones)} clients"
            f" ({crews} crews x {USERS_PER_CREW} users, {ORDERS_PER_CLIENT} own jobs each),"
            f" {seeded.pull_assigned:,} jobs assigned to the pull crew")
        server = Server(settings, args.workers, folder / f"server-{kind}.log")
        stack.callback(server.stop)
        server.start()
        say(f"server: Hypercorn on {server.url}, {args.workers} worker(s)")

        # What one note mutation writes: count rows around one push of a batch.
        before = row_counts(engine)
        probe = seeded.phones[0]
        asyncio.run(queued_push(server, probe, args.batch, args.batch))
        after = row_counts(engine)
        delta = {name: after[name] - before[name] for name in before}
        per_note = {name: value / args.batch for name, value in delta.items() if value and name != "sync_client"}
        say(f"rows written by one push of {args.batch} notes, per note: "
            + ", ".join(f"{name} {value:g}" for name, value in per_note.items())
            + f"; per push: sync_client +{delta['sync_client']} (a new client; after that an UPDATE of its"
            " last_seq)")

        # 1. Push throughput.
        loops = [partial(push_loop, server.url, phone, args.batch) for phone in seeded.phones]
        window, cpu = asyncio.run(drive(server, loops, args.warmup, args.seconds))
        push_rate = window.acked / args.seconds
        figures["push"] = push_rate
        figures["push_requests"] = window.requests / args.seconds
        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(window.statuses.items()))
        say(f"push: {window.acked:,} notes acknowledged in {args.seconds:g} s by {args.clients} clients"
            f" ({args.batch} a push) = {push_rate:,.0f} mutations/s; {window.requests / args.seconds:,.1f}"
            f" pushes/s, latency {quantiles(window.latencies)}; results: {statuses}")
        if window.reasons:
            say(f"  rejection reasons: {dict(window.reasons.most_common(3))}")
        say(f"  {cpu.describe()}")
        if not window.healthy:
            say(f"  STALLED: {window.trouble()}; server log: {server.log_tail()[-300:]!r}")
            say("  restarting the server")
            server.restart()

        # 2. One client's 500 queued notes, idle server.
        crew_phone = seeded.phones[-1]
        timings = {}
        for label, per_push in ((f"one push of {args.queued}", args.queued),
                                (f"PWA batching ({PWA_BATCH} a push, sequential)", PWA_BATCH)):
            runs = []
            try:
                for _ in range(3):
                    phone = Phone(crew_phone.token, crew_phone.crew_id, crew_phone.orders)  # a fresh client
                    runs.append(asyncio.run(queued_push(server, phone, args.queued, per_push))[0])
            except httpx.HTTPError as exc:
                say(f"{args.queued} queued notes, {label}: FAILED ({type(exc).__name__}); restarting the server")
                server.restart()
                timings[label] = float("nan")
                continue
            timings[label] = statistics.median(runs)
            say(f"{args.queued} queued notes acknowledged, {label}: {statistics.median(runs):.2f} s"
                f" (median of 3: {', '.join(f'{r:.2f}' for r in runs)}) = {args.queued / statistics.median(runs):,.0f}"
                " mutations/s")
        figures["queued_one"] = timings[f"one push of {args.queued}"]
        figures["queued_pwa"] = timings[f"PWA batching ({PWA_BATCH} a push, sequential)"]

        # 3. Pull: a fresh device priming.
        with engine.connect() as conn:
            scopes = [crew_scope(seeded.pull_crew_id), "reference"]
            feed_rows = conn.execute(select(func.count()).select_from(SyncChange)
                                     .where(SyncChange.scope.in_(scopes))).scalar_one()  # type: ignore[attr-defined]
        pulls = [asyncio.run(prime(server, seeded.pull_token)) for _ in range(2)]
        best = min(pulls, key=lambda p: p[0])
        pull_rate = best[1] / best[0]
        figures["pull"] = pull_rate
        say(f"pull: a fresh device primed with {best[1]:,} changes ({dict(best[3])}) from {feed_rows:,} feed rows"
            f" in {best[2]} pages of <= {PULL_LIMIT}: {best[0]:.2f} s = {pull_rate:,.0f} changes/s"
            f" (best of 2: {', '.join(f'{p[0]:.2f} s' for p in pulls)})")

        # 4b. Trivial endpoint, same clients (and a lighter client, for the server's own limit).
        health_seconds = max(2.0, args.seconds / 2)
        warm = min(1.0, args.warmup)
        window, cpu = asyncio.run(drive(server, [partial(health_loop, server.url)] * args.clients, warm,
                                        health_seconds))
        health_rate = window.requests / health_seconds
        figures["health"] = health_rate
        say(f"ceiling (b): GET /healthz, {args.clients} httpx clients: {health_rate:,.0f} requests/s,"
            f" latency {quantiles(window.latencies)}" + ("" if window.healthy else f"; {window.trouble()}"))
        say(f"  {cpu.describe()}")
        window, cpu = asyncio.run(drive(server, [partial(raw_health_loop, server.port)] * args.clients, warm,
                                        health_seconds))
        figures["health_raw"] = window.requests / health_seconds
        say(f"  the same with {args.clients} bare asyncio-socket clients: {figures['health_raw']:,.0f} requests/s,"
            f" latency {quantiles(window.latencies)}" + ("" if window.healthy else f"; {window.trouble()}"))
        say(f"  {cpu.describe()}")
        server.stop()

        # 4a. Bare Core executemany of the same rows, same database, server stopped.
        for per_txn, key in ((args.batch, "ceiling"), (PULL_LIMIT, "ceiling_big")):
            done, seconds = insert_ceiling(engine, seeded, per_txn=per_txn, seconds=3.0,
                                           mutations=args.ceiling_mutations)
            figures[key] = done / seconds
            say(f"ceiling (a): bare SQLAlchemy Core executemany of {done:,} notes' rows ({done * 5:,} rows +"
                f" {-(-done // per_txn):,} sync_client updates), {per_txn} notes a transaction:"
                f" {seconds:.2f} s = {done / seconds:,.0f} mutations/s ({done * 5 / seconds:,.0f} rows/s)")

        say(f"push / ceiling (a, {args.batch} a transaction): {push_rate / figures['ceiling']:.0%}"
            f" (target >= {TARGET_PUSH:.0%}); / ceiling (a, {PULL_LIMIT} a transaction):"
            f" {push_rate / figures['ceiling_big']:.0%}")
        say(f"pull / ceiling (a, {args.batch} a transaction): {pull_rate / figures['ceiling']:.0%}"
            f" (target >= {TARGET_PULL:.0%}); / ceiling (a, {PULL_LIMIT} a transaction):"
            f" {pull_rate / figures['ceiling_big']:.0%}")
        trivial = max(health_rate, figures["health_raw"], 1e-9)
        say(f"push / (healthz requests/s x {args.batch}): {push_rate / (trivial * args.batch):.1%}"
            f" (healthz: the better of the two clients, {trivial:,.0f}/s)")
        say()
    return figures


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="push window (healthz: half of it)")
    parser.add_argument("--warmup", type=float, default=1.5, help="uncounted seconds before each window")
    parser.add_argument("--batch", type=int, default=20, help="notes a push")
    parser.add_argument("--queued", type=int, default=500, help="one client's queue (at most 500)")
    parser.add_argument("--workers", type=int, default=1, help="Hypercorn workers")
    parser.add_argument("--pull-orders", type=int, default=5000, help="jobs assigned to the pull crew")
    parser.add_argument("--ceiling-mutations", type=int, default=20_000)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C does
    print(f"sync benchmark: {args.clients} clients, {args.batch} notes a push, {args.seconds:g} s windows,"
          f" {args.workers} Hypercorn worker(s), {os.cpu_count()} cores", flush=True)
    results: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="fieldwork-bench-") as tmp:
            for kind in kinds:
                results[kind] = run_kind(kind, args, Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, databases dropped, temporary files removed", flush=True)
        return 130
    print(f"summary ({time.perf_counter() - started:.0f} s)")
    print(f"  {'':8} {'push mut/s':>10} {'ceiling(a)':>10} {'ratio':>5} {'pull ch/s':>9} {'ratio':>5}"
          f" {'healthz/s httpx|raw':>19} {'500: 1 push|PWA':>16}")
    for kind, f in results.items():
        print(f"  {kind:8} {f['push']:>10,.0f} {f['ceiling']:>10,.0f} {f['push'] / f['ceiling']:>5.0%}"
              f" {f['pull']:>9,.0f} {f['pull'] / f['ceiling']:>5.0%} {f['health']:>9,.0f} {f['health_raw']:>9,.0f}"
              f" {f['queued_one']:>7.2f}s {f['queued_pwa']:>7.2f}s")
    print(f"  targets: push >= {TARGET_PUSH:.0%} and pull >= {TARGET_PULL:.0%} of ceiling (a) in transactions"
          f" of {args.batch} notes; for scale, PowerSync 2,000-4,000 ops/s and ElectricSQL 4,000-6,000"
          " changes/s on server-class machines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

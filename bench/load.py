"""Load benchmark: a city's morning against `fieldwork serve`, on SQLite and PostgreSQL.

For each database kind and worker count, a real server started as a user starts it
(`python -m server.cli serve --workers N`, the `fieldwork serve` command) on loopback, a
database seeded with real LA records (../shared/data/311), 200 crew phones, 10 dispatchers
and 20 residents. Three phases of `--seconds` each, all at the same concurrency (230
clients, each its own keep-alive connection):

1. ceiling: every client loops on `GET /healthz` (no database, no authentication);
2. list: every client loops on `GET /api/workorders?limit=50` as a dispatcher, with a
   filter drawn per request (status, district, service type, priority, open only, a
   second page): the work-order list's rate against the ceiling (target >= 25 %, p99 < 1 s);
3. a morning: each phone syncs back to back (push 3 notes on its crew's jobs, then pull
   from its cursor), each dispatcher lists and filters, each resident reads Open311
   (`requests.json` pages, one request by id, `services.json`).

Per endpoint: requests/s, p50 and p99 latency, error answers (anything but 2xx, 503 with
Retry-After included; a client told 503 waits as told) and timeouts (no answer in
`--timeout` s); the server's memory (RSS of all its processes) at the start and the end of
each configuration; the CPU the server, these clients and the rest of the machine used.

The clients speak HTTP/1.1 over asyncio streams by hand (Content-Length framing, keep-alive),
so that the load generator, which shares the 2 cores with the server, costs little. The
machine is shared with other work: compare rates within one run, not across runs.

    .venv/bin/python bench/load.py [--db sqlite|postgres|both] [--workers 1,2]
                                   [--seconds 15] [--crews 200] [--dispatchers 10] [--residents 20]
                                   [--mornings 1]  (more: the morning again on the same server)

Traffic goes to 127.0.0.1 only, bounded in clients and time. Servers are stopped, the
PostgreSQL database dropped and temporary files deleted on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from sqlalchemy import Engine, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.auth.passwords import hash_password  # noqa: E402
from server.auth.tokens import issue_token  # noqa: E402
from server.db import create_db_engine, migrate, write_session  # noqa: E402
from server.demo import default_data_dir  # noqa: E402
from server.intake.areas import load_areas  # noqa: E402
from server.intake.importer import import_file  # noqa: E402
from server.models import Case, Crew, District, ServiceType, User, WorkOrder  # noqa: E402
from server.settings import AuthSettings, DatabaseSettings, IntakeSettings, Settings  # noqa: E402
from server.workorders.changes import Actor, assign  # noqa: E402

PG_ADMIN_URL = os.environ.get("FIELDWORK_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
LA_AREAS = ("la/boundaries/la_city_council_districts_2012.geojson", "council_district", "name", "name")
LA_RECORDS = ("la/records/la_myla311_2020-01-01_2020-01-03.csv.gz", "la/records/la_myla311_2018-12-27_2018-12-31.csv.gz")
TIMEZONE = "America/Los_Angeles"
USERS_PER_CREW = 5
ORDERS_PER_PHONE = 5
NOTES_PER_PUSH = 3
SEED_ACTOR = Actor(None, "bench", "api")
TARGET_LIST_RATIO, TARGET_LIST_P99 = 0.25, 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- databases, seeding and the server --------------------------------------------------------


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A new database URL of `kind`, removed afterwards (the SQLite file goes with `folder`)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'fieldwork-load.db'}"
        return
    name = f"fieldwork_load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Seeded:
    phones: list[tuple[str, list[int]]]  # (token, the crew's work-order ids)
    dispatchers: list[str]  # tokens
    districts: list[int]
    service_codes: list[str]
    request_ids: list[str]  # Open311 service_request_ids (our case ids)


def seed(engine: Engine, settings: Settings, data: Path, folder: Path, *, phones: int, dispatchers: int) -> Seeded:
    load_areas(engine, data / LA_AREAS[0], layer=LA_AREAS[1], name_field=LA_AREAS[2], code_field=LA_AREAS[3])
    for records in LA_RECORDS:
        import_file(engine, data / records, settings=IntakeSettings(timezone=TIMEZONE), rejects_dir=folder)
    password_hash = hash_password("a-long-bench-password")  # argon2 once, shared by every user
    crew_count = -(-phones // USERS_PER_CREW)
    with write_session(engine) as session:
        crews = [Crew(name=f"load-crew-{i:03d}") for i in range(crew_count)]
        session.add_all(crews)
        session.flush()
        users = [User(username=f"load-{i:03d}", password_hash=password_hash, role="crew",
                      crew_id=crews[i // USERS_PER_CREW].id) for i in range(phones)]
        desks = [User(username=f"desk-{i:02d}", password_hash=password_hash, role="dispatcher")
                 for i in range(dispatchers)]
        session.add_all([*users, *desks])
        session.flush()
        wanted = crew_count * USERS_PER_CREW * ORDERS_PER_PHONE
        orders = session.execute(
            select(WorkOrder).where(WorkOrder.crew_id.is_(None))  # type: ignore[union-attr]
            .order_by(WorkOrder.is_open.desc(), WorkOrder.id).limit(wanted)  # type: ignore[attr-defined]
        ).scalars().all()
        if len(orders) < wanted:
            raise RuntimeError(f"only {len(orders)} work orders for {wanted} crew jobs")
        per_crew = len(orders) // crew_count
        crew_orders: dict[int, list[int]] = {}
        for index, crew in enumerate(crews):
            mine = orders[index * per_crew:(index + 1) * per_crew]
            for order in mine:
                assign(session, order, crew_id=crew.id, actor=SEED_ACTOR)
            crew_orders[crew.id] = [o.id for o in mine]  # type: ignore[index, misc]
        seeded = Seeded(
            phones=[(issue_token(settings, u).token, crew_orders[u.crew_id]) for u in users],  # type: ignore[index]
            dispatchers=[issue_token(settings, d).token for d in desks],
            districts=list(session.execute(select(District.id).where(District.primary)).scalars()),
            service_codes=list(session.execute(select(ServiceType.code)).scalars()),
            request_ids=[str(r) for r in session.execute(select(Case.id).limit(500)).scalars()],
        )
    return seeded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`fieldwork serve --workers N` on loopback, configured by FIELDWORK_* variables."""

    def __init__(self, settings: Settings, workers: int, log_path: Path) -> None:
        self.settings = settings
        self.workers = workers
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update({
            "FIELDWORK_DATABASE_URL": self.settings.database.url,
            "FIELDWORK_AUTH_SECRET": str(self.settings.auth.secret),
            "FIELDWORK_TIMEZONE": TIMEZONE,
            "FIELDWORK_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
        })
        command = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C reaches only this script, which then stops it in order.
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
                                            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        time.sleep(1.0 if self.workers > 1 else 0.2)  # let every worker come up
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start in 60 s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM to the main process stops every worker
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# -- the server's processes: memory and CPU ----------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def process_tree(pid: int) -> list[int]:
    return [pid, *(p for child in _children(pid) for p in process_tree(child))]


def tree_rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        with suppress(OSError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE_SIZE
    return total / 2**20


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            pass
    return total


def machine_busy() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


# -- a small HTTP/1.1 client ------------------------------------------------------------------


class Timeout(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection to the server, reopened after an error."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: str = "", body: bytes | None = None
                      ) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            async with asyncio.timeout(self.timeout):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                assert self.reader is not None
                self.writer.write(head.encode() + b"\r\n" + (body or b""))
                status_line, *lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                fields = dict(line.split(": ", 1) for line in lines if ": " in line)
                fields = {k.lower(): v for k, v in fields.items()}
                content = await self.reader.readexactly(int(fields.get("content-length", "0")))
                if fields.get("connection", "").lower() == "close":
                    self.close()
                return int(status_line.split(" ", 2)[1]), fields, content
        except TimeoutError:
            self.close()
            raise Timeout() from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)

    def rows(self, seconds: float) -> list[tuple[str, float, float, float, int, int]]:
        rows = []
        for name in sorted(set(self.latencies) | set(self.errors) | set(self.timeouts)):
            values = sorted(self.latencies.get(name, []))
            p50 = values[len(values) // 2] if values else float("nan")
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))] if values else float("nan")
            errors = sum(n for key, n in self.errors.items() if key.startswith(f"{name} "))
            rows.append((name, len(values) / seconds, p50, p99, errors, self.timeouts[name]))
        return rows


# A client step gets the client's state and returns (endpoint name, method, path, headers, body).
Step = Callable[[dict[str, Any]], tuple[str, str, str, str, bytes | None]]
AfterStep = Callable[[dict[str, Any], str, int, bytes], None]


async def run_clients(port: int, clients: list[tuple[Step, dict[str, Any]]], *, seconds: float, timeout: float,
                      after: AfterStep | None = None) -> Stats:
    stats = Stats()
    start = time.monotonic()
    deadline = start + seconds

    async def client(step: Step, state: dict[str, Any]) -> None:
        connection = Connection(port, timeout)
        await asyncio.sleep(random.random() * 0.2)  # do not start in lockstep
        while time.monotonic() < deadline:
            name, method, path, headers, body = step(state)
            began = time.monotonic()
            try:
                status, fields, content = await connection.request(method, path, headers, body)
            except Timeout:
                stats.timeouts[name] += 1
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                stats.errors[f"{name} {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            if began >= deadline:
                break
            if 200 <= status < 300:
                stats.latencies[name].append(time.monotonic() - began)
                if after is not None:
                    after(state, name, status, content)
            else:
                stats.errors[f"{name} {status}"] += 1
                if status == 503:  # wait as told, but not past the end of the run
                    await asyncio.sleep(min(float(fields.get("retry-after", "1")), max(0.0, deadline - time.monotonic())))
        connection.close()

    await asyncio.gather(*(client(step, state) for step, state in clients))
    return stats


# -- what the clients do ------------------------------------------------------------------------


def healthz(_: dict[str, Any]) -> tuple[str, str, str, str, bytes | None]:
    return "GET /healthz", "GET", "/healthz", "", None


def dispatcher_list(seeded: Seeded) -> Step:
    def step(state: dict[str, Any]) -> tuple[str, str, str, str, bytes | None]:
        filters = random.choice([
            "", "&status=new,assigned", f"&district_id={random.choice(seeded.districts)}",
            f"&service_code={random.choice(seeded.service_codes)}", "&priority=2", "&open_only=true",
            "&overdue=true",
        ])
        cursor = state.pop("cursor", None)
        query = f"&cursor={cursor}" if cursor else filters
        return "GET /api/workorders", "GET", f"/api/workorders?limit=50{query}", state["auth"], None
    return step


def remember_cursor(state: dict[str, Any], name: str, status: int, content: bytes) -> None:
    if name == "GET /api/workorders" and random.random() < 0.2:  # sometimes read the next page
        state["cursor"] = msgspec.json.decode(content).get("next_cursor")
    elif name == "POST /sync/v1/pull":
        state["cursor"] = msgspec.json.decode(content)["cursor"]
    elif name == "POST /sync/v1/push":
        state["acked"] = msgspec.json.decode(content)["last_seq"]


def phone(orders: list[int]) -> Step:
    def step(state: dict[str, Any]) -> tuple[str, str, str, str, bytes | None]:
        state["turn"] = turn = state.get("turn", 0) + 1
        if turn % 2:
            first = state.get("acked", 0) + 1
            notes = [{"seq": seq, "mid": f"{state['client_id']}-{seq}", "name": "note",
                      "args": {"work_order_id": random.choice(orders), "uid": f"{state['client_id']}-{seq}",
                               "text": f"checked on site, note {seq}"},
                      "device_ts": datetime.now(UTC).isoformat()} for seq in range(first, first + NOTES_PER_PUSH)]
            body = {"client_id": state["client_id"], "schema_version": 1, "mutations": notes}
            return "POST /sync/v1/push", "POST", "/sync/v1/push", state["auth"], msgspec.json.encode(body)
        body = {"client_id": state["client_id"], "cursor": state.get("cursor"), "limit": 200}
        return "POST /sync/v1/pull", "POST", "/sync/v1/pull", state["auth"], msgspec.json.encode(body)
    return step


def resident(seeded: Seeded) -> Step:
    def step(_: dict[str, Any]) -> tuple[str, str, str, str, bytes | None]:
        kind = random.random()
        if kind < 0.6:
            page = random.randint(1, 3)
            return ("GET open311 requests.json", "GET",
                    f"/open311/v2/requests.json?status=open&page_size=50&page={page}", "", None)
        if kind < 0.9:
            return ("GET open311 requests/{id}", "GET",
                    f"/open311/v2/requests/{random.choice(seeded.request_ids)}.json", "", None)
        return "GET open311 services.json", "GET", "/open311/v2/services.json", "", None
    return step


def bearer(token: str) -> str:
    return f"Authorization: Bearer {token}\r\n"


# -- a run ----------------------------------------------------------------------------------------


def measure(server: Server, clients: list[tuple[Step, dict[str, Any]]], args: argparse.Namespace,
            after: AfterStep | None = None) -> tuple[Stats, str]:
    assert server.process is not None
    pid = server.process.pid
    cpu_server, times, busy, wall = tree_cpu(pid), os.times(), machine_busy(), time.monotonic()
    stats = asyncio.run(run_clients(server.port, clients, seconds=args.seconds, timeout=args.timeout, after=after))
    wall = time.monotonic() - wall
    mine = (os.times().user + os.times().system - times.user - times.system) / wall
    server_cores = (tree_cpu(pid) - cpu_server) / wall
    rest = max(0.0, (machine_busy() - busy) / wall - server_cores - mine)
    return stats, f"CPU in cores: server {server_cores:.2f}, clients {mine:.2f}, the rest of the machine {rest:.2f}"


def profile_server(server: Server, args: argparse.Namespace, label: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server through the list phase (`--profile DIR`): collapsed stacks."""
    if args.profile is None or server.process is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"list-{label}.txt"
    print(f"  (profiling the list phase into {out.name})")
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.process.pid), "--subprocesses",
         "--duration", str(int(args.seconds)), "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def print_rows(stats: Stats, seconds: float, *, ceiling: float | None = None) -> None:
    for name, rate, p50, p99, errors, timeouts in stats.rows(seconds):
        ratio = f"  {rate / ceiling:5.0%} of healthz" if ceiling else ""
        print(f"    {name:<30} {rate:8,.0f} req/s   p50 {p50 * 1000:6.0f} ms   p99 {p99 * 1000:6.0f} ms"
              f"   errors {errors}   timeouts {timeouts}{ratio}")
    for key, count in sorted(stats.errors.items()):
        print(f"      error: {key} x{count}")


def run_configuration(kind: str, workers: int, seeded: Seeded, settings: Settings, folder: Path,
                      args: argparse.Namespace) -> dict[str, Any]:
    server = Server(settings, workers, folder / f"server-{kind}-{workers}.log")
    server.start()
    try:
        assert server.process is not None
        rss_start = tree_rss_mb(server.process.pid)
        clients_total = args.crews + args.dispatchers + args.residents
        label = "PostgreSQL" if kind == "postgres" else "SQLite"
        print(f"\n{label}, {workers} worker{'s' if workers > 1 else ''}, {clients_total} clients,"
              f" {args.seconds:g} s a phase")

        ceiling_stats, cpu = measure(server, [(healthz, {}) for _ in range(clients_total)], args)
        ceiling = ceiling_stats.rows(args.seconds)[0][1]
        rss_warm = tree_rss_mb(server.process.pid)
        print(f"  1. ceiling ({cpu})")
        print_rows(ceiling_stats, args.seconds)

        desks = [bearer(t) for t in seeded.dispatchers]
        step = dispatcher_list(seeded)
        profiler = profile_server(server, args, f"{kind}-{workers}")
        list_stats, cpu = measure(server, [(step, {"auth": desks[i % len(desks)]}) for i in range(clients_total)],
                                  args, after=remember_cursor)
        if profiler is not None:
            profiler.wait(timeout=args.seconds + 30)
        print(f"  2. work-order list, 50 rows, filters ({cpu})")
        print_rows(list_stats, args.seconds, ceiling=ceiling)
        _, list_rate, _, list_p99, list_errors, list_timeouts = list_stats.rows(args.seconds)[0]

        run = uuid.uuid4().hex[:8]
        morning: list[tuple[Step, dict[str, Any]]] = [
            (phone(orders), {"auth": bearer(token), "client_id": f"load-{run}-{i:03d}"})
            for i, (token, orders) in enumerate(seeded.phones[:args.crews])
        ]
        morning += [(step, {"auth": desks[i % len(desks)]}) for i in range(args.dispatchers)]
        morning += [(resident(seeded), {}) for _ in range(args.residents)]
        morning_stats, cpu = measure(server, morning, args, after=remember_cursor)
        print(f"  3. a morning: {args.crews} phones syncing, {args.dispatchers} dispatchers, {args.residents}"
              f" residents ({cpu})")
        print_rows(morning_stats, args.seconds)
        errors = sum(morning_stats.errors.values()) + sum(list_stats.errors.values())
        timeouts = sum(morning_stats.timeouts.values()) + sum(list_stats.timeouts.values())
        for round_ in range(2, args.mornings + 1):  # more mornings on the same server: is memory flat?
            rss_before = tree_rss_mb(server.process.pid)
            again, _ = measure(server, morning, args, after=remember_cursor)
            errors += sum(again.errors.values())
            timeouts += sum(again.timeouts.values())
            rates = ", ".join(f"{name.split()[-1]} {rate:,.0f}/s" for name, rate, *_ in again.rows(args.seconds))
            print(f"  3.{round_} the morning again: RSS {rss_before:.0f} -> {tree_rss_mb(server.process.pid):.0f} MB;"
                  f" {rates}; errors {sum(again.errors.values())}, timeouts {sum(again.timeouts.values())}")
        rss_end = tree_rss_mb(server.process.pid)
        verdict = (list_rate / ceiling >= TARGET_LIST_RATIO and list_p99 < TARGET_LIST_P99 and errors == 0
                   and timeouts == 0)
        print(f"  server memory (RSS, all processes): {rss_start:.0f} MB at the start, {rss_warm:.0f} MB after the"
              f" ceiling phase, {rss_end:.0f} MB at the end")
        print(f"  targets (list >= {TARGET_LIST_RATIO:.0%} of healthz, list p99 < {TARGET_LIST_P99:g} s, 0 errors,"
              f" 0 timeouts): {'met' if verdict else 'MISSED'}")
        if list_errors or list_timeouts or errors or timeouts:
            print(f"  server log tail:\n{server.log_tail()}")
        return {"kind": kind, "workers": workers, "ceiling": ceiling, "list": list_rate, "list_p99": list_p99,
                "errors": errors, "timeouts": timeouts, "rss": (rss_start, rss_warm, rss_end), "met": verdict}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts (default 1,2)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--crews", type=int, default=200, help="crew phones syncing")
    parser.add_argument("--dispatchers", type=int, default=10)
    parser.add_argument("--residents", type=int, default=20)
    parser.add_argument("--mornings", type=int, default=1, help="run the morning phase this many times (memory)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds without an answer that count as a timeout")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a folder: py-spy samples the server during the list phase (collapsed stacks)")
    parser.add_argument("--data", type=Path, default=None, help="the folder of 311 data (default ../shared/data/311)")
    args = parser.parse_args()
    data = args.data or default_data_dir()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    worker_counts = [int(w) for w in args.workers.split(",")]
    print(f"bench/load.py on {os.cpu_count()} cores (load average now {os.getloadavg()[0]:.1f}: the machine is shared)")
    results = []
    with tempfile.TemporaryDirectory(prefix="fieldwork-load-") as tmp:
        folder = Path(tmp)
        for kind in kinds:
            with database(kind, folder) as url:
                settings = Settings(database=DatabaseSettings(url=url), auth=AuthSettings(secret=uuid.uuid4().hex * 2),
                                    intake=IntakeSettings(timezone=TIMEZONE))
                engine = create_db_engine(settings.database)
                migrate(engine)
                began = time.monotonic()
                seeded = seed(engine, settings, data, folder, phones=args.crews, dispatchers=args.dispatchers)
                engine.dispose()
                print(f"\nseeded {kind} in {time.monotonic() - began:.0f} s: {len(seeded.phones)} phones,"
                      f" {len(seeded.dispatchers)} dispatchers")
                for workers in worker_counts:
                    results.append(run_configuration(kind, workers, seeded, settings, folder, args))
    print("\nsummary")
    for r in results:
        print(f"  {r['kind']:<8} {r['workers']} worker(s): healthz {r['ceiling']:,.0f}/s, list {r['list']:,.0f}/s"
              f" ({r['list'] / r['ceiling']:.0%}), list p99 {r['list_p99'] * 1000:.0f} ms, errors {r['errors']},"
              f" timeouts {r['timeouts']}, RSS {r['rss'][0]:.0f} / {r['rss'][1]:.0f} / {r['rss'][2]:.0f} MB:"
              f" {'met' if r['met'] else 'MISSED'}")
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

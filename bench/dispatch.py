"""Dispatcher console benchmark: the board (list) and map endpoints with 100,000 work orders,
against the same rows read with one bare SQL query and encoded with msgspec, in the same run.

1. seed: LA's real council districts and MyLA311 records (../shared/data/311), the work
   orders then repeated under new ids (and numbers) until there are `--orders` of them;
2. a real server (`fieldwork serve`, one worker) on loopback; `--clients` concurrent
   dispatchers, each its own keep-alive connection (bench/load.py's small HTTP client):
   - board: `GET /api/dispatch/board?limit=100` with a filter drawn per request (open only,
     a status, a crew, a district, a service type, emergency, overdue), `--seconds`; and again
     with a side client changing priorities back to back (the board's cache then misses);
   - map: `GET /api/dispatch/map?open_only=true`, a whole city's open work, `--seconds`;
     (answers are cached by the change-feed position: also measured with a write between
     every read by a side client, which makes most reads miss the cache);
3. the ceiling: the same rows as each endpoint, read by one bare SQL query on a plain DB-API
   connection and encoded with msgspec, in a loop in `--clients` threads of one process
   (what a server with no framework, no auth and no pool would do), `--seconds` each;
4. the first screen in Chromium: sign-in token set, `/dispatch/` until markers are drawn and
   the list is filled, against a static page of the same bytes served from disk by the same
   kind of server (plain static files), median of `--screens` loads each, the two pages
   loaded in turns (and each pair's own ratio shown), so that the machine's load moving
   during the run weighs on both alike.

    .venv/bin/python bench/dispatch.py [--db sqlite|postgres|both] [--orders 100000]
                                       [--clients 50] [--seconds 10] [--screens 5]
                                       [--board-only | --screen-only]

Traffic goes to 127.0.0.1 only; servers stopped, the PostgreSQL database dropped and temporary
files deleted on exit. The machine is shared: compare figures within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from sqlalchemy import Engine, func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load import Server, bearer, database, measure, print_rows  # noqa: E402

from server.auth.passwords import hash_password  # noqa: E402
from server.auth.tokens import issue_token  # noqa: E402
from server.db import create_db_engine, migrate, write_session  # noqa: E402
from server.demo import default_data_dir  # noqa: E402
from server.intake.areas import load_areas  # noqa: E402
from server.intake.importer import import_file  # noqa: E402
from server.models import Crew, District, ServiceType, User, WorkOrder  # noqa: E402
from server.settings import AuthSettings, DatabaseSettings, IntakeSettings, Settings  # noqa: E402

LA_AREAS = ("la/boundaries/la_city_council_districts_2012.geojson", "council_district", "name", "name")
LA_RECORDS = "la/records/la_myla311_2018-12-27_2018-12-31.csv.gz"
TIMEZONE = "America/Los_Angeles"
SECRET = "bench-dispatch-secret-" + "x" * 30
TARGET = 0.5


# -- seeding -----------------------------------------------------------------------------------


def seed(engine: Engine, data: Path, folder: Path, orders: int) -> dict[str, Any]:
    load_areas(engine, data / LA_AREAS[0], layer=LA_AREAS[1], name_field=LA_AREAS[2], code_field=LA_AREAS[3])
    import_file(engine, data / LA_RECORDS, settings=IntakeSettings(timezone=TIMEZONE), rejects_dir=folder)
    table = WorkOrder.__table__  # type: ignore[attr-defined]
    columns = [c.name for c in table.columns]
    with write_session(engine) as session:
        crews = [Crew(name=f"bench-crew-{i}", capacity=40) for i in range(8)]
        session.add_all(crews)
        desk = User(username="bench-desk", password_hash=hash_password("bench desk password"), role="dispatcher")
        session.add(desk)
        session.flush()
        base = session.execute(select(func.max(table.c.id))).scalar_one()
        count = session.execute(select(func.count()).select_from(table)).scalar_one()
        copies = 0
        # Real records repeated under new ids: every copy keeps the original's place, type,
        # dates and status; open copies are spread over the crews.
        while count < orders:
            copies += 1
            offset = copies * base
            picked = ", ".join(
                f"id + {offset}" if c == "id" else
                f"'B{copies}-' || number" if c == "number" else
                f"CASE WHEN is_open THEN {crews[copies % len(crews)].id} ELSE crew_id END" if c == "crew_id" else
                "CASE WHEN is_open THEN 'assigned' ELSE status END" if c == "status" else c
                for c in columns
            )
            limit = orders - count
            session.execute(text(
                f"INSERT INTO work_order ({', '.join(columns)}) SELECT {picked} FROM work_order "
                f"WHERE id <= :base ORDER BY id LIMIT :limit"
            ), {"base": base, "limit": limit})
            count = session.execute(select(func.count()).select_from(table)).scalar_one()
        if engine.dialect.name == "postgresql":
            session.execute(text("SELECT setval(pg_get_serial_sequence('work_order', 'id'), (SELECT max(id) FROM work_order))"))
        settings = bench_settings(str(engine.url.render_as_string(hide_password=False)))
        token = issue_token(settings, desk).token
        seeded = {
            "count": count,
            "token": token,
            "crews": [c.id for c in crews],
            "districts": list(session.execute(select(District.id).where(District.primary)).scalars()),
            "services": list(session.execute(select(ServiceType.code)).scalars()),
        }
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
        else:
            connection.execute(text("ANALYZE"))
        connection.commit()
    return seeded


def bench_settings(url: str) -> Settings:
    return Settings(database=DatabaseSettings(url=url), auth=AuthSettings(secret=SECRET),
                    intake=IntakeSettings(timezone=TIMEZONE))


# -- what the clients ask ----------------------------------------------------------------------


def board_filters(seeded: dict[str, Any], rng: random.Random) -> dict[str, str]:
    choice = rng.randrange(7)
    if choice == 0:
        return {"open_only": "true"}
    if choice == 1:
        return {"status": rng.choice(["new", "assigned", "completed"])}
    if choice == 2:
        return {"crew_id": str(rng.choice(seeded["crews"])), "open_only": "true"}
    if choice == 3:
        return {"district_id": str(rng.choice(seeded["districts"])), "open_only": "true"}
    if choice == 4:
        return {"service_code": rng.choice(seeded["services"])}
    if choice == 5:
        return {"emergency": "true"}
    return {"overdue": "true"}


def query(params: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


def board_step(seeded: dict[str, Any]):  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    auth = bearer(seeded["token"])

    def step(_: dict[str, Any]) -> tuple[str, str, str, str, bytes | None]:
        return "board", "GET", f"/api/dispatch/board?limit=100&{query(board_filters(seeded, rng))}", auth, None

    return step


def map_step(seeded: dict[str, Any], open_only: bool = True):  # type: ignore[no-untyped-def]
    auth = bearer(seeded["token"])
    name, path = ("map (open, city-wide)", "/api/dispatch/map?open_only=true") if open_only else (
        "map (every order)", "/api/dispatch/map")

    def step(_: dict[str, Any]) -> tuple[str, str, str, str, bytes | None]:
        return name, "GET", path, auth, None

    return step


def writer_step(seeded: dict[str, Any], ids: list[int]):  # type: ignore[no-untyped-def]
    """A dispatcher changing priorities: every change moves the feed (the map's cache key)."""
    auth = bearer(seeded["token"])
    rng = random.Random(2)

    def step(_: dict[str, Any]) -> tuple[str, str, str, str, bytes | None]:
        body = msgspec.json.encode({"priority": rng.randint(1, 4)})
        return "priority change", "PATCH", f"/api/dispatch/workorders/{rng.choice(ids)}", auth, body

    return step


# -- the ceiling: bare SQL + msgspec -----------------------------------------------------------

BOARD_SQL = """SELECT w.id, w.number, w.status, w.priority, w.emergency, w.is_open, w.service_code, s.name,
 w.address, w.district_id, d.name, w.crew_id, c.name, w.lat, w.lon, w.case_count, w.first_reported_at,
 w.sla_due_at, w.route_position, w.version
 FROM work_order w JOIN service_type s ON s.code = w.service_code LEFT JOIN district d ON d.id = w.district_id
 LEFT JOIN crew c ON c.id = w.crew_id WHERE w.deleted_at IS NULL AND {where} ORDER BY w.id DESC LIMIT 101"""
BOARD_KEYS = ("id", "number", "status", "priority", "emergency", "is_open", "service_code", "service_name", "address",
              "district_id", "district_name", "crew_id", "crew_name", "lat", "lon", "case_count", "first_reported_at",
              "sla_due_at", "route_position", "version")
MAP_SQL = """SELECT id, lat, lon, status, priority,
 (CASE WHEN emergency THEN 1 ELSE 0 END) + (CASE WHEN is_open AND sla_due_at < {mark} THEN 2 ELSE 0 END),
 crew_id, service_code FROM work_order WHERE deleted_at IS NULL {open} ORDER BY id"""


def bare_where(params: dict[str, str], mark: str) -> tuple[str, list[Any]]:
    now = datetime.now(UTC)
    if "open_only" in params and len(params) == 1:
        return "w.is_open", []
    if "status" in params:
        return f"w.status = {mark}", [params["status"]]
    if "crew_id" in params:
        return f"w.crew_id = {mark} AND w.is_open", [int(params["crew_id"])]
    if "district_id" in params:
        return f"w.district_id = {mark} AND w.is_open", [int(params["district_id"])]
    if "service_code" in params:
        return f"w.service_code = {mark}", [params["service_code"]]
    if "emergency" in params:
        return "w.emergency", []
    return f"w.is_open AND w.sla_due_at IS NOT NULL AND w.sla_due_at < {mark}", [now]


def ceiling(url: str, seeded: dict[str, Any], kind: str, threads: int, seconds: float) -> tuple[float, float, float]:
    """Requests per second (and p50, p99 in s) of `kind` ("board", "map" or "map-all") done bare."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    encoder = msgspec.json.Encoder()

    def connect() -> Any:
        if url.startswith("sqlite"):
            connection = sqlite3.connect(url.removeprefix("sqlite:///"), check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            return connection, "?"
        return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")), "%s"

    def worker(seed_value: int) -> None:
        connection, mark = connect()
        rng = random.Random(seed_value)
        mine: list[float] = []
        while time.monotonic() < deadline:
            began = time.monotonic()
            if kind == "board":
                where, args = bare_where(board_filters(seeded, rng), mark)
                rows = connection.execute(BOARD_SQL.format(where=where), args).fetchall()
                body = encoder.encode({"items": [dict(zip(BOARD_KEYS, row, strict=True)) for row in rows[:100]],
                                       "next_cursor": None})
            else:
                sql = MAP_SQL.format(open="AND is_open" if kind == "map" else "", mark=mark)
                rows = connection.execute(sql, [datetime.now(UTC)]).fetchall()
                columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(8)]
                body = encoder.encode({"count": len(rows), "id": columns[0], "lat": columns[1], "lon": columns[2],
                                       "status": columns[3], "priority": columns[4], "flags": columns[5],
                                       "crew": columns[6], "service": columns[7]})
            assert body
            mine.append(time.monotonic() - began)
        connection.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    latencies.sort()
    return (len(latencies) / seconds, latencies[len(latencies) // 2],
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))])


# -- the first screen in Chromium --------------------------------------------------------------


FIRST_SCREEN_PROBE = """(() => {
  const check = () => {
    const map = document.getElementById("map");
    if (map && Number(map.dataset.markers) > 0 && Number(map.dataset.drawn) > 0
        && document.querySelector("#board tbody tr")) {
      console.debug(`fieldwork-first-screen ${performance.now()}`);
      return;
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})();"""


def first_screen(port: int, token: str, loads: int, folder: Path, args_verbose: bool = False
                 ) -> tuple[float, float, int, list[float]]:
    """Median ms until the console's markers are drawn and its list filled, and the same for
    a static page of the same bytes from plain static files; the bytes; and each pair's ratio.

    The two pages are loaded in turns (console, static, console, …), so that a change in the
    machine's load weighs on both alike; the first console load (it warms the server's caches
    and gives the byte count) is not counted."""
    import http.server
    import socketserver

    from playwright.sync_api import Browser, sync_playwright

    def console_load(browser: Browser, n: int) -> tuple[float, int]:
        context = browser.new_context(viewport={"width": 1500, "height": 900})
        context.add_init_script(f"sessionStorage.setItem('fieldwork.dispatch.token', {msgspec.json.encode(token).decode()})")
        page = context.new_page()
        sizes: list[int] = []

        def count(request: Any) -> None:
            with contextlib.suppress(Exception):  # a late request of a closed page: not counted
                sizes.append(request.sizes()["responseBodySize"])

        page.on("requestfinished", count)
        # The page itself notes the first frame with the markers drawn (the map's canvas sets
        # data-drawn once it has drawn them) and the list filled, and says so on its console:
        # Playwright's polling (wait_for_function, evaluate) would run its own scripts on the
        # page's main thread while it loads, which the static page does not pay.
        noted: list[float] = []
        page.on("console", lambda message: noted.append(float(message.text.split()[1]))
                if message.text.startswith("fieldwork-first-screen ") else None)
        page.add_init_script(FIRST_SCREEN_PROBE)
        page.goto(f"http://127.0.0.1:{port}/dispatch/")
        deadline = time.monotonic() + 120
        while not noted:
            if time.monotonic() > deadline:
                raise TimeoutError("the console's first screen did not appear in 120 s")
            page.wait_for_timeout(50)
        if n == 1:
            marks = page.evaluate("performance.getEntriesByType('mark').map(m => m.name + ' ' + Math.round(m.startTime))")
            print(f"    (one console load: {', '.join(marks)}, first screen {noted[0]:.0f} ms)")
            if args_verbose:
                for entry in page.evaluate("performance.getEntriesByType('resource').map(e => [e.name.split('/').slice(-2).join('/'), Math.round(e.startTime), Math.round(e.responseStart), Math.round(e.responseEnd)])"):
                    print("     ", *entry)
        page.wait_for_timeout(300)
        context.close()
        return noted[0], sum(sizes)

    def static_load(browser: Browser, static_port: int) -> float:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{static_port}/index.html")
        elapsed = float(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
        page.close()
        return elapsed

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder / "static"), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    console_times: list[float] = []
    static_times: list[float] = []
    with sync_playwright() as playwright:
        # No map tiles: they come from another host, and are the same for any page. Their names
        # resolve to nothing (a route() would intercept every request of the page, the
        # console's own included, and add a round trip through this script to each).
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP *.openstreetmap.org ~NOTFOUND"])
        _, total_bytes = console_load(browser, 0)
        # A static page of the same size: one HTML file with the bytes in a comment.
        (folder / "static").mkdir(exist_ok=True)
        (folder / "static" / "index.html").write_text(
            "<!doctype html><title>static</title><p id=done>ok</p><!--" + "x" * total_bytes + "-->")
        with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Quiet) as httpd:
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            static_load(browser, httpd.server_address[1])  # its first load is not counted either
            for n in range(1, loads + 1):
                console_times.append(console_load(browser, n)[0])
                static_times.append(static_load(browser, httpd.server_address[1]))
            httpd.shutdown()
        browser.close()
    ratios = [c / max(s, 1) for c, s in zip(console_times, static_times, strict=True)]
    return statistics.median(console_times), statistics.median(static_times), total_bytes, ratios


# -- a run --------------------------------------------------------------------------------------


def load_phases(server: Server, url: str, seeded: dict[str, Any], some_open: list[int], args: argparse.Namespace) -> None:
    measure_args = argparse.Namespace(seconds=args.seconds, timeout=args.timeout)
    board_ceiling = ceiling(url, seeded, "board", args.clients, args.seconds)
    stats, cpu = measure(server, [(board_step(seeded), {}) for _ in range(args.clients)], measure_args)
    print(f"  board, 100 rows, a filter drawn per request ({cpu})")
    print_rows(stats, args.seconds)
    rate = stats.rows(args.seconds)[0][1]
    print(f"    ceiling: bare SQL + msgspec          {board_ceiling[0]:8,.0f} req/s   p50 {board_ceiling[1] * 1000:6.0f} ms"
          f"   p99 {board_ceiling[2] * 1000:6.0f} ms   -> endpoint at {rate / board_ceiling[0]:.0%} of it"
          f" (target {TARGET:.0%})")
    # Answers are cached by the change-feed position: with a client changing priorities back
    # to back, most reads see a new position and read the database.
    clients = [(board_step(seeded), {}) for _ in range(args.clients - 1)] + [(writer_step(seeded, some_open), {})]
    stats, cpu = measure(server, clients, measure_args)
    print(f"  board while one client changes priorities back to back (the cache misses after each change; {cpu})")
    print_rows(stats, args.seconds)
    rate = next(r[1] for r in stats.rows(args.seconds) if r[0] == "board")
    print(f"    -> board at {rate / board_ceiling[0]:.0%} of its ceiling")
    if args.board_only:
        return

    map_ceiling = ceiling(url, seeded, "map", args.clients, args.seconds)
    stats, cpu = measure(server, [(map_step(seeded), {}) for _ in range(args.clients)], measure_args)
    print(f"  map, every open work order ({cpu})")
    print_rows(stats, args.seconds)
    rate = stats.rows(args.seconds)[0][1]
    print(f"    ceiling: bare SQL + msgspec          {map_ceiling[0]:8,.0f} req/s   p50 {map_ceiling[1] * 1000:6.0f} ms"
          f"   p99 {map_ceiling[2] * 1000:6.0f} ms   -> endpoint at {rate / map_ceiling[0]:.0%} of it"
          f" (target {TARGET:.0%})")
    clients = [(map_step(seeded), {}) for _ in range(args.clients - 1)] + [(writer_step(seeded, some_open), {})]
    stats, cpu = measure(server, clients, measure_args)
    print(f"  map while one client changes priorities back to back (the cache misses after each change; {cpu})")
    print_rows(stats, args.seconds)
    rate = next(r[1] for r in stats.rows(args.seconds) if r[0].startswith("map"))
    print(f"    -> map at {rate / map_ceiling[0]:.0%} of its ceiling")

    all_ceiling = ceiling(url, seeded, "map-all", args.clients, args.seconds)
    stats, cpu = measure(server, [(map_step(seeded, open_only=False), {}) for _ in range(args.clients)],
                         measure_args)
    print(f"  map, every work order ({seeded['count']:,} points; {cpu})")
    print_rows(stats, args.seconds)
    rate = stats.rows(args.seconds)[0][1]
    print(f"    ceiling: bare SQL + msgspec          {all_ceiling[0]:8,.0f} req/s   p50 {all_ceiling[1] * 1000:6.0f} ms"
          f"   p99 {all_ceiling[2] * 1000:6.0f} ms   -> endpoint at {rate / all_ceiling[0]:.0%} of it")


def run(kind: str, args: argparse.Namespace, folder: Path) -> None:
    label = "PostgreSQL" if kind == "postgres" else "SQLite"
    with database(kind, folder) as url:
        engine = create_db_engine(DatabaseSettings(url=url))
        migrate(engine)
        began = time.monotonic()
        seeded = seed(engine, default_data_dir(), folder, args.orders)
        with engine.connect() as connection:
            open_count = connection.execute(select(func.count()).select_from(WorkOrder).where(WorkOrder.is_open)).scalar_one()  # type: ignore[arg-type]
            some_open = list(connection.execute(select(WorkOrder.id).where(WorkOrder.is_open).limit(500)).scalars())  # type: ignore[arg-type]
        engine.dispose()
        print(f"\n{label}: {seeded['count']:,} work orders ({open_count:,} open), seeded in {time.monotonic() - began:.0f} s;"
              f" {args.clients} clients, {args.seconds:g} s a phase")
        server = Server(bench_settings(url), 1, folder / f"server-{kind}.log")
        server.start()
        try:
            if not args.screen_only:
                load_phases(server, url, seeded, some_open, args)
            if args.screens and not args.board_only:
                console_ms, static_ms, size, ratios = first_screen(server.port, seeded["token"], args.screens, folder,
                                                                   args.verbose)
                print(f"  first screen in Chromium (median of {args.screens}, loaded in turns): console {console_ms:.0f} ms"
                      f" (markers drawn, list filled), static page of the same {size / 1e6:.2f} MB {static_ms:.0f} ms"
                      f" -> {console_ms / max(static_ms, 1):.1f}x (target <= 3x); pair by pair: median "
                      f"{statistics.median(ratios):.1f}x, {', '.join(f'{r:.1f}' for r in ratios)}")
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--screens", type=int, default=5)
    parser.add_argument("--screen-only", action="store_true", help="only the first-screen measurement")
    parser.add_argument("--board-only", action="store_true", help="only the board phase and its ceiling (no map, no screen)")
    parser.add_argument("--verbose", action="store_true", help="the first screen's resource timings")
    args = parser.parse_args()
    print(f"bench/dispatch.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    with tempfile.TemporaryDirectory(prefix="fieldwork-dispatch-bench-") as tmp:
        for kind in kinds:
            run(kind, args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

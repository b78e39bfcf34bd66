"""The `fieldwork` command: demo, serve, worker, vapid, import, areas, users, crews, routing, db."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from server.settings import DEFAULT_DB_PATH, Settings, check_zone, settings_from_env

__all__ = ["main"]

console = Console(stderr=True, highlight=False)


def _settings(args: argparse.Namespace) -> Settings:
    from server.auth import passwords

    try:
        settings = settings_from_env()
    except ValueError as exc:  # a FIELDWORK_* setting that cannot be read: say which, no traceback
        console.print(f"[red]{exc}")
        raise SystemExit(2) from None
    passwords.configure(settings.auth.password_cost)
    if getattr(args, "database_url", None):
        settings = replace(settings, database=replace(settings.database, url=args.database_url))
    if getattr(args, "timezone", None):
        settings = replace(settings, intake=replace(settings.intake, timezone=args.timezone, timezone_set=True))
    return settings


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from server.db import create_db_engine, migrate

    engine = create_db_engine(settings.database)
    migrate(engine)
    return engine


# -- commands ------------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    _engine(_settings(args))
    console.print("database is at the latest schema")
    return 0


def cmd_sync_compact(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from server.db import write_session
    from sync import compact_feed

    if args.keep_days < 0:
        console.print("[red]--keep-days must be 0 or more")
        return 2
    engine = _engine(_settings(args))
    with write_session(engine) as session:
        deleted = compact_feed(session, before=datetime.now(UTC) - timedelta(days=args.keep_days))
    console.print(f"sync feed compacted: {deleted:,} rows deleted (devices behind the horizon prime again)")
    return 0


def cmd_areas_load(args: argparse.Namespace) -> int:
    from server.intake.areas import load_areas

    engine = _engine(_settings(args))
    try:
        loaded = load_areas(engine, args.geojson, layer=args.layer, name_field=args.name_field,
                            code_field=args.code_field, primary=not args.secondary)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot load {Path(args.geojson).name}: {exc}")
        return 2
    console.print(f"layer {loaded.layer}: {loaded.added} added, {loaded.updated} updated"
                  f"{' (primary: work orders are routed by it)' if loaded.primary else ''}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from server.intake.importer import NoServiceAreas, count_records, import_file
    from server.intake.records import FormatError

    settings = _settings(args)
    engine = _engine(settings)
    failed = 0
    for path in map(Path, args.paths):
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8,.0f} rows/s"), TimeElapsedColumn(),
            console=console, transient=False,
        ) as progress:
            task = progress.add_task(path.name, total=count_records(path) if path.is_file() else None, rate=0.0)

            def advance(rows: int, task=task, progress=progress) -> None:  # type: ignore[no-untyped-def]
                progress.advance(task, rows)
                elapsed = progress.tasks[task].elapsed or 0.0
                progress.update(task, rate=progress.tasks[task].completed / elapsed if elapsed else 0.0)

            try:
                summary = import_file(engine, path, settings=settings.intake, fmt=args.format,
                                      rejects_dir=Path(args.rejects_dir), progress=advance,
                                      without_areas=args.without_areas)
            except NoServiceAreas as exc:
                console.print(f"[red]{path.name}: {exc}")
                failed += 1
                continue
            except FormatError as exc:
                console.print(f"[red]{path.name}: {exc} — the run failed; the batches committed before "
                              "the error stay whole: import the file again to complete it")
                failed += 1
                continue
        for line in summary.lines():
            console.print(line)
    return 1 if failed else 0


def cmd_users_add(args: argparse.Namespace) -> int:
    from sqlmodel import select

    from server.auth.users import create_user
    from server.db import write_session
    from server.errors import DomainError
    from server.models import Crew

    engine = _engine(_settings(args))
    password = sys.stdin.readline().strip() if args.password_stdin else None
    generated = password is None and not sys.stdin.isatty()
    if password is None:
        password = secrets.token_urlsafe(12) if generated else getpass.getpass("password: ")
    try:
        with write_session(engine) as session:
            crew_id = None
            if args.crew:
                crew = session.exec(select(Crew).where(Crew.name == args.crew)).first()
                if crew is None:
                    console.print(f"[red]no crew named {args.crew!r} (fieldwork crews add)")
                    return 2
                crew_id = crew.id
            create_user(session, username=args.username, password=password, role=args.role,
                        crew_id=crew_id, display_name=args.display_name or "")
    except DomainError as exc:
        console.print(f"[red]{exc.field + ': ' if exc.field else ''}{exc.message}")
        return 2
    console.print(f"user {args.username} ({args.role}) added")
    if generated:
        print(password)
    return 0


def cmd_crews_add(args: argparse.Namespace) -> int:
    from server.auth.users import create_crew
    from server.db import write_session
    from server.errors import DomainError

    engine = _engine(_settings(args))
    try:
        with write_session(engine) as session:
            create_crew(session, name=args.name, skills=args.skill or [], capacity=args.capacity)
    except DomainError as exc:
        console.print(f"[red]{exc.message}")
        return 2
    console.print(f"crew {args.name} added")
    return 0


def cmd_routing_add(args: argparse.Namespace) -> int:
    from sqlmodel import select

    from server.db import write_session
    from server.models import Crew, District, RoutingRule

    engine = _engine(_settings(args))
    with write_session(engine) as session:
        crew = session.exec(select(Crew).where(Crew.name == args.crew)).first()
        if crew is None:
            console.print(f"[red]no crew named {args.crew!r}")
            return 2
        district_id = None
        if args.district:
            district = session.exec(
                select(District).where(District.primary, District.code == args.district)
            ).first()
            if district is None:
                console.print(f"[red]no district with code {args.district!r} in the primary layer")
                return 2
            district_id = district.id
        session.add(RoutingRule(district_id=district_id, service_code=args.service, crew_id=crew.id))  # type: ignore[arg-type]
    console.print("routing rule added")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _engine(settings).dispose()  # migrate once, before any worker starts
    _print_urls(args.host, args.port)
    return _run_hypercorn(settings, args.host, args.port, args.workers)


def cmd_demo(args: argparse.Namespace) -> int:
    from server.demo import CITIES, default_data_dir, prepare_demo

    city = CITIES[args.city]
    os.environ.setdefault("FIELDWORK_TIMEZONE", city.timezone)
    os.environ.setdefault("FIELDWORK_PUBLIC_URL", f"http://{args.host}:{args.port}")
    os.environ.setdefault("FIELDWORK_OPEN311_API_KEYS", "demo-key")
    settings = _settings(args)
    settings = replace(settings, intake=replace(settings.intake, timezone=city.timezone))
    os.environ["FIELDWORK_TIMEZONE"] = city.timezone
    data_dir = Path(args.data) if args.data else default_data_dir()
    if not data_dir.is_dir():
        console.print(f"[red]no data folder at {data_dir}; pass --data PATH to ../shared/data/311")
        return 2
    engine = _engine(settings)
    console.print(f"[bold]Fieldwork demo: {city.name}[/] — loading service areas and records …")
    _summaries, accounts, begins, ends = prepare_demo(
        engine, city=args.city, data_dir=data_dir, intake=settings.intake,
        rejects_dir=DEFAULT_DB_PATH.parent / "rejects",
        on_file=lambda s: console.print("\n".join(s.lines())),
    )
    from server.db import write_session
    from server.notify.vapid import ensure_keys

    with write_session(engine) as session:
        ensure_keys(session)  # so that "Notify me" works in the demo
    engine.dispose()
    days = (ends - begins).days
    when = "now" if datetime.now(UTC) - ends < timedelta(minutes=5) else f"at {ends:%Y-%m-%d %H:%M} UTC, when this database was first loaded"
    console.print(
        f"Times shifted so that the newest record is the first load's time and the exports follow one another a "
        f"day apart: the {days} days of records end {when} (each case keeps its original time as "
        f"original_requested_at)."
    )
    console.print("\n[bold]Sign in with[/] (passwords are new on every demo start):")
    for account in accounts:
        crew = f"  crew {account.crew}" if account.crew else ""
        console.print(f"  {account.role:<10} {account.username:<12} {account.password}{crew}")
    console.print("  Open311 api_key: " + ",".join(settings.auth.open311_api_keys))
    _print_urls(args.host, args.port)
    return _run_hypercorn(settings, args.host, args.port, 1)


def cmd_vapid(args: argparse.Namespace) -> int:
    """Make the server's VAPID key pair (once), or replace it with --rotate."""
    from sqlalchemy import delete

    from server.db import write_session
    from server.models import PushSubscription
    from server.notify.vapid import ensure_keys

    engine = _engine(_settings(args))
    with write_session(engine) as session:
        identity, created = ensure_keys(session, rotate=args.rotate)
        dropped = 0
        if args.rotate:
            # Subscriptions were made for the old public key: push services refuse them now.
            dropped = int(session.execute(delete(PushSubscription)).rowcount or 0)  # type: ignore[attr-defined]
    engine.dispose()
    if args.rotate:
        console.print(f"new VAPID key pair stored; {dropped} browser subscriptions made for the old key removed")
    elif created:
        console.print("VAPID key pair created and stored in the database (the private key stays there)")
    else:
        console.print("VAPID key pair already present (use --rotate to replace it)")
    print(identity.public_key)  # the public key alone on stdout, for scripts
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Send queued push notices: until stopped, or what is due now with --once."""
    from server.notify.sender import Sender

    settings = _settings(args)
    engine = _engine(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sender = Sender(engine, settings.push, name=args.name)

    async def run() -> None:
        if args.once:
            stats = await sender.drain()
            console.print(f"sent {stats.sent} · retry later {stats.retried} · gone {stats.gone} · "
                          f"failed {stats.failed} · expired {stats.expired}")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"push sender {sender.name} running; Ctrl-C or SIGTERM stops it after the notices in flight")
        await sender.run(stop)

    try:
        asyncio.run(run())
    finally:
        sender.close()
        engine.dispose()
    return 0


def _print_urls(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    console.print(f"\nServing on {base}")
    console.print(f"  Open311 GeoReport v2  {base}/open311/v2/discovery.json")
    console.print(f"  API docs (OpenAPI)    {base}/api/docs")
    console.print(f"  Work orders (GeoJSON) {base}/api/workorders.geojson (signed in)")
    console.print(f"  Report and track      {base}/ (residents)")
    console.print(f"  Crew app (phones)     {base}/crew/")
    console.print(f"  Dispatcher console    {base}/dispatch/ (sign in as dispatcher)")


def _run_hypercorn(settings: Settings, host: str, port: int, workers: int) -> int:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # One logging set-up (Litestar's): Hypercorn's own handler would print every line twice.
    config.errorlog = logging.getLogger("hypercorn.error")
    os.environ["FIELDWORK_DATABASE_URL"] = settings.database.url
    os.environ["FIELDWORK_MIGRATE_ON_START"] = "false"
    if workers > 1:
        from hypercorn.run import run

        config.application_path = "server.app:create_app()"
        config.workers = workers
        return int(run(config) or 0)

    from hypercorn.asyncio import serve

    from server.app import create_app
    from server.settings import settings_from_env

    app = create_app(settings_from_env())
    shutdown = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, shutdown.set)
        await serve(app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]

    asyncio.run(main())
    return 0


# -- argument parsing -------------------------------------------------------------------------


def _zone_option(raw: str) -> str:
    """--timezone, checked before anything runs ("argument --timezone: not a time zone …")."""
    try:
        return check_zone(raw, name="--timezone")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time zone: {raw!r} (use a name such as America/Chicago)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldwork", description=__doc__)
    parser.add_argument("--database-url", help="overrides FIELDWORK_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="load a city's real data and serve it")
    demo.add_argument("--city", choices=["la", "chicago", "nyc"], default="la")
    demo.add_argument("--data", help="the folder of 311 data (default: ../shared/data/311)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="serve an existing database")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="send queued push notices (as its own process)")
    worker.add_argument("--once", action="store_true", help="send what is due now, then exit")
    worker.add_argument("--name", help="this sender's name in the outbox (default: host and a random id)")
    worker.set_defaults(func=cmd_worker)

    vapid = sub.add_parser("vapid", help="make the VAPID key pair for Web Push (stored in the database)")
    vapid.add_argument("--rotate", action="store_true", help="replace the key pair (drops every subscription)")
    vapid.set_defaults(func=cmd_vapid)

    imp = sub.add_parser("import", help="import 311 exports (NYC, Chicago, LA, Open311 JSON)")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--format", choices=["auto", "nyc", "chicago", "la", "open311"], default="auto")
    imp.add_argument("--timezone", type=_zone_option, help="the time zone of the file's local times (default FIELDWORK_TIMEZONE, "
                     "else the zone of the city whose export it is)")
    imp.add_argument("--without-areas", action="store_true",
                     help="import although no service areas are loaded: every case waits unlocated")
    imp.add_argument("--rejects-dir", default=str(DEFAULT_DB_PATH.parent / "rejects"))
    imp.set_defaults(func=cmd_import)

    areas = sub.add_parser("areas", help="service areas").add_subparsers(dest="areas_cmd", required=True)
    load = areas.add_parser("load", help="load district polygons from GeoJSON")
    load.add_argument("geojson")
    load.add_argument("--layer", required=True)
    load.add_argument("--name-field", required=True)
    load.add_argument("--code-field")
    load.add_argument("--secondary", action="store_true", help="do not route work orders by this layer")
    load.set_defaults(func=cmd_areas_load)

    users = sub.add_parser("users", help="user accounts").add_subparsers(dest="users_cmd", required=True)
    add = users.add_parser("add", help="add a user")
    add.add_argument("username")
    add.add_argument("--role", choices=["admin", "dispatcher", "crew"], required=True)
    add.add_argument("--crew", help="the crew's name (for role crew)")
    add.add_argument("--display-name")
    add.add_argument("--password-stdin", action="store_true")
    add.set_defaults(func=cmd_users_add)

    crews = sub.add_parser("crews", help="crews").add_subparsers(dest="crews_cmd", required=True)
    crew_add = crews.add_parser("add", help="add a crew")
    crew_add.add_argument("name")
    crew_add.add_argument("--skill", action="append", help="a service type code (repeatable)")
    crew_add.add_argument("--capacity", type=int, default=8)
    crew_add.set_defaults(func=cmd_crews_add)

    routing = sub.add_parser("routing", help="routing rules").add_subparsers(dest="routing_cmd", required=True)
    rule = routing.add_parser("add", help="route (district, service type) to a crew")
    rule.add_argument("--crew", required=True)
    rule.add_argument("--district", help="district code in the primary layer (default: any)")
    rule.add_argument("--service", help="service type code (default: any)")
    rule.set_defaults(func=cmd_routing_add)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_cmd", required=True)
    upgrade = db.add_parser("upgrade", help="apply migrations")
    upgrade.set_defaults(func=cmd_db_upgrade)

    sync = sub.add_parser("sync", help="the crews' sync feed").add_subparsers(dest="sync_cmd", required=True)
    compact = sync.add_parser("compact", help="compact the change feed below a horizon")
    compact.add_argument("--keep-days", type=int, default=7, help="keep every row of the last N days (default 7)")
    compact.set_defaults(func=cmd_sync_compact)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

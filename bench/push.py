"""Push benchmark: notices from the outbox to a push service on loopback, against two
ceilings measured in the same run; and how honest the expected dates are on real data.

1. The sender (server.notify.sender.Sender; one for every run, as `fieldwork worker` keeps
   one, its encryption process started by a warm-up) drains N due notices from the outbox
   of a fresh database to the push-service stand-in (tests/notify/pushservice.py, in its
   own process, checking every VAPID JWT but not decrypting): notifications/s, from the
   first claim to the last recorded result.
2. Ceiling, encryption alone: for the same N subscriptions and payloads, pywebpush's
   encode (aes128gcm, a fresh ECDH key per notice) plus the VAPID header, signed once per
   push service and reused until near expiry (server.notify.vapid.VapidSigner), as the
   sender does: notifications/s.
3. Ceiling, transport alone: N POSTs of the same size (the bodies encrypted in 2) with the
   same headers, over one shared aiohttp session, as many in flight as the sender allows:
   requests/s.
4. The ratio of 1 to the lower ceiling (target >= 50 %). The three are measured one after
   the other, `--repeats` times, interleaved; the best of each is compared (and each run's
   own ratio is shown), because the machine is shared and its load moves.
5. Expected dates on held-back weeks of the real data (../shared/data/311): per city, the
   last six weeks of reports are held back; the figures are rebuilt from what was closed
   before them; for each held-back work order the range we would have promised is
   compared with its real close: of those that closed, the share closed by the upper end
   (the 80th percentile of past closes, or the SLA where history is thin; target >= 75 %)
   and by the median; and the share again counting those still open past the upper end at
   the end of the data as misses.

    .venv/bin/python bench/push.py [--notices 3000] [--repeats 3] [--db sqlite|postgres|both] [--skip-dates]

Traffic goes to 127.0.0.1 only. The push service is stopped and temporary databases
removed on exit. The machine is shared: run it twice and quote both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg
from pywebpush import WebPusher
from sqlalchemy import func, insert
from sqlmodel import Session, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.db import create_db_engine, migrate, write_session  # noqa: E402
from server.intake.areas import load_areas  # noqa: E402
from server.intake.importer import import_file  # noqa: E402
from server.models import PushNotification, PushSubscription, WorkOrder, utcnow  # noqa: E402
from server.notify.messages import encode_payload, resident_payload  # noqa: E402
from server.notify.sender import Sender  # noqa: E402
from server.notify.subscriptions import endpoint_hash  # noqa: E402
from server.notify.vapid import VapidSigner, ensure_keys  # noqa: E402
from server.residents.expected import evaluate_promises  # noqa: E402
from server.settings import DatabaseSettings, IntakeSettings, PushSettings  # noqa: E402

DATA = Path(os.environ.get("FIELDWORK_DATA_DIR") or ROOT.parent / "shared" / "data" / "311")
PG_ADMIN_URL = os.environ.get("FIELDWORK_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
CITIES = {
    # city: (primary layer file, layer, name field, code field, zone)
    "la": ("la/boundaries/la_city_council_districts_2012.geojson", "council_district", "name", "name",
           "America/Los_Angeles"),
    "chicago": ("chicago/boundaries/chi_community_areas.geojson", "community_area", "COMMUNITY", "AREA_NUMBE",
                "America/Chicago"),
    "nyc": ("nyc/boundaries/nyc_community_districts_dcp2013.geojson", "community_district", "BoroCD", "BoroCD",
            "America/New_York"),
}
HELD_BACK = timedelta(weeks=6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def push_service() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.notify.pushservice", "--port", str(port), "--no-decrypt"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the push service did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'push-{uuid.uuid4().hex[:6]}.db'}"
        return
    name = f"fieldwork_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def subscribers(url: str, count: int) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [client.post("/subscribers").json() for _ in range(count)]


def queue(engine: Any, subscription_ids: list[int], payload: dict[str, Any], tag: str) -> None:
    now = utcnow()
    with write_session(engine) as session:
        session.connection().execute(insert(PushNotification.__table__), [  # type: ignore[attr-defined]
            {"subscription_id": sid, "event_uid": f"bench-{tag}-{sid}", "kind": "completed", "payload": payload,
             "urgency": "normal", "ttl_seconds": 345600, "state": "pending", "attempts": 0, "next_attempt_at": now,
             "created_at": now} for sid in subscription_ids
        ])


def subscribe(engine: Any, subs: list[dict[str, Any]]) -> list[int]:
    now = utcnow()
    table = PushSubscription.__table__  # type: ignore[attr-defined]
    with write_session(engine) as session:
        return list(session.connection().execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), [
            {"endpoint": s["endpoint"], "endpoint_hash": endpoint_hash(s["endpoint"]), "p256dh": s["keys"]["p256dh"],
             "auth": s["keys"]["auth"], "language": "es", "created_at": now} for s in subs
        ]).scalars().all())


def run_sender(sender: Sender, url: str, ids: list[int], payload: dict[str, Any], tag: str) -> tuple[float, int]:
    """Queue a notice for each subscription and drain them: (notices/s, tokens signed)."""
    queue(sender.engine, ids, payload, tag)
    before = httpx.get(f"{url}/stats").json()["received"]
    started = time.perf_counter()
    stats = asyncio.run(sender.drain())
    elapsed = time.perf_counter() - started
    received = httpx.get(f"{url}/stats").json()["received"] - before
    assert stats.sent == len(ids) == received, (stats, received)
    return len(ids) / elapsed, sender._signer.signed if sender._signer else 0


def measure_encryption(subs: list[dict[str, Any]], payload: bytes, signer: VapidSigner) -> tuple[float, list[bytes], dict[str, str]]:
    bodies: list[bytes] = []
    headers: dict[str, str] = {}
    started = time.perf_counter()
    for sub in subs:
        headers = signer.headers(sub["endpoint"])
        bodies.append(WebPusher(sub).encode(payload, "aes128gcm")["body"])
    elapsed = time.perf_counter() - started
    return len(subs) / elapsed, bodies, headers


async def measure_transport(subs: list[dict[str, Any]], bodies: list[bytes], vapid: dict[str, str],
                            concurrency: int) -> float:
    headers = {**vapid, "TTL": "345600", "Content-Encoding": "aes128gcm", "Urgency": "normal",
               "Content-Type": "application/octet-stream", "Topic": "case-1"}
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as http:
        async def one(sub: dict[str, Any], body: bytes) -> int:
            async with gate, http.post(sub["endpoint"], data=body, headers=headers, timeout=timeout) as response:
                await response.read()
                return response.status

        started = time.perf_counter()
        statuses = await asyncio.gather(*(one(sub, body) for sub, body in zip(subs, bodies, strict=True)))
        elapsed = time.perf_counter() - started
    assert set(statuses) == {201}, set(statuses)
    return len(subs) / elapsed


def push_figures(kinds: list[str], count: int, repeats: int) -> None:
    payload = resident_payload("completed", language="es", case_id=1523590, service="Street Light Out",
                               token=uuid.uuid4().hex[:22], reason="Se cambió la lámpara y el cableado del poste.")
    raw = encode_payload(payload)
    settings = PushSettings()
    with tempfile.TemporaryDirectory() as tmp, push_service() as url:
        for kind in kinds:
            with database(kind, Path(tmp)) as db_url:
                engine = create_db_engine(DatabaseSettings(url=db_url))
                migrate(engine)
                with write_session(engine) as session:
                    identity, _ = ensure_keys(session)
                subs = subscribers(url, count)
                ids = subscribe(engine, subs)
                # One sender for every run, as `fieldwork worker` keeps one; the warm-up starts
                # its encryption process and fills the caches.
                sender = Sender(engine, PushSettings(allow_loopback_http=True), name="bench")
                run_sender(sender, url, ids[:100], payload, "warm-up")
                signer = VapidSigner(identity, subject=settings.vapid_subject)
                rates: dict[str, list[float]] = {"sender": [], "encryption": [], "transport": []}
                signed = 0
                body_size = 0
                # Interleaved, several times: the machine is shared, and its load moves.
                for repeat in range(repeats):
                    rate, signed = run_sender(sender, url, ids, payload, f"r{repeat}")
                    rates["sender"].append(rate)
                    encrypt_rate, bodies, vapid = measure_encryption(subs, raw, signer)
                    rates["encryption"].append(encrypt_rate)
                    rates["transport"].append(asyncio.run(measure_transport(subs, bodies, vapid,
                                                                             settings.concurrency)))
                    body_size = len(bodies[0])
                sender.close()
                engine.dispose()
            best = {name: max(values) for name, values in rates.items()}
            ceiling = min(best["encryption"], best["transport"])
            per_run = ", ".join(f"{s / min(e, t):.0%}" for s, e, t in
                                zip(rates["sender"], rates["encryption"], rates["transport"], strict=True))
            shown = {name: " / ".join(f"{v:,.0f}" for v in values) for name, values in rates.items()}
            print(f"\n[{kind}] {count:,} notices a run, {repeats} runs; payload {len(raw)} B, encrypted body "
                  f"{body_size} B, {settings.concurrency} in flight, claims of {settings.batch_size}")
            print(f"  outbox → push service : best {best['sender']:7,.0f} notices/s  (runs: {shown['sender']}; "
                  f"VAPID tokens signed in all runs: {signed})")
            print(f"  ceiling, encryption   : best {best['encryption']:7,.0f} notices/s  (runs: {shown['encryption']}; "
                  f"encode + the cached VAPID header)")
            print(f"  ceiling, transport    : best {best['transport']:7,.0f} POSTs/s    (runs: {shown['transport']}; "
                  f"same size, one shared session)")
            print(f"  ratio to the lower ceiling: best {best['sender'] / ceiling:.0%} (target >= 50 %); "
                  f"run by run {per_run}")


def date_figures(folder: Path) -> None:
    print("\nExpected dates on held-back weeks (the last six weeks of each city's reports):")
    total = [0, 0, 0, 0]
    for city, (layer_file, layer, name_field, code_field, zone) in CITIES.items():
        url = f"sqlite:///{folder / f'{city}.db'}"
        engine = create_db_engine(DatabaseSettings(url=url))
        migrate(engine)
        load_areas(engine, DATA / layer_file, layer=layer, name_field=name_field, code_field=code_field)
        for path in sorted((DATA / city / "records").glob("*.gz")):
            import_file(engine, path, settings=IntakeSettings(timezone=zone))
        with Session(engine) as session:
            newest = session.exec(select(func.max(WorkOrder.first_reported_at))).one()
            assert newest is not None
            if newest.tzinfo is None:
                newest = newest.replace(tzinfo=UTC)
            check = evaluate_promises(session, cutoff=newest - HELD_BACK)
        engine.dispose()
        total[0] += check.closed
        total[1] += check.by_p80
        total[2] += check.by_median
        total[3] += check.open_late
        bases = ", ".join(f"{basis} {inside / judged:.0%} of {judged:,}" for basis, (judged, inside)
                          in sorted(check.by_basis.items()))
        print(f"  {city:<8} after {check.cutoff:%Y-%m-%d}: {check.closed:6,} closed · by the upper end "
              f"{check.share_by_p80:6.1%} · by the median {check.share_by_median:6.1%} · "
              f"{check.open_late:,} still open past it ({check.strict_share_by_p80:.1%} counting them as misses) · "
              f"{check.open_not_due:,} open, not yet due · by basis: {bases}")
    print(f"  all      : {total[0]:6,} closed · by the upper end {total[1] / total[0]:6.1%} (target >= 75 %) · "
          f"by the median {total[2] / total[0]:6.1%} · counting the {total[3]:,} still open past it as misses: "
          f"{total[1] / (total[0] + total[3]):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notices", type=int, default=3000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-dates", action="store_true")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    push_figures(kinds, args.notices, args.repeats)
    if not args.skip_dates:
        with tempfile.TemporaryDirectory() as tmp:
            date_figures(Path(tmp))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

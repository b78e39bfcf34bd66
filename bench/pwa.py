"""Crew app benchmark: headless Chromium against a real server on loopback (SQLite).

Seeds a database with LA's real 311 records (../shared/data/311) and one crew holding
1,000 work orders (open and closed: the exports are mostly closed cases), starts `server.app:create_app()` on Hypercorn, and measures in the
same browser, in the same run, each figure next to its ceiling:

1. priming: the app's SyncClient pulling 1,000 work orders from an empty cursor into
   IndexedDB (pages of 500, each written with its overlay logic in one transaction);
   ceiling: a fetch of the same pull with limit 1,000 (the server's page limit; the crew's
   service types and crew ride along, so a second small fetch brings the last work orders),
   its work orders written to a bare IndexedDB store in a single transaction, no app logic;
2. acknowledgement: 500 notes queued in the outbox while the server is unreachable
   (the server is really stopped), then the server restarted and the time from the
   `online` trigger until the outbox is empty (and until the sync, with its pull, ends);
   ceiling: 5 bare POSTs of the same 500 notes (100 each, a new client id), no IndexedDB;
3. first load: bytes transferred by a fresh phone opening /crew/ until the service worker
   is active (page and the worker's precache; map tiles are not loaded), and the size on
   disk of the app shell's own files (the precache list without /vendor/).

Targets: priming within 2x and acknowledgement within 2x of their ceilings; the app
shell (our own files) under 150 KB. Each timed figure is the median of --runs runs.

    .venv/bin/python bench/pwa.py [--orders 1000] [--edits 500] [--runs 3]

Traffic goes to 127.0.0.1 only; the server is stopped and temporary files deleted on exit.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from server.db import create_db_engine, migrate  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, DATA, LiveServer, make_settings  # noqa: E402
from tests.crew.support import PASSWORD, USERNAME, seed_crew  # noqa: E402

LA_FILE = DATA / "la/records/la_myla311_2018-12-27_2018-12-31.csv.gz"  # > 8,000 work orders
SHELL_BUDGET = 150 * 1024


def shell_files() -> list[Path]:
    source = (ROOT / "pwa" / "crew" / "sw.js").read_text()
    listed = re.search(r"const PRECACHE = \[(.*?)\];", source, re.S).group(1)  # type: ignore[union-attr]
    paths = re.findall(r'"(/[^"]*)"', listed)
    files = [ROOT / "pwa" / "crew" / "sw.js"]
    for path in paths:
        if path.startswith("/vendor/"):
            continue
        files.append(ROOT / "pwa" / (path.strip("/") + ("/index.html" if path.endswith("/") else "")))
    return files


def sign_in(page: Page, orders: int) -> None:
    page.fill("#username", USERNAME)
    page.fill("#password", PASSWORD)
    page.click("#signin-form button[type=submit]")
    page.wait_for_function(f"document.querySelectorAll('#jobs li').length === {orders}", timeout=300_000)
    page.wait_for_function("document.body.dataset.syncing === 'false'", timeout=300_000)


PRIME = """async () => {
    const { client, db } = window.fieldworkCrew;
    client.pause();
    await client._running;
    await db.transaction(["work_orders", "reference", "meta"], "readwrite", async (tx) => {
        tx.objectStore("work_orders").clear();
        tx.objectStore("reference").clear();
        await db.setMeta(tx, "cursor", null);
    });
    const start = performance.now();
    const result = await client.pull();
    const ms = performance.now() - start;
    const count = await db.transaction(["work_orders"], "readonly", (tx) => db.count(tx, "work_orders"));
    return { ms, ok: result.ok, count };
}"""

PRIME_CEILING = """async ([limit, run]) => {
    const { db } = window.fieldworkCrew;
    const { auth, client_id: clientId } = await db.readMeta(["auth", "client_id"]);
    const name = `bench-ceiling-${run}`;
    const bare = await new Promise((resolve, reject) => {
        const req = indexedDB.open(name, 1);
        req.onupgradeneeded = () => req.result.createObjectStore("work_orders", { keyPath: "id" });
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
    });
    const start = performance.now();
    const changes = [];
    let cursor = null;
    let fetches = 0;
    for (;;) {  // one fetch of 1,000, and one more for what the server's page limit leaves over
        const response = await fetch("/sync/v1/pull", {
            method: "POST", cache: "no-store",
            headers: { Authorization: `Bearer ${auth.token}`, "Content-Type": "application/json" },
            body: JSON.stringify({ client_id: clientId, cursor, limit }),
        });
        const answer = await response.json();
        fetches += 1;
        changes.push(...answer.changes);
        cursor = answer.cursor;
        if (!answer.has_more) break;
    }
    await new Promise((resolve, reject) => {
        const tx = bare.transaction(["work_orders"], "readwrite", { durability: "strict" });
        const store = tx.objectStore("work_orders");
        for (const change of changes) {
            if (change.entity === "work_order") store.put({ id: String(change.id), data: change.data });
        }
        tx.oncomplete = resolve;
        tx.onerror = () => reject(tx.error);
    });
    const ms = performance.now() - start;
    const orders = new Set(changes.filter((c) => c.entity === "work_order").map((c) => c.id)).size;
    bare.close();
    indexedDB.deleteDatabase(name);
    return { ms, orders, fetches, changes: changes.length };
}"""

QUEUE = """async ([ids, edits, run]) => {
    const { client, outbox } = window.fieldworkCrew;
    client.pause();
    await client._running;
    location.hash = `#/job/${ids[0]}`;  // at work on a job, as a crew making edits is
    for (let i = 0; i < edits; i += 1) {
        await outbox.queueEdit("note", { work_order_id: ids[i % ids.length], text: `bench ${run} note ${i}` });
    }
    return outbox.unsyncedCount();
}"""

ACKNOWLEDGE = """async () => {
    const { client, outbox } = window.fieldworkCrew;
    const start = performance.now();
    client._started = true;
    client._state.paused = false;
    const done = new Promise((resolve) => {
        const check = async () => {
            if (await outbox.unsyncedCount() === 0) resolve(performance.now() - start);
            else setTimeout(check, 10);
        };
        check();
    });
    window.dispatchEvent(new Event("online"));  // the reconnect trigger
    const acknowledged = await done;
    while (client._running) await client._running;
    return { acknowledged, synced: performance.now() - start };
}"""

BARE_PUSH = """async ([ids, edits, run]) => {
    const { db } = window.fieldworkCrew;
    const { auth } = await db.readMeta(["auth"]);
    const clientId = crypto.randomUUID();
    const now = new Date().toISOString();
    const mutations = Array.from({ length: edits }, (_, i) => ({
        seq: i + 1, mid: crypto.randomUUID(), name: "note", device_ts: now,
        args: { work_order_id: ids[i % ids.length], uid: crypto.randomUUID(), text: `bare ${run} note ${i}` },
    }));
    const start = performance.now();
    let last = 0;
    for (let i = 0; i < edits; i += 100) {
        const response = await fetch("/sync/v1/push", {
            method: "POST", cache: "no-store",
            headers: { Authorization: `Bearer ${auth.token}`, "Content-Type": "application/json" },
            body: JSON.stringify({ client_id: clientId, schema_version: 1, mutations: mutations.slice(i, i + 100) }),
        });
        last = (await response.json()).last_seq;
    }
    return { ms: performance.now() - start, last_seq: last };
}"""


def first_load(browser: Any, url: str) -> dict[str, int]:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    sizes = {"page": 0, "worker": 0, "requests": 0}
    tiles: list[str] = []

    def finished(request: Any) -> None:
        if not request.url.startswith(url):
            tiles.append(request.url)
            return
        size = request.sizes()
        total = size["responseBodySize"] + size["responseHeadersSize"]
        sizes["worker" if request.service_worker else "page"] += total
        sizes["requests"] += 1

    context.on("requestfinished", finished)
    page = context.new_page()
    page.goto(url + "/crew/")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
    page.wait_for_timeout(500)
    context.close()
    sizes["tiles"] = len(tiles)
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fieldwork-bench-pwa-") as folder:
        settings = make_settings(f"sqlite:///{folder}/bench.db")
        engine = create_db_engine(settings.database)
        migrate(engine)
        started = time.perf_counter()
        seed = seed_crew(engine, settings, args.orders, file=LA_FILE, open_only=False)
        engine.dispose()
        print(f"seeded {len(seed.jobs)} work orders for one crew in {time.perf_counter() - started:.1f} s")
        server = LiveServer(settings)
        server.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                loaded = first_load(browser, server.url)
                context = browser.new_context(viewport={"width": 360, "height": 740})
                page = context.new_page()
                page.goto(server.url + "/crew/")
                page.wait_for_selector("body[data-ready=true]")
                sign_in(page, args.orders)
                primes, ceilings, acks, syncs, bares = [], [], [], [], []
                # Priming runs first, all on the same feed (the edits below add to it); the
                # figure and its ceiling alternate which goes first.
                for run in range(args.runs):
                    for which in (("app", "bare") if run % 2 == 0 else ("bare", "app")):
                        if which == "app":
                            primed = page.evaluate(PRIME)
                            assert primed["ok"] and primed["count"] == args.orders, primed
                            primes.append(primed["ms"])
                        else:
                            ceiling = page.evaluate(PRIME_CEILING, [args.orders, run])
                            assert ceiling["orders"] == args.orders, ceiling
                            ceilings.append(ceiling["ms"])
                    print(f"prime run {run + 1}: app {primes[-1]:.0f} ms, ceiling {ceilings[-1]:.0f} ms "
                          f"({ceiling['fetches']} fetches, {ceiling['changes']} changes)")
                for run in range(args.runs):
                    server.stop()  # the phone loses the server; edits pile up
                    queued = page.evaluate(QUEUE, [seed.jobs, args.edits, run])
                    assert queued == args.edits, queued
                    server.start()
                    acked = page.evaluate(ACKNOWLEDGE)
                    acks.append(acked["acknowledged"])
                    syncs.append(acked["synced"])
                    bare = page.evaluate(BARE_PUSH, [seed.jobs, args.edits, run])
                    assert bare["last_seq"] == args.edits, bare
                    bares.append(bare["ms"])
                    print(f"acknowledge run {run + 1}: app {acked['acknowledged']:.0f} ms (sync with its pull "
                          f"{acked['synced']:.0f} ms), ceiling {bare['ms']:.0f} ms")
                browser.close()
        finally:
            server.stop()

    shell = {path.relative_to(ROOT / "pwa"): path.stat().st_size for path in shell_files()}
    shell_bytes = sum(shell.values())
    prime, prime_ceiling = statistics.median(primes), statistics.median(ceilings)
    ack, ack_ceiling, synced = statistics.median(acks), statistics.median(bares), statistics.median(syncs)
    # Ratios run by run (each figure against the ceiling measured next to it), then the median.
    prime_ratio = statistics.median(a / b for a, b in zip(primes, ceilings, strict=True))
    ack_ratio = statistics.median(a / b for a, b in zip(acks, bares, strict=True))
    print()
    print(f"priming {args.orders} work orders into IndexedDB: {prime:.0f} ms; ceiling (the same pull in pages "
          f"of 1,000, one bare transaction) {prime_ceiling:.0f} ms; ratio {prime_ratio:.2f}x (target <= 2x)")
    print(f"{args.edits} queued edits acknowledged after reconnect: {ack:.0f} ms (whole sync with its pull "
          f"{synced:.0f} ms); ceiling (5 bare POSTs of 100) {ack_ceiling:.0f} ms; ratio "
          f"{ack_ratio:.2f}x (target <= 2x)")
    print(f"first load of /crew/: {loaded['page'] / 1024:.0f} KB by the page + {loaded['worker'] / 1024:.0f} KB "
          f"by the service worker's precache = {(loaded['page'] + loaded['worker']) / 1024:.0f} KB in "
          f"{loaded['requests']} requests (headers included; {loaded['tiles']} map tile requests)")
    print(f"app shell, our own files: {shell_bytes / 1024:.1f} KB in {len(shell)} files "
          f"(target < {SHELL_BUDGET // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A stateful property test of crew sync against the real HTTP app, on SQLite and PostgreSQL.

Three crew phones (two of crew north, one of crew south) queue edits offline and sync
through a network that drops, duplicates, reorders, truncates and replays requests
(tests/sync_http/faults.py); a dispatcher reassigns, cancels, removes and edits the shared
notes of the same work orders; the server process restarts. Hypothesis interleaves all of
it at random.

The oracle: right before each request reaches the server, the test reads the work orders'
state from the database and predicts, with the policy of DESIGN.md ("Sync"), what each new
mutation of the batch must become: applied (with exactly one event), rejected (kept whole
in sync_rejection) or a conflict (the losing value kept in sync_conflict). Every answer the
server gives, including those the network hides from the device, must match, and after
every step the database must hold exactly the acknowledged mutations and their effects:

- each client's acknowledged seq only grows; sync_mutation holds seqs 1..last_seq, once
  each, with the payload that was sent and the predicted status;
- every applied crew fact is exactly one work_order_event with its uid (none is lost or
  doubled); nothing not yet acknowledged, or rejected, has left an event;
- every rejected mutation has one sync_rejection row with its whole args; every conflict
  has one sync_conflict row with the server's and the crew's values ("completed after
  cancel", status after reassignment, stale shared notes, server-owned requests);
- a dispatcher's cancel is never overridden by a crew.

After a clean sync a phone's view equals the database's view of its crew. At the end of
every example the network heals: all phones sync cleanly until their outboxes are empty,
then pull, and each view must equal both the database and what a brand new phone of the
same crew pulls from an empty cursor; the dispatcher's conflict and rejection lists must
hold exactly this example's conflicts and rejections.

Isolation: one database, one seed and one live server per module (per database kind);
nothing is reset. Each example starts with fresh client ids and fresh fact uids, and works
on its own work orders: it first hands every live work order the crews still hold back to
the queue (as a dispatcher, through the API), then takes the four lowest-numbered
unassigned "new" ones (reopening closed ones if a long shrink used them up) and assigns two
to each crew. So every crew's scope holds only this example's orders, and every check on
the sync tables or on events filters on this example's client ids and uids.

Issue 8 added hostile phones and servers to the mix: edits whose device time is late (half
an hour, three hours) or cannot be converted to UTC, uids reused with the same or other
content, the feed compacted under the phones, and the database swapped under them (a copy
with a new identity: every cursor is refused and the phones prime again, dropping what the
server does not send). The oracle predicts with the trust rules of README "Sync": device
times only move forward per client, never before the client's previous push less the
grace, and a crew's facts count only where the server's assignment history says it held
the job then; shared state of a job no longer held becomes a conflict.

Run with -rP to see what the examples went through (outcomes, conflicts, faults, gaps).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from server.crewsync.mutators import HOLD_GRACE
from server.db import create_db_engine, write_session
from server.models import WorkOrder, WorkOrderEvent
from server.settings import DatabaseSettings, Settings
from server.status import can_transition
from server.workorders.changes import FACT_KINDS, assignment_history, crew_scope
from sync import compact_feed
from sync.models import SyncClient, SyncConflict, SyncIdentity, SyncMutation, SyncRejection
from sync.policies import held_at
from tests.conftest import LiveServer, create_pg_database, drop_pg_database, pg_url
from tests.sync_http.faults import FAULTS, Fault, FaultyTransport
from tests.sync_http.support import Device, merge_events, seed, sign_in

pytestmark = pytest.mark.slow

CREWS = ("north", "south")
PHONES = (("north-a", "north"), ("north-b", "north"), ("south-a", "south"))
ORDERS_PER_CREW = 2
MAX_RESTARTS = 1  # a restart costs ~3 s on this machine
BAD_CLOCK = "0001-01-01T00:00:00+00:01"  # overflows when converted to UTC
LATE = (0, 0, 0, 0, 30, 180, -1)  # minutes an edit's device time is behind; -1: BAD_CLOCK
PULL_LIMIT = 25  # small pages, so pulls page through has_more
NO_SUCH_ORDER = 2_000_000_000
STATUS_TARGETS = ("en_route", "on_site", "on_hold", "completed", "cannot_complete", "assigned")
NOTES_TEXTS = ("gate code 4411", "dog in the yard", "use the alley entrance", "")
VIEW_KINDS = [*FACT_KINDS, "status", "notes"]  # the events a phone is shown
# Hypothesis draws the first entry of a sampled_from far more often than the others, and the
# others about evenly: the most telling fault goes first (the server commits, the phone hears
# nothing), and repeats weigh the rest.
PUSH_FAULTS = ["drop_response", "reorder", "reorder", "reorder", "duplicate", "duplicate", "duplicate",
               "truncate", "truncate", "late_duplicate", "late_duplicate", "drop_request", "ok"]
assert set(PUSH_FAULTS) == set(FAULTS)
HOLDBACK_TIMEOUT = 10.0  # seconds a PostgreSQL feed may lag behind a commit (see _converge)
HOLDBACKS: Counter[str] = Counter()  # pulls that had to be repeated, for the curious
SEEN: Counter[str] = Counter()  # what the runs went through: outcomes, conflicts, faults


def seen(what: str) -> None:
    SEEN[what] += 1


SETTINGS = settings(
    max_examples=int(os.environ.get("FIELDWORK_STATEFUL_EXAMPLES", "15")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
    # FIELDWORK_STATEFUL_NO_SHRINK=1: report the first failure as found (shrinking a slow
    # state machine can take longer than the run).
    phases=[p for p in Phase if p != Phase.shrink or not os.environ.get("FIELDWORK_STATEFUL_NO_SHRINK")],
)


class World:
    """The module's database, seed and live server (restartable on the same port)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.seeded = seed(engine, per_crew=ORDERS_PER_CREW)
        self.crew_ids = dict(self.seeded.crews)
        self.server = LiveServer(settings)
        self.server.start()
        self.headers = {crew: sign_in(self.url, f"crew-{crew}") for crew in CREWS}
        self.dispatcher = sign_in(self.url, "dispatcher")
        self.copies: list[str] = []
        self.pg_copies: list[str] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log(self) -> deque[str]:
        """The running server's stderr, last lines."""
        return self.server.log

    def restart(self, *, crash: bool = False) -> None:
        old = self.server
        if crash:
            old.kill()
        old.stop()
        new = LiveServer(self.settings)
        new.port, new.url = old.port, old.url
        new.start()
        self.server = new

    def swap_database(self) -> None:
        """Serve a copy of the database that has another identity (as after a restore onto
        another server): same data, but no cursor issued before is valid there."""
        old = self.server
        old.stop()
        self.engine.dispose()
        if self.engine.dialect.name == "sqlite":
            source = self.settings.database.url.split("///", 1)[1]
            target = f"{source}.swap-{uuid.uuid4().hex[:6]}.db"
            with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                src.backup(dst)
            url = f"sqlite:///{target}"
            self.copies.append(target)
        else:
            name = create_pg_database(template=self.engine.url.database)
            self.pg_copies.append(name)
            url = pg_url(name)
        self.settings = replace(self.settings, database=DatabaseSettings(url=url))
        self.engine = create_db_engine(self.settings.database)
        with write_session(self.engine) as session:
            identity = session.get(SyncIdentity, 1)
            assert identity is not None
            identity.database_id = uuid.uuid4().hex
            session.add(identity)
        new = LiveServer(self.settings)
        new.port, new.url = old.port, old.url
        new.start()
        self.server = new

    def stop(self) -> None:
        self.server.stop()
        if self.copies or self.pg_copies:
            self.engine.dispose()
        for name in self.pg_copies:
            drop_pg_database(name)
        for path in self.copies:
            for suffix in ("", "-wal", "-shm", "-writers.lock"):
                Path(path + suffix).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def world(engine: Engine, settings: Settings) -> Iterator[World]:
    world = World(engine, settings)
    yield world
    world.stop()


@dataclass
class Phone(Device):
    name: str = ""
    crew_id: int = 0
    acked: int = 0  # the last_seq this phone has been told


@dataclass(frozen=True)
class Edit:
    """One offline edit, as Hypothesis draws it (`pick` chooses among the phone's orders)."""

    kind: str
    pick: int = 0
    n: int = 1
    to: str = "en_route"
    text: str = ""
    late: int = 0  # minutes the device clock is behind (-1: a time that overflows)

    def __repr__(self) -> str:
        extra = {"status": f", to={self.to!r}", "notes": f", text={self.text!r}"}.get(self.kind, f", n={self.n}")
        late = f", late={self.late}" if self.late else ""
        return f"Edit({self.kind!r}, pick={self.pick}{extra}{late})"


EDITS = st.builds(
    Edit,
    kind=st.sampled_from(["note", "material", "time", "status", "status", "notes", "request", "bad_args",
                          "no_such_order", "reuse"]),
    pick=st.integers(0, 7), n=st.integers(1, 3), to=st.sampled_from(STATUS_TARGETS),
    text=st.sampled_from(NOTES_TEXTS), late=st.sampled_from(LATE),
)


@dataclass(frozen=True)
class SyncPlan:
    """One sync through the faulty network: which phone, what happens to its push and pull."""

    phone: int
    push: Fault
    pull: Fault


SYNC_PLANS = st.builds(
    SyncPlan,
    phone=st.integers(0, 2),
    push=st.builds(Fault, kind=st.sampled_from(PUSH_FAULTS), split=st.integers(1, 4)),
    pull=st.builds(Fault, kind=st.sampled_from(["drop_response", "duplicate", "drop_request", "ok"])),
)


@dataclass
class Outcome:
    """What the server must make of one mutation."""

    status: str  # applied | rejected | conflict
    event_uid: str | None = None  # the one event it must have left
    conflict: dict[str, Any] | None = None  # field, server_value, client_value, base_version
    event: dict[str, Any] = field(default_factory=dict)  # what that event must say


class SyncMachine(RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        self.run = uuid.uuid4().hex[:10]
        seen("examples")
        self.http = httpx.Client(base_url=w.url, headers=w.dispatcher, timeout=30)
        self.transport = FaultyTransport(w.url, self)
        self.restarts_left = 0
        self.swaps_left = 0
        self._start_fresh_orders()
        self.phones = [
            Phone(w.url, w.headers[crew], client_id=f"{self.run}-{name}", name=name, crew_id=w.crew_ids[crew])
            for name, crew in PHONES
        ]
        self.server_last = {p.client_id: 0 for p in self.phones}  # from every answer the server gave
        self.db_last = dict(self.server_last)
        self.sent: dict[tuple[str, int], dict[str, Any]] = {}
        self.bad_args: set[tuple[str, int]] = set()
        self.uid_owner: dict[str, tuple[tuple[str, int], int, str, dict[str, Any]]] = {}  # first applied use
        self.expected: dict[tuple[str, int], Outcome] = {}
        self._in_flight: tuple[int, int, int | None] | None = None
        for phone in self.phones:
            self._converge(phone)

    def _start_fresh_orders(self) -> None:
        w = self.world
        live = WorkOrder.deleted_at.is_(None)  # type: ignore[union-attr]
        with Session(w.engine) as session:
            held = WorkOrder.crew_id.in_(list(w.crew_ids.values()))  # type: ignore[union-attr]
            leftover = session.exec(select(WorkOrder.id).where(held, live)).all()
            underway = session.exec(select(WorkOrder.id).where(
                held, live, WorkOrder.status.in_(["en_route", "on_site"]))).all()  # type: ignore[attr-defined]
        for order_id in underway:  # taking back a job under way fails (see the report): stand the crew down first
            self._ok(self.http.patch(f"/api/dispatch/workorders/{order_id}", json={"status": "assigned"}))
        if leftover:
            self._ok(self.http.post("/api/dispatch/assign", json={"work_order_ids": list(leftover), "crew_id": None}))
        wanted = ORDERS_PER_CREW * len(CREWS)
        with Session(w.engine) as session:
            queued = WorkOrder.crew_id.is_(None)  # type: ignore[union-attr]
            fresh = session.exec(
                select(WorkOrder.id).where(WorkOrder.status == "new", queued, live)
                .order_by(WorkOrder.id).limit(wanted)  # type: ignore[arg-type]
            ).all()
            if len(fresh) < wanted:  # a long shrink used them up: reopen closed ones
                reopen = session.exec(select(WorkOrder.id).where(WorkOrder.status != "new", queued, live)
                                      .order_by(WorkOrder.id).limit(wanted - len(fresh))).all()  # type: ignore[arg-type]
                for order_id in reopen:
                    self._ok(self.http.patch(f"/api/dispatch/workorders/{order_id}", json={"status": "new"}))
                fresh = [*fresh, *reopen]
            self.conflicts_before = session.exec(select(func.max(SyncConflict.id))).one() or 0
            self.rejections_before = session.exec(select(func.max(SyncRejection.id))).one() or 0
        assert len(fresh) == wanted, "ran out of work orders"
        self.orders = list(fresh)
        self.held: dict[int, set[int]] = {}  # crews that held each order during this example
        for index, crew in enumerate(CREWS):
            mine = self.orders[index * ORDERS_PER_CREW:(index + 1) * ORDERS_PER_CREW]
            self._ok(self.http.post("/api/dispatch/assign", json={"work_order_ids": mine, "crew_id": w.crew_ids[crew]}))
            for order_id in mine:
                self.held[order_id] = {w.crew_ids[crew]}
        self.cancelled: set[int] = set()
        self.deleted: set[int] = set()

    @staticmethod
    def _ok(response: httpx.Response) -> httpx.Response:
        assert response.is_success, (response.request.method, response.request.url, response.status_code,
                                     response.text)
        return response

    # -- the phones ---------------------------------------------------------------------

    def _queue(self, phone: Phone, name: str, args: dict[str, Any], *, bad: bool = False, late: int = 0) -> None:
        clock = datetime.now(UTC) - timedelta(minutes=max(late, 0))
        item = phone.queue(name, clock, **args)
        if late < 0:
            item["device_ts"] = BAD_CLOCK
        self.sent[phone.client_id, item["seq"]] = item
        if bad:
            self.bad_args.add((phone.client_id, item["seq"]))

    @staticmethod
    def _in_view(phone: Phone, pick: int) -> int | None:
        mine = sorted(phone.work_orders())
        return mine[pick % len(mine)] if mine else None

    @rule(phone=st.integers(0, 2), edits=st.lists(EDITS, min_size=2, max_size=6))
    def crew_works_offline(self, phone: int, edits: list[Edit]) -> None:
        """Offline, the crew queues edits on the work orders its phone shows."""
        p = self.phones[phone]
        for edit in edits:
            order = NO_SUCH_ORDER if edit.kind == "no_such_order" else self._in_view(p, edit.pick)
            if order is None:
                continue
            uid = uuid.uuid4().hex
            late = edit.late
            if edit.kind in {"note", "no_such_order"}:
                self._queue(p, "note", {"work_order_id": order, "uid": uid, "text": f"note {edit.n} from {p.name}"},
                            late=late)
            elif edit.kind == "reuse":  # a fact this phone sent before, again: the same (n=1) or changed
                facts = [item for (cid, _), item in self.sent.items() if cid == p.client_id and item["name"] == "note"]
                if not facts:
                    continue
                earlier = facts[edit.pick % len(facts)]
                text = earlier["args"]["text"] if edit.n == 1 else f"{earlier['args']['text']} (changed {edit.n})"
                self._queue(p, "note", {**earlier["args"], "text": text}, late=late)
            elif edit.kind == "material":
                self._queue(p, "material", {"work_order_id": order, "uid": uid, "unit": "each",
                                            "item": ("cone", "bolt", "sign")[edit.n - 1],
                                            "quantity": (1, 2.5, 12)[edit.n - 1]}, late=late)
            elif edit.kind == "time":
                self._queue(p, "time", {"work_order_id": order, "uid": uid, "minutes": 15 * edit.n,
                                        "note": "on site"}, late=late)
            elif edit.kind == "bad_args":
                self._queue(p, "material", {"work_order_id": order, "uid": uid, "item": "cone", "quantity": 0,
                                            "unit": "each"}, bad=True, late=late)
            elif edit.kind == "status":
                self._queue(p, "status", {"work_order_id": order, "to": edit.to}, late=late)
            elif edit.kind == "notes":  # against the notes_version the phone last saw
                seen_version = p.work_orders()[order]["notes_version"]
                self._queue(p, "notes", {"work_order_id": order, "text": edit.text, "base_version": seen_version},
                            late=late)
            else:  # a server-owned field: recorded for a dispatcher, never applied
                assert edit.kind == "request"
                self._queue(p, "request", {"work_order_id": order, "field": "priority", "value": edit.n + 1,
                                           "reason": "crew says so"}, late=late)

    @precondition(lambda self: any(p.outbox for p in self.phones))
    @rule(plan=SYNC_PLANS)
    def sync(self, plan: SyncPlan) -> None:
        """Push the outbox, then pull, over a network that misbehaves. (`plan.phone` counts
        among the phones with queued edits: an empty push would exercise no fault.)"""
        waiting = [p for p in self.phones if p.outbox]
        p = waiting[plan.phone % len(waiting)]
        seen(f"push fault {plan.push.kind}")
        self._push(p, plan.push)
        self._pull(p, plan.pull)

    @rule(phone=st.integers(0, 2), page=st.sampled_from([PULL_LIMIT, 1, 500]))
    def sync_clean(self, phone: int, page: int) -> None:
        """A clean push and pull (in pages of `page` feed rows): the view must then equal the
        database's view of the crew."""
        p = self.phones[phone]
        self._push(p, Fault())
        assert not p.outbox, "a clean push must empty the outbox"
        self._converge(p, page)

    def _push(self, phone: Phone, fault: Fault) -> None:
        if not phone.outbox:
            return
        self.transport.plan(fault)
        body = {"client_id": phone.client_id, "schema_version": 1, "mutations": list(phone.outbox)}
        response = self.transport.send(phone, "/sync/v1/push", body)
        if response is None:
            return
        last = response.json()["last_seq"]
        assert last >= phone.acked, "an acknowledged seq went back"
        phone.acked = last
        phone.outbox = [m for m in phone.outbox if m["seq"] > last]

    def _pull(self, phone: Phone, fault: Fault, page: int = PULL_LIMIT) -> bool:
        """Pull until has_more is false. A refused cursor (422: another database, a compacted
        feed) primes again; after priming, what the server did not send leaves the view."""
        self.transport.plan(fault)
        priming = phone.cursor is None
        received: set[tuple[str, str]] = set()
        while True:
            response = self.transport.send(phone, "/sync/v1/pull",
                                           {"client_id": phone.client_id, "cursor": phone.cursor, "limit": page})
            if response is None:
                return False
            if response.status_code == 422:
                assert phone.cursor is not None and response.json()["field"] == "cursor", response.text
                seen("pull refused the cursor: primed again")
                phone.cursor, priming = None, True
                page = max(page, 500)  # a phone primes in big pages (the PWA: 500); one row a page takes minutes
                received.clear()
                continue
            body = response.json()
            for change in body["changes"]:
                key = (change["entity"], change["id"])
                if change["op"] == "upsert":
                    phone.view[key] = merge_events(change["data"], phone.view.get(key))
                    received.add(key)
                else:
                    phone.view.pop(key, None)
                    received.discard(key)
            phone.cursor = body["cursor"]
            if not body["has_more"]:
                if priming:
                    phone.view = {key: value for key, value in phone.view.items() if key in received}
                return True

    # -- the network reports every request that reaches the server -------------------------

    def before(self, phone: Phone, path: str, body: dict[str, Any]) -> None:
        if not path.endswith("/push"):
            return
        cid = phone.client_id
        state = self._orders_now()
        with Session(self.world.engine) as session:
            client = session.get(SyncClient, cid)
            histories = {o: assignment_history(session, o) for o in self.orders}
        floor = client.device_floor if client is not None else None
        pushed = client.last_push_at - HOLD_GRACE if client is not None and client.last_push_at else None
        now = datetime.now(UTC)
        last, gap = self.server_last[cid], None
        for item in body["mutations"]:
            if item["seq"] <= last:
                continue
            if item["seq"] != last + 1:
                gap = last + 1
                break
            key = (cid, item["seq"])
            if item["device_ts"] == BAD_CLOCK or key in self.bad_args:
                outcome = Outcome("rejected")  # refused before the server reads the device's clock
            else:
                # README "Sync": device times only move forward, never before the previous push
                # less the grace, never after arrival.
                made = min(datetime.fromisoformat(item["device_ts"]), now)
                low = max((x for x in (floor, pushed) if x is not None), default=None)
                if low is not None and made < low:
                    made = min(low, now)
                floor = made if floor is None else max(floor, made)
                outcome = self._predict(state, phone, item, made, histories)
            self.expected[key] = outcome
            seen(f"{item['name']} {outcome.status}" + (" (late clock)" if item["device_ts"] == BAD_CLOCK else ""))
            last = item["seq"]
        self._in_flight = (self.server_last[cid], last, gap)

    def after(self, phone: Phone, path: str, body: dict[str, Any], response: httpx.Response) -> None:
        refused_cursor = path.endswith("/pull") and response.status_code == 422 and body.get("cursor")
        assert response.status_code == 200 or refused_cursor, (path, response.status_code, response.text)
        if not path.endswith("/push"):
            return
        assert self._in_flight is not None
        (before, last, gap), self._in_flight = self._in_flight, None
        cid, answer = phone.client_id, response.json()
        assert answer["last_seq"] == last, (answer, body)
        assert answer["expected_seq"] == gap, (answer, body)
        handled = [m for m in body["mutations"] if m["seq"] <= last]
        assert [r["seq"] for r in answer["results"]] == [m["seq"] for m in handled], answer
        for item, result in zip(handled, answer["results"], strict=True):
            want = self.expected[cid, item["seq"]]
            assert result["mid"] == item["mid"]
            if item["seq"] <= before:
                assert (result["status"], result["original_status"]) == ("duplicate", want.status), (result, want)
            else:
                assert result["status"] == want.status, (item, result, want)
            if want.status == "rejected":
                assert result["reason"], result
            if want.status == "applied" and item["name"] in FACT_KINDS:
                assert result["result"] == {"event_uid": item["args"]["uid"]}, result
        assert last >= self.server_last[cid]
        self.server_last[cid] = last
        if gap is not None:
            seen("push answered with expected_seq (a gap)")
        if any(m["seq"] <= before for m in handled):
            seen("push re-delivered acknowledged mutations")

    def _orders_now(self) -> dict[int, dict[str, Any]]:
        with Session(self.world.engine) as session:
            rows = session.exec(select(WorkOrder).where(WorkOrder.id.in_(self.orders))).all()  # type: ignore[union-attr]
            return {o.id: {"status": o.status, "crew_id": o.crew_id, "deleted": o.deleted_at is not None,  # type: ignore[misc]
                           "notes": o.notes, "notes_version": o.notes_version, "priority": o.priority}
                    for o in rows}

    def _predict(self, state: dict[int, dict[str, Any]], phone: Phone, item: dict[str, Any], made: datetime,
                 histories: dict[int, list[tuple[datetime, str | None]]]) -> Outcome:
        """DESIGN.md's policy, applied to the state the server is about to see; `made` is
        the time the server can believe the edit was made."""
        name, args, mid = item["name"], item["args"], item["mid"]
        order = state.get(args["work_order_id"])
        if order is None or order["deleted"]:
            return Outcome("rejected")
        holds = order["crew_id"] == phone.crew_id
        history, scope = histories.get(args["work_order_id"], []), crew_scope(phone.crew_id)
        ever_held = any(holder == scope for _, holder in history)
        held_then = holds or held_at(history, scope, made, HOLD_GRACE)
        if name in FACT_KINDS:
            if not held_then:
                seen(f"{name} rejected: not held when made")
                return Outcome("rejected")
            data = {k: v for k, v in args.items() if k not in {"work_order_id", "uid"}}
            owner = self.uid_owner.get(args["uid"])
            if owner is not None and owner[0] != (phone.client_id, item["seq"]):
                if owner[1:] != (args["work_order_id"], name, data):
                    seen("reused uid with other content rejected")
                    return Outcome("rejected")
                seen("reused uid, same fact: applied once")
                return Outcome("applied", args["uid"], event={"kind": name, "data": data})
            self.uid_owner[args["uid"]] = ((phone.client_id, item["seq"]), args["work_order_id"], name, data)
            return Outcome("applied", args["uid"], event={"kind": name, "data": data})
        if name in {"status", "notes"} and not holds and not ever_held:
            return Outcome("rejected")  # never this crew's job
        if name == "notes" and not holds:
            seen("conflict: notes of a job no longer held")
            return Outcome("conflict", conflict={"field": "notes", "server_value": order["notes"],
                                                 "client_value": args["text"], "base_version": args["base_version"]})
        if name == "status":
            current, to = order["status"], args["to"]
            if not holds or current == "cancelled":  # reassigned away or cancelled: the dispatcher wins
                seen("conflict: status after reassignment" if not holds else f"conflict: {to} after cancel")
                return Outcome("conflict", conflict={"field": "status", "server_value": current,
                                                     "client_value": to, "base_version": None})
            if current == to:
                return Outcome("applied")
            if not can_transition(current, to):
                return Outcome("rejected")
            order["status"] = to
            return Outcome("applied", mid, event={"kind": "status", "to_status": to})
        if name == "notes":
            if args["base_version"] == order["notes_version"] or args["text"] == order["notes"]:
                order["notes"], order["notes_version"] = args["text"], order["notes_version"] + 1
                return Outcome("applied", mid, event={"kind": "notes", "notes": args["text"]})
            seen("conflict: stale shared notes")
            return Outcome("conflict", conflict={"field": "notes", "server_value": order["notes"],
                                                 "client_value": args["text"], "base_version": args["base_version"]})
        assert name == "request"
        if not held_then:
            return Outcome("rejected")
        return Outcome("conflict", conflict={"field": args["field"], "server_value": order["priority"],
                                             "client_value": {"value": args["value"], "reason": args["reason"]},
                                             "base_version": None})

    # -- the dispatcher and the server ------------------------------------------------------

    def _live_order(self, pick: int) -> int | None:
        """The `pick`th live work order, the ones crews are working on first (Hypothesis
        favours small picks, and a dispatcher taking back or cancelling work under way is
        the telling case)."""
        state = self._orders_now()
        live = sorted((o for o in self.orders if o not in self.deleted),
                      key=lambda o: (state[o]["status"] not in {"en_route", "on_site"}, o))
        return live[pick % len(live)] if live else None

    @rule(action=st.sampled_from(["reassign", "reassign", "cancel", "notes", "remove"]), pick=st.integers(0, 7),
          to=st.sampled_from([None, *CREWS]), text=st.sampled_from(NOTES_TEXTS), stale=st.booleans())
    def dispatcher(self, action: str, pick: int, to: str | None, text: str, stale: bool) -> None:
        """A dispatcher reassigns (or takes back) a work order, cancels one, edits the shared
        notes (maybe from a stale screen), or removes one (once per example)."""
        seen(f"dispatcher {action}")
        order = self._live_order(pick)
        if order is None:
            return
        if action == "reassign":
            self._reassign(order, to)
        elif action == "cancel":
            self._cancel(order)
        elif action == "notes":
            self._edit_notes(order, text, stale)
        elif not self.deleted:
            self._ok(self.http.delete(f"/api/dispatch/workorders/{order}", params={"reason": "entered twice"}))
            self.deleted.add(order)

    def _reassign(self, order: int, to: str | None) -> None:
        crew_id = self.world.crew_ids[to] if to else None
        body = self._ok(self.http.patch(f"/api/dispatch/workorders/{order}",
                                        json={"crew_id": crew_id, "reason": "rebalancing"})).json()
        assert body["crew_id"] == crew_id
        if crew_id is not None:
            self.held[order].add(crew_id)

    def _cancel(self, order: int) -> None:
        current = self._orders_now()[order]["status"]
        response = self.http.patch(f"/api/dispatch/workorders/{order}",
                                   json={"status": "cancelled", "reason": "duplicate report"})
        if current == "cancelled" or can_transition(current, "cancelled"):
            assert self._ok(response).json()["status"] == "cancelled"
            self.cancelled.add(order)
        else:
            assert response.status_code == 400, response.text

    def _edit_notes(self, order: int, text: str, stale: bool) -> None:
        # What the dispatcher's screen shows. The work-order API does not return
        # notes_version yet (it should: PATCH needs it); until it does, read the database.
        shown = self._ok(self.http.get(f"/api/workorders/{order}")).json()
        version = shown["notes_version"] if "notes_version" in shown else self._orders_now()[order]["notes_version"]
        base = version - 1 if stale and version > 0 else version
        response = self.http.patch(f"/api/dispatch/workorders/{order}",
                                   json={"notes": text, "notes_base_version": base})
        now = self._orders_now()[order]
        if base == version:
            self._ok(response)
            assert (now["notes"], now["notes_version"]) == (text, version + 1)
        else:
            assert response.status_code == 409, response.text
            assert now["notes_version"] == version
            seen("dispatcher's stale notes refused")

    @initialize(allowed=st.integers(0, 3), swap=st.integers(0, 4))
    def may_restart(self, allowed: int, swap: int) -> None:
        """Restarts cost seconds: only some examples have one (at most MAX_RESTARTS), and
        fewer a database swap (a copy, then a restart)."""
        self.restarts_left = MAX_RESTARTS if allowed else 0
        self.swaps_left = 1 if swap == 4 else 0

    @rule()
    def feed_compacted(self) -> None:
        """Everything recorded so far is compacted: phones behind the horizon must prime again."""
        with write_session(self.world.engine) as session:
            deleted = compact_feed(session, before=datetime.now(UTC) + timedelta(seconds=1))
        seen("feed compacted" if deleted else "feed compacted (nothing to delete)")

    @precondition(lambda self: self.swaps_left > 0)
    @rule()
    def database_swapped(self) -> None:
        """The server comes back on a copy of its database with another identity (a restore
        elsewhere): every phone's cursor is refused, phones prime again, outboxes stay."""
        self.swaps_left -= 1
        self.world.swap_database()
        seen("database swapped under the phones")
        self.transport.reconnect()
        self.http.close()
        self.http = httpx.Client(base_url=self.world.url, headers=self.world.dispatcher, timeout=30)

    @precondition(lambda self: self.restarts_left > 0 and any(p.outbox for p in self.phones))
    @rule(crash=st.booleans())
    def server_restarts(self, crash: bool) -> None:
        """Stop the server (or kill it) and start it again on the same port, while edits
        are queued; phones keep their outboxes."""
        self.restarts_left -= 1
        self.world.restart(crash=crash)
        seen("server restarted")
        self.transport.reconnect()
        self.http.close()
        self.http = httpx.Client(base_url=self.world.url, headers=self.world.dispatcher, timeout=30)

    def teardown(self) -> None:
        try:
            if sys.exc_info()[1] is None:  # the example passed so far: heal and check the end state
                self._heal_and_check()
        finally:
            self.transport.close()
            self.http.close()

    def _heal_and_check(self) -> None:
        """The network heals: everyone syncs cleanly until the outboxes are empty; every view
        converges to the database and to what a new phone pulls; the review lists are whole."""
        for phone in self.phones:
            self._push(phone, Fault())
            assert not phone.outbox
            assert phone.acked == phone.next_seq - 1, "every queued edit is acknowledged"
        for phone in self.phones:
            self._converge(phone)
        self.server_keeps_every_acknowledged_edit_exactly_once()
        fresh: dict[int, dict[int, Any]] = {}
        for crew in CREWS:
            newcomer = Phone(self.world.url, self.world.headers[crew], client_id=f"{self.run}-new-{uuid.uuid4().hex[:6]}",
                             name=f"a new {crew} phone", crew_id=self.world.crew_ids[crew])
            self._converge(newcomer)
            fresh[newcomer.crew_id] = newcomer.work_orders()
        for phone in self.phones:
            mine, theirs = phone.work_orders(), fresh[phone.crew_id]
            differences = {o: {k: (mine[o].get(k), theirs[o].get(k)) for k in set(mine[o]) | set(theirs[o])
                               if mine[o].get(k) != theirs[o].get(k)}
                           for o in set(mine) & set(theirs) if mine[o] != theirs[o]}
            assert mine == theirs, f"{phone.name} differs from a fresh pull: {sorted(mine)} vs {sorted(theirs)}, {differences}"
        self._check_review_lists()

    def _check_review_lists(self) -> None:
        """What a dispatcher sees: every conflict and rejection of this example, whole."""
        mine = {p.client_id for p in self.phones}
        conflicts = self._ok(self.http.get("/api/dispatch/conflicts", params={
            "status": "open", "limit": 500, "after_id": self.conflicts_before})).json()
        rejections = self._ok(self.http.get("/api/dispatch/rejections", params={
            "status": "open", "limit": 500, "after_id": self.rejections_before})).json()
        assert len(conflicts) < 500 and len(rejections) < 500
        seen_conflicts = {(c["client_id"], c["seq"]): (c["field"], c["server_value"], c["client_value"])
                          for c in conflicts if c["client_id"] in mine}
        seen_rejections = {(r["client_id"], r["seq"]): (r["name"], r["args"])
                           for r in rejections if r["client_id"] in mine}
        assert seen_conflicts == {
            key: (o.conflict["field"], o.conflict["server_value"], o.conflict["client_value"])
            for key, o in self.expected.items() if o.status == "conflict" and o.conflict
        }
        assert seen_rejections == {
            key: (self.sent[key]["name"], self.sent[key]["args"])
            for key, o in self.expected.items() if o.status == "rejected"
        }

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def server_keeps_every_acknowledged_edit_exactly_once(self) -> None:
        cids = [p.client_id for p in self.phones]
        tracked = {key: (item["args"].get("uid") if item["name"] in FACT_KINDS else item["mid"])
                   for key, item in self.sent.items()}
        with Session(self.world.engine) as session:
            last = dict(session.exec(select(SyncClient.client_id, SyncClient.last_seq)
                                     .where(SyncClient.client_id.in_(cids))).all())  # type: ignore[attr-defined]
            stored = session.exec(select(SyncMutation)
                                  .where(SyncMutation.client_id.in_(cids))).all()  # type: ignore[attr-defined]
            rejections = session.exec(select(SyncRejection)
                                      .where(SyncRejection.client_id.in_(cids))).all()  # type: ignore[attr-defined]
            conflicts = session.exec(select(SyncConflict)
                                     .where(SyncConflict.client_id.in_(cids))).all()  # type: ignore[attr-defined]
            events = session.exec(select(WorkOrderEvent).where(
                WorkOrderEvent.uid.in_(list(tracked.values())))).all() if tracked else []  # type: ignore[attr-defined]
            cancelled = session.exec(select(WorkOrder.id, WorkOrder.status).where(
                WorkOrder.id.in_(list(self.cancelled)))).all() if self.cancelled else []  # type: ignore[union-attr]

        for phone in self.phones:
            cid = phone.client_id
            now = last.get(cid, 0)
            assert now == self.server_last[cid], f"{phone.name}: last_seq {now}, answers said {self.server_last[cid]}"
            assert now >= self.db_last[cid] and now >= phone.acked, f"{phone.name}: acknowledged seq went back"
            self.db_last[cid] = now
        acked = {(c, s) for c in cids for s in range(1, last.get(c, 0) + 1)}

        counts = Counter((m.client_id, m.seq) for m in stored)
        assert set(counts) == acked, f"sync_mutation rows {sorted(counts)} for acknowledged {sorted(acked)}"
        assert max(counts.values(), default=1) == 1
        for m in stored:
            item, want = self.sent[m.client_id, m.seq], self.expected[m.client_id, m.seq]
            assert (m.mid, m.name, m.args) == (item["mid"], item["name"], item["args"])
            assert m.status == want.status, (item, m.status, m.reason, want)

        by_key: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for r in rejections:
            by_key[r.client_id, r.seq].append(r)
        want_rejected = {k for k in acked if self.expected[k].status == "rejected"}
        assert set(by_key) == want_rejected, (sorted(by_key), sorted(want_rejected))
        for key, rows in by_key.items():
            item = self.sent[key]
            assert [(r.mid, r.name, r.args) for r in rows] == [(item["mid"], item["name"], item["args"])], rows

        by_key = defaultdict(list)
        for c in conflicts:
            by_key[c.client_id, c.seq].append(c)
        want_conflicts = {k for k in acked if self.expected[k].status == "conflict"}
        assert set(by_key) == want_conflicts, (sorted(by_key), sorted(want_conflicts))
        for key, rows in by_key.items():
            item, want = self.sent[key], self.expected[key].conflict
            assert want is not None and len(rows) == 1, rows
            row = rows[0]
            assert (row.mid, row.name, row.entity, row.entity_id) == (
                item["mid"], item["name"], "work_order", str(item["args"]["work_order_id"]))
            assert {"field": row.field, "server_value": row.server_value, "client_value": row.client_value,
                    "base_version": row.base_version} == want, (item, row)

        found = Counter(e.uid for e in events)
        event_of = {e.uid: e for e in events}
        for key, uid in tracked.items():
            owner = self.uid_owner.get(uid) if uid else None
            if owner is not None and owner[0] != key:
                continue  # a reuse of another edit's uid: that edit's check covers the one event
            want = self.expected.get(key) if key in acked else None
            if want is None or want.event_uid is None:
                assert found[uid] == 0, f"{self.sent[key]} left an event but should not have ({want})"
                continue
            assert found[uid] == 1, f"{self.sent[key]}: {found[uid]} events, want exactly one"
            event, item = event_of[uid], self.sent[key]
            assert (event.work_order_id, event.kind, event.channel) == (
                item["args"]["work_order_id"], want.event["kind"], "sync")
            if event.kind in FACT_KINDS:
                assert event.data == want.event["data"], (event.data, want)
            elif event.kind == "status":
                assert event.to_status == want.event["to_status"]
            else:
                assert (event.data or {}).get("notes") == want.event["notes"]

        for order_id, status in cancelled:
            assert status == "cancelled", f"work order {order_id}: a dispatcher's cancel was overridden ({status})"

    def _converge(self, phone: Phone, page: int = PULL_LIMIT) -> None:
        """Pull cleanly until the phone's view equals the database's view of its crew.

        SQLite has one writer: the first pull must do. On PostgreSQL the feed holds back
        rows above the oldest writer still running (sync/feed.py), which need not be ours
        (autovacuum; other databases too, before the horizon became per database), so a pull
        may lag by design: pull again from the same cursor until it converges. A change the
        cursor had skipped would never arrive, and the test fails after HOLDBACK_TIMEOUT.
        """
        deadline = time.monotonic() + HOLDBACK_TIMEOUT
        while True:
            assert self._pull(phone, Fault(), page)
            difference = self._view_differs(phone)
            if difference is None:
                return
            if self.world.engine.dialect.name != "postgresql" or time.monotonic() > deadline:
                raise AssertionError(difference)
            HOLDBACKS[phone.name] += 1
            time.sleep(0.05)

    def _view_differs(self, phone: Phone) -> str | None:
        with Session(self.world.engine) as session:
            orders = session.exec(select(WorkOrder).where(WorkOrder.crew_id == phone.crew_id,
                                                          WorkOrder.deleted_at.is_(None))).all()  # type: ignore[union-attr]
            ids = [o.id for o in orders]
            events = session.exec(
                select(WorkOrderEvent.work_order_id, WorkOrderEvent.uid)
                .where(WorkOrderEvent.work_order_id.in_(ids), WorkOrderEvent.kind.in_(VIEW_KINDS))  # type: ignore[attr-defined]
                .order_by(WorkOrderEvent.id)  # type: ignore[arg-type]
            ).all() if ids else []
        view = phone.work_orders()
        if sorted(view) != sorted(ids):
            return f"{phone.name} holds work orders {sorted(view)}, its crew has {sorted(ids)}"
        for o in orders:
            shown = view[o.id]  # type: ignore[index]
            mine = (shown["status"], shown["crew_id"], shown["notes"], shown["notes_version"], shown["priority"],
                    shown["version"], [e["uid"] for e in shown["events"]])
            truth = (o.status, o.crew_id, o.notes, o.notes_version, o.priority, o.version,
                     [uid for wo, uid in events if wo == o.id])
            if mine != truth:
                return f"{phone.name}: work order {o.id} is {mine}, the database has {truth}"
        return None


def test_crew_sync_over_a_faulty_network(world: World) -> None:
    HOLDBACKS.clear()
    SEEN.clear()
    machine = type("SyncMachineOnThisDb", (SyncMachine,), {"world": world})
    try:
        run_state_machine_as_test(machine, settings=SETTINGS)
    except BaseException:
        print("the server's last log lines:\n" + "".join(world.log))
        raise
    print("seen:", ", ".join(f"{k}: {v}" for k, v in sorted(SEEN.items())))
    print(f"pulls repeated while PostgreSQL held the feed back: {dict(HOLDBACKS)}")

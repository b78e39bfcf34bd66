"""Seeding and a small HTTP client for the sync tests: real LA work orders, two crews."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.auth.users import create_crew, create_user
from server.db import write_session
from server.intake.importer import import_file
from server.models import Crew, WorkOrder
from server.settings import IntakeSettings
from server.workorders.changes import Actor, assign
from tests.conftest import DATA, load_city_areas

PASSWORD = "a-long-test-password"
LA_FILE = DATA / "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
TEST_ACTOR = Actor(None, "test", "api")


@dataclass
class Seeded:
    crews: dict[str, int]  # crew name -> id
    orders: dict[str, list[int]]  # crew name -> open work-order ids assigned to it
    spare: list[int]  # open work orders of nobody's


def seed(engine: Engine, *, per_crew: int = 6, crews: tuple[str, ...] = ("north", "south")) -> Seeded:
    """Real LA records; crews `north` and `south` with users crew-north / crew-south, and a
    dispatcher `dispatcher`; `per_crew` open work orders assigned to each crew."""
    load_city_areas(engine, "la")
    import_file(engine, LA_FILE, settings=IntakeSettings(timezone="America/Los_Angeles"))
    with write_session(engine) as session:
        ids: dict[str, int] = {}
        for name in crews:
            crew = session.exec(select(Crew).where(Crew.name == name)).first() or create_crew(session, name=name)
            assert crew.id is not None
            ids[name] = crew.id
            create_user(session, username=f"crew-{name}", password=PASSWORD, role="crew", crew_id=crew.id)
        create_user(session, username="dispatcher", password=PASSWORD, role="dispatcher")
        open_orders = session.exec(
            select(WorkOrder).where(WorkOrder.is_open, WorkOrder.crew_id.is_(None)).order_by(WorkOrder.id)  # type: ignore[union-attr]
            .limit(per_crew * len(crews) + 10)
        ).all()
        orders: dict[str, list[int]] = {name: [] for name in crews}
        for index, order in enumerate(open_orders[: per_crew * len(crews)]):
            name = crews[index % len(crews)]
            assign(session, order, crew_id=ids[name], actor=TEST_ACTOR)
            orders[name].append(order.id)  # type: ignore[arg-type]
        spare = [o.id for o in open_orders[per_crew * len(crews):]]
    return Seeded(ids, orders, spare)  # type: ignore[arg-type]


def sign_in(base_url: str, username: str) -> dict[str, str]:
    response = httpx.post(f"{base_url}/api/auth/sign-in", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def mutation(seq: int, name: str, device_ts: datetime | None = None, **args: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "mid": uuid.uuid4().hex,
        "name": name,
        "args": args,
        "device_ts": (device_ts or datetime.now(UTC)).isoformat(),
    }


@dataclass
class Device:
    """A crew phone speaking the protocol over real HTTP, with an outbox and a cursor."""

    base_url: str
    headers: dict[str, str]
    client_id: str = field(default_factory=lambda: f"dev-{uuid.uuid4().hex[:12]}")
    next_seq: int = 1
    outbox: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None
    view: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    reprimed: int = 0

    def queue(self, name: str, device_ts: datetime | None = None, **args: Any) -> dict[str, Any]:
        item = mutation(self.next_seq, name, device_ts, **args)
        self.next_seq += 1
        self.outbox.append(item)
        return item

    def push(self, schema_version: int = 1) -> httpx.Response:
        response = httpx.post(
            f"{self.base_url}/sync/v1/push", headers=self.headers, timeout=30,
            json={"client_id": self.client_id, "schema_version": schema_version, "mutations": self.outbox},
        )
        if response.status_code == 200:
            acked = response.json()["last_seq"]
            self.outbox = [m for m in self.outbox if m["seq"] > acked]
        return response

    def pull_all(self, limit: int = 200) -> list[dict[str, Any]]:
        """Pull until has_more is false, as the PWA does: a refused cursor (422) makes it
        prime again, and after priming it drops whatever the server did not send."""
        changes: list[dict[str, Any]] = []
        priming = self.cursor is None
        seen: set[tuple[str, str]] = set()
        self.reprimed = 0
        while True:
            response = httpx.post(
                f"{self.base_url}/sync/v1/pull", headers=self.headers, timeout=30,
                json={"client_id": self.client_id, "cursor": self.cursor, "limit": limit},
            )
            if response.status_code == 422 and self.cursor is not None:
                assert response.json()["field"] == "cursor"
                self.cursor, priming, self.reprimed = None, True, self.reprimed + 1
                seen.clear()
                continue
            response.raise_for_status()
            body = response.json()
            for change in body["changes"]:
                key = (change["entity"], change["id"])
                if change["op"] == "upsert":
                    self.view[key] = merge_events(change["data"], self.view.get(key))
                    seen.add(key)
                else:
                    self.view.pop(key, None)
                    seen.discard(key)
            changes.extend(body["changes"])
            self.cursor = body["cursor"]
            if not body["has_more"]:
                if priming:
                    self.view = {key: value for key, value in self.view.items() if key in seen}
                return changes

    def work_orders(self) -> dict[int, dict[str, Any]]:
        return {int(k[1]): v for k, v in self.view.items() if k[0] == "work_order"}


def image_bytes(fmt: str, *, size: tuple[int, int] = (32, 24), exif: bytes | None = None) -> bytes:
    """A real image made with Pillow (a gradient), optionally with EXIF data."""
    from PIL import Image

    image = Image.new("RGB", size)
    image.putdata([(x * 7 % 256, y * 11 % 256, (x + y) % 256) for y in range(size[1]) for x in range(size[0])])
    out = io.BytesIO()
    image.save(out, fmt, **({"exif": exif} if exif else {}))
    return out.getvalue()


def merge_events(data: dict[str, Any], held: dict[str, Any] | None) -> dict[str, Any]:
    """A job as the server sent it; an incremental upsert (`events_from` > 0) carries only the
    events from that version on, and the device keeps the ones it holds from before."""
    start = data.get("events_from") or 0
    if not start or held is None:
        return {**data, "events_from": 0}
    sent = {event["uid"] for event in data.get("events", [])}
    kept = [e for e in held.get("events", []) if e.get("version", 0) < start and e["uid"] not in sent]
    return {**data, "events": kept + data.get("events", []), "events_from": 0}  # the device now holds them all


def db_order(engine: Engine, work_order_id: int) -> WorkOrder:
    with Session(engine) as session:
        order = session.get(WorkOrder, work_order_id)
        assert order is not None
        return order

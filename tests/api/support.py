"""Seeded data and an HTTP client per role, for the API tests (fixtures in conftest.py).

Each test module gets (per database kind) LA's council districts, the real MyLA311 export of
2018-12-27..31 imported through the intake pipeline, two crews, one user per role, work
orders assigned to each crew, and contact details on some cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, func, update
from sqlmodel import Session, select

from server.auth import create_crew, create_user
from server.db import write_session
from server.intake.importer import import_file
from server.models import Case, CaseContact, WorkOrder, utcnow
from server.settings import Settings
from tests.conftest import DATA, LiveServer, load_city_areas

LA_FILE = DATA / "la/records/la_myla311_2018-12-27_2018-12-31.csv.gz"
PASSWORDS = {
    "admin": "admin-password-1",
    "dispatcher": "dispatcher-password-1",
    "crew_a": "crew-a-password-1",
    "crew_b": "crew-b-password-1",
}
USERNAMES = {"admin": "ada.admin", "dispatcher": "dee.dispatch", "crew_a": "alex.crew-a", "crew_b": "bo.crew-b"}
ROLES = ("anonymous", "admin", "dispatcher", "crew_a", "crew_b")
ORDERS_PER_CREW = 40


@dataclass
class Seed:
    crew_a: int
    crew_b: int
    user_ids: dict[str, int]
    a_orders: list[int]
    b_orders: list[int]
    unassigned_order: int
    merged_order: int  # a work order with more than one case
    contact_cases: dict[int, dict[str, str]]  # case id → the contact values stored
    a_contact_case: int  # a case with contact details on one of crew A's work orders
    emergencies: list[int]
    not_yet_due: list[int]

    @property
    def contact_values(self) -> list[str]:
        return [v for contact in self.contact_cases.values() for v in contact.values()]


def seed_database(engine: Engine, settings: Settings, tmp_dir: Any) -> Seed:
    load_city_areas(engine, "la")
    summary = import_file(engine, LA_FILE, settings=settings.intake, rejects_dir=tmp_dir)
    assert summary.created > 8000 and summary.adds_up

    with write_session(engine) as session:
        crew_a = create_crew(session, name="Crew A", skills=["graffiti-removal"], capacity=10)
        crew_b = create_crew(session, name="Crew B")
        assert crew_a.id is not None and crew_b.id is not None
        users = {
            "admin": create_user(session, username=USERNAMES["admin"], password=PASSWORDS["admin"], role="admin"),
            "dispatcher": create_user(
                session, username=USERNAMES["dispatcher"], password=PASSWORDS["dispatcher"], role="dispatcher"
            ),
            "crew_a": create_user(
                session, username=USERNAMES["crew_a"], password=PASSWORDS["crew_a"], role="crew", crew_id=crew_a.id
            ),
            "crew_b": create_user(
                session, username=USERNAMES["crew_b"], password=PASSWORDS["crew_b"], role="crew", crew_id=crew_b.id
            ),
        }
        open_ids = list(
            session.exec(select(WorkOrder.id).where(WorkOrder.is_open).order_by(WorkOrder.id)).all()
        )
        closed_ids = list(
            session.exec(select(WorkOrder.id).where(~WorkOrder.is_open).order_by(WorkOrder.id).limit(10)).all()  # type: ignore[arg-type]
        )
        a_orders = open_ids[:ORDERS_PER_CREW] + closed_ids[:5]
        b_orders = open_ids[ORDERS_PER_CREW : 2 * ORDERS_PER_CREW] + closed_ids[5:]
        _assign(session, a_orders, crew_a.id)
        _assign(session, b_orders, crew_b.id)
        now = utcnow()
        not_yet_due = open_ids[: ORDERS_PER_CREW // 2]
        session.exec(  # type: ignore[call-overload]
            update(WorkOrder).where(WorkOrder.id.in_(not_yet_due)).values(sla_due_at=now + timedelta(days=3))  # type: ignore[union-attr]
        )
        emergencies = [open_ids[1], open_ids[ORDERS_PER_CREW + 1], open_ids[-1]]
        session.exec(  # type: ignore[call-overload]
            update(WorkOrder).where(WorkOrder.id.in_(emergencies)).values(emergency=True, priority=1)  # type: ignore[union-attr]
        )
        merged_order = session.exec(
            select(WorkOrder.id).where(WorkOrder.case_count > 1).order_by(WorkOrder.id)
        ).first()
        assert merged_order is not None

        contact_cases = _add_contacts(session, a_orders[:3] + b_orders[:2] + [merged_order])
        a_contact_case = next(
            cid for cid in contact_cases
            if session.get(Case, cid).work_order_id in a_orders  # type: ignore[union-attr]
        )
        unassigned = session.exec(
            select(WorkOrder.id).where(WorkOrder.crew_id.is_(None)).order_by(WorkOrder.id)  # type: ignore[union-attr]
        ).first()
        assert unassigned is not None
        seed = Seed(
            crew_a=crew_a.id,
            crew_b=crew_b.id,
            user_ids={role: u.id for role, u in users.items()},  # type: ignore[misc]
            a_orders=a_orders,
            b_orders=b_orders,
            unassigned_order=unassigned,
            merged_order=merged_order,
            contact_cases=contact_cases,
            a_contact_case=a_contact_case,
            emergencies=emergencies,
            not_yet_due=not_yet_due,
        )
    return seed


def _assign(session: Session, order_ids: list[int], crew_id: int) -> None:
    session.exec(  # type: ignore[call-overload]
        update(WorkOrder).where(WorkOrder.id.in_(order_ids), WorkOrder.is_open).values(crew_id=crew_id, status="assigned")  # type: ignore[union-attr]
    )
    session.exec(  # type: ignore[call-overload]
        update(WorkOrder).where(WorkOrder.id.in_(order_ids), ~WorkOrder.is_open).values(crew_id=crew_id)  # type: ignore[union-attr]
    )


def _add_contacts(session: Session, order_ids: list[int]) -> dict[int, dict[str, str]]:
    contacts: dict[int, dict[str, str]] = {}
    unlocated = session.exec(select(Case.id).where(Case.location_state == "unlocated").order_by(Case.id)).first()
    case_ids = [
        session.exec(select(func.min(Case.id)).where(Case.work_order_id == wid)).one() for wid in order_ids
    ] + [unlocated]
    for n, case_id in enumerate(case_ids):
        assert case_id is not None
        values = {
            "first_name": f"Rosalind{n}",
            "last_name": f"Quackenbush{n}",
            "email": f"rosalind.q{n}@resident.example",
            "phone": f"+1 213 555 01{n:02d}",
        }
        session.add(CaseContact(case_id=case_id, **values))
        contacts[case_id] = values
    return contacts


class Api:
    """httpx against the live server, signed in as one role per call."""

    def __init__(self, server: LiveServer, seed: Seed) -> None:
        self.server = server
        self.seed = seed
        # Drop idle connections before Hypercorn does (keep_alive_timeout, 5 s): reusing one
        # that the server is closing at that moment fails with "disconnected".
        self.client = httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(keepalive_expiry=2.0))
        self.tokens: dict[str, str] = {}
        for role, password in PASSWORDS.items():
            response = self.client.post(
                "/api/auth/sign-in", json={"username": USERNAMES[role], "password": password}
            )
            assert response.status_code == 200, response.text
            self.tokens[role] = response.json()["token"]

    def headers(self, role: str) -> dict[str, str]:
        return {} if role == "anonymous" else {"Authorization": f"Bearer {self.tokens[role]}"}

    def request(self, method: str, role: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, headers=self.headers(role), **kwargs)

    def get(self, role: str, path: str, **params: Any) -> httpx.Response:
        return self.request("GET", role, path, params=params or None)

    def walk(self, role: str, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a keyset-paginated list, page by page."""
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10_000):
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            response = self.get(role, path, **query)
            assert response.status_code == 200, response.text
            page = response.json()
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items
        raise AssertionError("pagination did not end")

    def close(self) -> None:
        self.client.close()

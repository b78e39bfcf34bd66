"""All tables of the server, defined once at import of this module.

Points are two float columns (longitude/latitude, WGS84) so that the same schema works on
SQLite and PostgreSQL; district polygons are one GeoJSON column. Every datetime is aware
UTC. Work orders carry a `version` that every change bumps, and every change is kept as a
`WorkOrderEvent` (who, when, through which channel): the sync change feed builds on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "Blob",
    "Case",
    "CaseContact",
    "Crew",
    "District",
    "FailedSignIn",
    "ImportRun",
    "RoutingRule",
    "ServiceType",
    "User",
    "WorkOrder",
    "WorkOrderEvent",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


class ServiceType(SQLModel, table=True):
    __tablename__ = "service_type"

    code: str = Field(primary_key=True, max_length=120)
    name: str = Field(max_length=200)
    group: str | None = Field(default=None, max_length=120)
    description: str = Field(default="", max_length=2000)
    default_priority: int = Field(default=3)  # 1 most urgent … 4 least
    sla_hours: float = Field(default=72.0)
    duplicate_radius_m: float = Field(default=25.0)
    duplicate_window_hours: float = Field(default=72.0)
    emergency_keywords: list[str] | None = _json()
    # Open311 service definition attributes (code, datatype, required, values …).
    attributes: list[dict[str, Any]] | None = _json()
    keywords: str = Field(default="", max_length=500)
    active: bool = Field(default=True)


class District(SQLModel, table=True):
    __tablename__ = "district"
    __table_args__ = (UniqueConstraint("layer", "code", name="uq_district_layer_code"),)

    id: int | None = Field(default=None, primary_key=True)
    layer: str = Field(max_length=80, index=True)
    code: str = Field(max_length=80)
    name: str = Field(max_length=200)
    geometry: dict[str, Any] | None = _json()  # GeoJSON Polygon or MultiPolygon
    properties: dict[str, Any] | None = _json(nullable=True)
    primary: bool = Field(default=False)  # the layer work orders are routed by


class Crew(SQLModel, table=True):
    __tablename__ = "crew"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    skills: list[str] | None = _json()  # service type codes; empty means any
    home_districts: list[int] | None = _json()
    capacity: int = Field(default=8)
    last_lat: float | None = None
    last_lon: float | None = None
    last_seen_at: datetime | None = None
    active: bool = Field(default=True)


class RoutingRule(SQLModel, table=True):
    """(district, service type) → crew; a None side matches any."""

    __tablename__ = "routing_rule"
    __table_args__ = (UniqueConstraint("district_id", "service_code", name="uq_routing_rule"),)

    id: int | None = Field(default=None, primary_key=True)
    district_id: int | None = Field(default=None, foreign_key="district.id")
    service_code: str | None = Field(default=None, foreign_key="service_type.code")
    crew_id: int = Field(foreign_key="crew.id")


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=80, unique=True)
    display_name: str = Field(default="", max_length=120)
    password_hash: str = Field(max_length=300)
    role: str = Field(max_length=20)  # admin | dispatcher | crew
    crew_id: int | None = Field(default=None, foreign_key="crew.id")
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow)


class FailedSignIn(SQLModel, table=True):
    """Recent failed sign-ins, counted per username so that every worker sees them."""

    __tablename__ = "failed_sign_in"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=80, index=True)
    at: datetime = Field(default_factory=utcnow, index=True)


class ImportRun(SQLModel, table=True):
    __tablename__ = "import_run"

    id: int | None = Field(default=None, primary_key=True)
    file_name: str = Field(max_length=300)  # a base name, never a machine path
    format: str = Field(max_length=40)
    status: str = Field(default="running", max_length=20)  # running | done | failed
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    rows_read: int = 0
    created: int = 0
    merged: int = 0
    already_present: int = 0
    unlocated: int = 0
    rejected: int = 0
    error: str | None = Field(default=None, max_length=2000)


class WorkOrder(SQLModel, table=True):
    __tablename__ = "work_order"
    __table_args__ = (
        Index("ix_work_order_open_type", "service_code", "is_open"),
        Index("ix_work_order_crew_status", "crew_id", "status"),
        Index("ix_work_order_updated", "updated_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=20, unique=True)
    service_code: str = Field(foreign_key="service_type.code", max_length=120)
    lat: float
    lon: float
    address: str | None = Field(default=None, max_length=300)
    description: str = Field(default="", max_length=4000)
    district_id: int | None = Field(default=None, foreign_key="district.id", index=True)
    priority: int = 3
    emergency: bool = False
    sla_due_at: datetime | None = None
    crew_id: int | None = Field(default=None, foreign_key="crew.id")
    status: str = Field(default="new", max_length=20, index=True)
    is_open: bool = True
    resolution: str | None = Field(default=None, max_length=2000)
    # A free-text field dispatchers and crews share (gate codes, hazards on site): edits are
    # checked against the `notes_version` the editor saw.
    notes: str = Field(default="", max_length=4000)
    notes_version: int = 0
    deleted_at: datetime | None = None  # a job removed by a dispatcher; kept for its history
    first_reported_at: datetime
    last_reported_at: datetime
    closed_at: datetime | None = None
    case_count: int = 1
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class WorkOrderEvent(SQLModel, table=True):
    """Append-only history of a work order: every change, with who, when and how."""

    __tablename__ = "work_order_event"
    __table_args__ = (
        Index("ix_event_work_order", "work_order_id", "id"),
        Index("ix_event_recorded", "recorded_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(max_length=64, unique=True)  # client-generated where the client creates it
    work_order_id: int = Field(foreign_key="work_order.id")
    version: int  # the work order's version after this event
    kind: str = Field(max_length=30)  # created | status | assigned | merged | alert | …
    from_status: str | None = Field(default=None, max_length=20)
    to_status: str | None = Field(default=None, max_length=20)
    data: dict[str, Any] | None = _json(nullable=True)
    channel: str = Field(max_length=20)  # import | open311 | api | sync | system
    actor_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    actor: str = Field(default="system", max_length=120)
    occurred_at: datetime  # when it happened (device time for crew edits)
    recorded_at: datetime = Field(default_factory=utcnow)


class Blob(SQLModel, table=True):
    """A photo, content-addressed: uploading the same bytes twice stores them once."""

    __tablename__ = "blob"

    sha256: str = Field(primary_key=True, max_length=64)
    content_type: str = Field(max_length=60)
    size: int
    data: bytes
    uploaded_by: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = Field(default_factory=utcnow)


class Case(SQLModel, table=True):
    __tablename__ = "case_record"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_case_source_external_id"),
        Index("ix_case_work_order", "work_order_id"),
        Index("ix_case_requested", "requested_at", "id"),
        Index("ix_case_location_state", "location_state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=60)
    external_id: str = Field(max_length=80)
    service_code: str = Field(foreign_key="service_type.code", max_length=120)
    service_name: str = Field(max_length=200)
    description: str = Field(default="", max_length=4000)
    address: str | None = Field(default=None, max_length=300)
    lat: float | None = None
    lon: float | None = None
    location_state: str = Field(default="located", max_length=20)  # located | unlocated
    location_problem: str | None = Field(default=None, max_length=200)
    emergency: bool = False  # flagged here too, so an unlocated emergency still alerts
    district_id: int | None = Field(default=None, foreign_key="district.id")
    reported_district: str | None = Field(default=None, max_length=40)
    requested_at: datetime
    original_requested_at: datetime | None = None  # before a demo's time shift
    closed_at: datetime | None = None
    status_received: str | None = Field(default=None, max_length=80)
    resolution: str | None = Field(default=None, max_length=2000)
    agency: str | None = Field(default=None, max_length=120)
    media_url: str | None = Field(default=None, max_length=500)
    attributes: dict[str, Any] | None = _json(nullable=True)
    work_order_id: int | None = Field(default=None, foreign_key="work_order.id")
    tracking_token: str = Field(max_length=40, unique=True)
    import_run_id: int | None = Field(default=None, foreign_key="import_run.id")
    received_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CaseContact(SQLModel, table=True):
    """A reporter's personal data, kept apart from the case and never sent to crews."""

    __tablename__ = "case_contact"

    case_id: int = Field(primary_key=True, foreign_key="case_record.id")
    first_name: str | None = Field(default=None, max_length=120)
    last_name: str | None = Field(default=None, max_length=120)
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=40)
    device_id: str | None = Field(default=None, max_length=120)

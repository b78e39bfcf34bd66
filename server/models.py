"""All tables of the server, defined once at import of this module.

Points are two float columns (longitude/latitude, WGS84) so that the same schema works on
SQLite and PostgreSQL; district polygons are one GeoJSON column. Every datetime is aware
UTC. Work orders carry a `version` that every change bumps, and every change is kept as a
`WorkOrderEvent` (who, when, through which channel): the sync change feed builds on it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "Blob",
    "BlobRef",
    "Case",
    "CaseContact",
    "Crew",
    "District",
    "FailedSignIn",
    "ImportRun",
    "PushNotification",
    "PushSubscription",
    "RoutingRule",
    "ServiceType",
    "SharedValue",
    "User",
    "VapidKey",
    "WorkOrder",
    "WorkOrderEvent",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token_key() -> str:
    return secrets.token_urlsafe(24)


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
    # Where the crew's day starts (a depot): the suggested crew and the route start here
    # when the crew has not reported a position yet.
    yard_lat: float | None = None
    yard_lon: float | None = None


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
    # Named in every token and checked on each request: a token never outlives its user nor
    # passes to a new user who gets the same id. Changing it signs the user out everywhere.
    token_key: str = Field(default_factory=new_token_key, max_length=64)


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
        # The list filters by type or priority, newest first (migration 0008).
        Index("ix_work_order_type_newest", "service_code", "id"),
        Index("ix_work_order_priority_newest", "priority", "id"),
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
    # The job's place in its crew's day (1 first); set by the dispatcher's route order.
    route_position: int | None = None


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


class BlobRef(SQLModel, table=True):
    """A photo fact of a work order refers to this blob: who may see the job may see the photo."""

    __tablename__ = "blob_ref"
    __table_args__ = (Index("ix_blob_ref_work_order", "work_order_id"),)

    sha256: str = Field(primary_key=True, max_length=64)
    work_order_id: int = Field(primary_key=True, foreign_key="work_order.id")


class Case(SQLModel, table=True):
    __tablename__ = "case_record"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_case_source_external_id"),
        Index("ix_case_work_order", "work_order_id"),
        Index("ix_case_requested", "requested_at", "id"),
        Index("ix_case_location_state", "location_state"),
        Index("ix_case_external_id", "external_id"),  # tracking by the city's number (0007)
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


class SharedValue(SQLModel, table=True):
    """A value every worker and host shares, under a namespaced key (server/sharedstate.py).

    Expired rows count as absent."""

    __tablename__ = "shared_value"

    key: str = Field(primary_key=True, max_length=300)
    value: bytes
    expires_at: datetime | None = Field(default=None, index=True)


# -- Web Push: residents' and crews' subscriptions, the outbox of notices, the VAPID key ------


class PushSubscription(SQLModel, table=True):
    """A browser's Web Push subscription, bound to one case (a resident) or one user (a crew
    member), with the language its notices are written in.

    The same browser (endpoint) may follow several cases: one row per binding. The endpoint
    is indexed through its SHA-256 (`endpoint_hash`): endpoints are long URLs.
    """

    __tablename__ = "push_subscription"
    __table_args__ = (
        UniqueConstraint("endpoint_hash", "case_id", name="uq_push_subscription_case"),
        UniqueConstraint("endpoint_hash", "user_id", name="uq_push_subscription_user"),
        Index("ix_push_subscription_case", "case_id"),
        Index("ix_push_subscription_user", "user_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    endpoint: str = Field(max_length=1024)
    endpoint_hash: str = Field(max_length=64)
    p256dh: str = Field(max_length=100)  # the browser's P-256 public key, base64url
    auth: str = Field(max_length=40)  # the 16-byte auth secret, base64url
    language: str = Field(default="en", max_length=16)
    case_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("case_record.id", ondelete="CASCADE"), nullable=True)
    )
    user_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=True)
    )
    expires_at: datetime | None = None  # the browser's expirationTime, if it gave one
    last_kind: str | None = Field(default=None, max_length=30)  # the last notice kind queued for it
    created_at: datetime = Field(default_factory=utcnow)


class PushNotification(SQLModel, table=True):
    """The outbox: one row per (subscription, work-order event), written in the same
    transaction as the change, sent by the sender (server.notify.sender).

    state: pending → claimed (a sender holds it until `lease_until`) → sending (its POST may
    have left) → sent | failed (refused, or out of attempts) | expired (older than its TTL)
    | unknown (its sender died during the POST: not sent again). A 404/410 deletes the
    subscription, and its notices with it.
    """

    __tablename__ = "push_notification"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_uid", name="uq_push_notification_once"),
        Index("ix_push_notification_due", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(
        sa_column=Column(Integer, ForeignKey("push_subscription.id", ondelete="CASCADE"), nullable=False)
    )
    event_uid: str = Field(max_length=64)
    kind: str = Field(max_length=30)
    payload: dict[str, Any] | None = _json()  # {"title", "body", "url", ...}: rendered in its language
    urgency: str = Field(default="normal", max_length=10)
    ttl_seconds: int = Field(default=86400)
    state: str = Field(default="pending", max_length=10)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=200)


class VapidKey(SQLModel, table=True):
    """The server's VAPID key pair (RFC 8292), made by `fieldwork vapid`. One row; every
    worker and host reads it from here. The private key is never served or logged."""

    __tablename__ = "vapid_key"

    id: int | None = Field(default=None, primary_key=True)
    private_key: str = Field(max_length=400)  # PEM (PKCS#8) of the P-256 key
    public_key: str = Field(max_length=100)  # uncompressed point, base64url: applicationServerKey
    created_at: datetime = Field(default_factory=utcnow)

"""API shapes of work orders, cases, events, districts and their GeoJSON forms.

Contact details never appear here except in `ContactPublic`, which only the dispatcher's
explicit contact endpoint returns. A crew gets `CasePublic`; dispatchers and admins get
`CaseForDispatcher` (adds whether there is a contact and the resident's tracking token).

GeoJSON shapes are msgspec structs (a whole city's open work orders in one response) that
follow RFC 7946: coordinates are [longitude, latitude], WGS84, no `crs` member.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from sqlmodel import SQLModel

__all__ = [
    "CaseForDispatcher",
    "CasePublic",
    "ContactPublic",
    "DistrictCollection",
    "DistrictFeature",
    "DistrictPublic",
    "EventPublic",
    "GeocodedPosition",
    "PointGeometry",
    "ServiceTypePublic",
    "UnlocatedCase",
    "UnlocatedPage",
    "WorkOrderCollection",
    "WorkOrderDetail",
    "WorkOrderFeature",
    "WorkOrderListItem",
    "WorkOrderPage",
    "WorkOrderProperties",
    "WorkOrderPublic",
]


class WorkOrderPublic(SQLModel):
    id: int
    number: str
    service_code: str
    service_name: str
    status: str
    status_label: str
    status_kind: str
    lat: float
    lon: float
    address: str | None
    description: str
    district_id: int | None
    district_name: str | None
    priority: int
    emergency: bool
    sla_due_at: datetime | None
    overdue: bool
    crew_id: int | None
    crew_name: str | None
    case_count: int
    first_reported_at: datetime
    last_reported_at: datetime
    closed_at: datetime | None
    resolution: str | None
    notes: str  # shared free text that crews and dispatchers edit (optimistic, see notes_version)
    notes_version: int
    version: int
    created_at: datetime
    updated_at: datetime


# The list's rows: exactly WorkOrderPublic's fields, as a msgspec struct. A page of them is
# built straight from database rows and encoded by msgspec without pydantic in between
# (several times cheaper per row: the list is the busiest read). Derived, so that a field
# added to WorkOrderPublic appears in the list too.
WorkOrderListItem = msgspec.defstruct(
    "WorkOrderListItem",
    [(name, field.annotation) for name, field in WorkOrderPublic.model_fields.items()],
    kw_only=True,
)


class WorkOrderPage(msgspec.Struct, kw_only=True):
    items: list[WorkOrderListItem]  # type: ignore[valid-type]
    next_cursor: str | None


class GeocodedPosition(SQLModel):
    """How the geocoder placed an address-only report (server/intake/geocode.py): its point is
    a guess from the city's located history, this sure, not the city's or a person's."""

    method: str  # exact | interpolated | nearby
    confidence: float  # 0..1; PLACE_CONFIDENCE (0.5) and up are placed


class CasePublic(SQLModel):
    """A case as a crew may see it: no contact details, no tracking token."""

    id: int
    source: str
    external_id: str
    service_code: str
    service_name: str
    description: str
    address: str | None
    lat: float | None
    lon: float | None
    requested_at: datetime
    original_requested_at: datetime | None
    closed_at: datetime | None
    status_received: str | None
    agency: str | None
    geocoded: GeocodedPosition | None = None  # None: the point came from the city or a person


class CaseForDispatcher(CasePublic):
    has_contact: bool
    tracking_token: str


class ContactPublic(SQLModel):
    case_id: int
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None


class EventPublic(SQLModel):
    uid: str
    version: int
    kind: str
    from_status: str | None
    to_status: str | None
    data: dict[str, Any] | None
    channel: str
    actor: str
    occurred_at: datetime
    recorded_at: datetime


class WorkOrderDetail(WorkOrderPublic):
    cases: list[CaseForDispatcher | CasePublic]
    events: list[EventPublic]


class UnlocatedCase(CaseForDispatcher):
    location_problem: str | None
    reported_district: str | None


class UnlocatedPage(SQLModel):
    items: list[UnlocatedCase]
    next_cursor: str | None


class ServiceTypePublic(SQLModel):
    code: str
    name: str
    group: str | None
    description: str
    default_priority: int
    sla_hours: float
    active: bool


class DistrictPublic(SQLModel):
    id: int
    layer: str
    code: str
    name: str
    primary: bool


# -- GeoJSON (RFC 7946) -------------------------------------------------------------------


class PointGeometry(msgspec.Struct, kw_only=True):
    type: Literal["Point"] = "Point"
    coordinates: tuple[float, float]  # [longitude, latitude]


class WorkOrderProperties(msgspec.Struct, kw_only=True):
    id: int
    number: str
    status: str
    status_label: str
    service_code: str
    service: str
    priority: int
    emergency: bool
    district: str | None
    crew: str | None
    sla_due_at: datetime | None
    overdue: bool
    address: str | None = None
    description: str = ""
    requested_at: datetime | None = None  # the first report
    closed_at: datetime | None = None


class WorkOrderFeature(msgspec.Struct, kw_only=True):
    type: Literal["Feature"] = "Feature"
    id: int
    geometry: PointGeometry
    properties: WorkOrderProperties


class WorkOrderCollection(msgspec.Struct, kw_only=True):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[WorkOrderFeature]
    truncated: bool = False  # a foreign member: more orders matched than `limit`
    next_cursor: str | None = None  # a foreign member: pass it as `cursor` for the next page


class DistrictFeature(msgspec.Struct, kw_only=True):
    type: Literal["Feature"] = "Feature"
    id: int
    geometry: dict[str, Any] | None
    properties: dict[str, Any]


class DistrictCollection(msgspec.Struct, kw_only=True):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[DistrictFeature]

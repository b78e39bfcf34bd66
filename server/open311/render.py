"""The GeoReport v2 response shapes and their two renderings, JSON and XML.

Each shape is a msgspec Struct whose field order is the spec's. JSON is the Spark mapping of
the XML: a list renders as a bare array (`[{...}]`), a single document (service definition,
discovery) as an object. XML gets the spec's root and item elements, an XML declaration,
empty elements for unknown values, and text stripped of characters XML 1.0 cannot carry.

    render(Format.XML, [ServiceRequest(...)], root="service_requests", item="request")
    render_errors(Format.JSON, 404, ["service_request_id 7 not found"])
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

import msgspec
from litestar import Response

__all__ = [
    "Attribute",
    "AttributeValue",
    "Discovery",
    "Endpoint",
    "Error",
    "Format",
    "RequestCreated",
    "RequestUpdate",
    "Service",
    "ServiceDefinition",
    "ServiceRequest",
    "TokenLookup",
    "UpdateAccepted",
    "MEDIA_TYPES",
    "format_datetime",
    "render",
    "render_errors",
]


class Format(StrEnum):
    JSON = "json"
    XML = "xml"


# Litestar appends "; charset=utf-8" to text/* types itself.
MEDIA_TYPES = {
    Format.JSON: "application/json; charset=utf-8",
    Format.XML: "text/xml",
}


# -- shapes -----------------------------------------------------------------------------


class Service(msgspec.Struct):
    service_code: str
    service_name: str
    description: str | None
    metadata: bool
    type: str
    keywords: str | None
    group: str | None


class AttributeValue(msgspec.Struct):
    key: str
    name: str


class Attribute(msgspec.Struct):
    variable: bool
    code: str
    datatype: str
    required: bool
    datatype_description: str | None
    order: int
    description: str | None
    # Only list datatypes carry values; UNSET leaves the field out of both renderings.
    values: list[AttributeValue] | msgspec.UnsetType = msgspec.UNSET


class ServiceDefinition(msgspec.Struct):
    service_code: str
    attributes: list[Attribute]


class ServiceRequest(msgspec.Struct):
    service_request_id: str
    status: str
    status_notes: str | None
    service_name: str | None
    service_code: str
    description: str | None
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: str
    updated_datetime: str | None
    expected_datetime: str | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None


class RequestCreated(msgspec.Struct):
    service_request_id: str
    token: str
    service_notice: str | None
    account_id: str | None


class TokenLookup(msgspec.Struct):
    service_request_id: str
    token: str


class RequestUpdate(msgspec.Struct):
    """One entry of mySociety's `servicerequestupdates` extension."""

    update_id: str
    service_request_id: str
    status: str  # the extended status: open, closed, fixed, action_scheduled, …
    description: str
    updated_datetime: str
    media_url: str
    external_status_code: str


class UpdateAccepted(msgspec.Struct):
    """The answer to mySociety's POST servicerequestupdates: our id for the update."""

    update_id: str


class Endpoint(msgspec.Struct):
    specification: str
    url: str
    changeset: str
    type: str
    formats: list[str]


class Discovery(msgspec.Struct):
    changeset: str
    contact: str
    key_service: str
    endpoints: list[Endpoint]


class Error(msgspec.Struct):
    code: int
    description: str


# -- rendering --------------------------------------------------------------------------

# Element names of list items in XML (the Spark convention's singular forms).
_ITEM_TAGS = {"attributes": "attribute", "values": "value", "endpoints": "endpoint", "formats": "format"}
# Characters outside XML 1.0's Char production (control characters, lone surrogates, …).
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'


def format_datetime(value: datetime | None, zone: ZoneInfo) -> str | None:
    """W3C date-time with the jurisdiction's offset, e.g. ``2018-12-28T09:15:00-08:00``."""
    if value is None:
        return None
    return value.astimezone(zone).isoformat(timespec="seconds")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))


def _append(parent: ET.Element, tag: str, value: object) -> None:
    if value is msgspec.UNSET:
        return
    element = ET.SubElement(parent, tag)
    _fill(element, tag, value)


def _fill(element: ET.Element, tag: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _append(element, name, getattr(value, name))
    elif isinstance(value, list):
        item = _ITEM_TAGS[tag]
        for entry in value:
            _append(element, item, entry)
    else:
        element.text = _text(value)


def to_xml(payload: msgspec.Struct | Sequence[msgspec.Struct], *, root: str, item: str | None = None) -> bytes:
    """The XML document: `root` holding one `item` element per entry, or the struct's fields."""
    element = ET.Element(root)
    if isinstance(payload, list):
        if item is None:
            raise ValueError("a list needs an item element name")
        for entry in payload:
            _append(element, item, entry)
    else:
        _fill(element, root, payload)
    return (_DECLARATION + ET.tostring(element, encoding="unicode", short_empty_elements=False)).encode("utf-8")


def to_json(payload: msgspec.Struct | Sequence[msgspec.Struct]) -> bytes:
    return msgspec.json.encode(payload)


def render(
    fmt: Format,
    payload: msgspec.Struct | Sequence[msgspec.Struct],
    *,
    root: str,
    item: str | None = None,
    status_code: int = 200,
) -> Response[bytes]:
    body = to_json(payload) if fmt is Format.JSON else to_xml(payload, root=root, item=item)
    return Response(content=body, status_code=status_code, media_type=MEDIA_TYPES[fmt])


def render_errors(fmt: Format, status_code: int, descriptions: list[str]) -> Response[bytes]:
    """The spec's error document; the HTTP status is repeated as each error's code."""
    errors = [Error(code=status_code, description=d) for d in descriptions]
    return render(fmt, errors, root="errors", item="error", status_code=status_code)

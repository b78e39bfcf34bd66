"""Open311 GeoReport v2 `GET requests.json` responses: a JSON array of service requests.

Unlike the city CSVs the values are typed (lat/long are numbers or null) and times carry an
offset ("2026-03-11T02:30:00Z"), so `tz` only matters for a server that sends naive times.
A case is closed when `status` is "closed"; GeoReport has no close-time field, so the
close time is `updated_datetime` (the last change, which for a closed request is its
closing) or, without it, the request time.

`extended_attributes` first_name/last_name/email/phone become the `Contact`. That is the
reporter's personal data: it goes only into `IncomingCase.contact`, and it is removed from
the raw record a `RejectedRow` keeps, because rejects are written to a file people read.

`service_code` is the slug of `service_name`, as for every source: the GeoReport
service_code of one server (Boston sends "Mayor's 24 Hour Hotline:General Request:…" or
UUIDs) means nothing in our catalogue.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from ..records import BAD_CLOSE_TIME, Contact, FormatError, IncomingCase, RejectedRow
from .common import FieldError, TimeParser, batched, coordinate_pair, slug, text_of
from .streams import STREAM_ERRORS, Head, json_array_items, open_text
from .table import Item, columns_message

__all__ = ["NAME", "matches", "read"]

NAME = "open311"

_REQUIRED = ("service_request_id", "requested_datetime")
# W3C datetimes as GeoReport specifies them (strptime's %z takes "Z" and "+01:00"); the last
# format, without offset, is read as local time in `tz`.
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S")
_CONTACT_FIELDS = ("first_name", "last_name", "email", "phone")
_PERSONAL_KEYS = frozenset({"name", "first_name", "last_name", "email", "phone"})


def matches(head: Head) -> bool:
    return head.kind == "json" and all(key in head.columns for key in _REQUIRED)


def read(path: str | Path, tz: ZoneInfo, batch_size: int) -> Iterator[list[Item]]:
    with open_text(path) as stream:
        yield from batched(_items(stream, tz), batch_size)


def _items(stream: TextIO, tz: ZoneInfo) -> Iterator[Item]:
    times = TimeParser(_TIME_FORMATS, tz)
    line = 0
    try:
        for record in json_array_items(stream):
            line += 1
            if not isinstance(record, dict):
                yield RejectedRow(line=line, reason="record is not a JSON object", raw={"_value": text_of(record)})
                continue
            if line == 1 and not all(key in record for key in _REQUIRED):
                raise FormatError(columns_message(NAME, [str(key) for key in record]))
            try:
                yield _case(line, record, times)
            except FieldError as problem:
                yield RejectedRow(line=line, reason=str(problem), raw=_raw_without_contact(record))
    except STREAM_ERRORS as exc:
        raise FormatError(f"file is truncated or corrupt after record {line}: {exc}") from exc


def _case(line: int, record: dict[str, object], times: TimeParser) -> IncomingCase:
    def get(key: str) -> str:
        return text_of(record.get(key)).strip()

    external_id = get("service_request_id")
    if not external_id:
        raise FieldError("missing id (column 'service_request_id')")
    service_name = get("service_name")
    service_code = slug(service_name)
    if not service_code:
        raise FieldError(f"missing service type (column 'service_name'): {service_name!r}")
    created_text = get("requested_datetime")
    requested_at = times.to_utc(created_text, "requested_datetime")

    status = get("status") or None
    closed_at = None
    bad_close: str | None = None
    if status is not None and status.casefold() == "closed":
        closed_at = requested_at
        if updated_text := get("updated_datetime"):
            closed_at = times.to_utc(updated_text, "updated_datetime")
            if closed_at < requested_at:
                # Kept, closed when it was opened, the source's time flagged (see table.py).
                bad_close = f"updated_datetime {updated_text!r} is before requested_datetime {created_text!r}"
                closed_at = requested_at

    point = coordinate_pair(get("lat"), get("long"), "lat", "long")
    return IncomingCase(
        source="open311",
        external_id=external_id,
        service_code=service_code,
        service_name=service_name,
        requested_at=requested_at,
        lat=point[0] if point else None,
        lon=point[1] if point else None,
        description=get("description"),
        address=get("address") or None,
        agency=get("agency_responsible") or None,
        status_received=status,
        closed_at=closed_at,
        resolution=get("status_notes") or None,
        media_url=get("media_url") or None,
        contact=_contact(record.get("extended_attributes")),
        attributes={BAD_CLOSE_TIME: [bad_close]} if bad_close else {},
        line=line,
    )


def _contact(extended: object) -> Contact | None:
    if not isinstance(extended, dict):
        return None
    values = {name: text_of(extended.get(name)).strip() or None for name in _CONTACT_FIELDS}
    contact = Contact(**values)
    return None if contact.is_empty() else contact


def _raw_without_contact(record: dict[str, object]) -> dict[str, str]:
    raw: dict[str, str] = {}
    for key, value in record.items():
        if key == "extended_attributes" and isinstance(value, dict):
            raw[str(key)] = text_of({k: v for k, v in value.items() if k not in _PERSONAL_KEYS})
        else:
            raw[str(key)] = text_of(value)
    return raw

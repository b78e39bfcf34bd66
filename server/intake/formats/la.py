"""Los Angeles MyLA311 exports (data.lacity.org "MyLA311 Service Request Data").

Two header generations with the same content: CamelCase (2017-2019 portal CSV; the 2018-12
pull adds six Socrata computed-region columns, which are region ids, not district numbers,
and are ignored) and lower case (2020, via hackforla, with an added `_daystoclose`).
Dates are wall-clock Los Angeles time: `12/31/2017 11:59:58 PM` or `2020-01-01 00:05:00`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from .common import positive_int_label
from .streams import Head
from .table import Item, Schema, pick_schema, read_csv_batches

__all__ = ["NAME", "SCHEMAS", "matches", "read"]

NAME = "la"

_DATE_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%Y-%m-%d %H:%M:%S")


def _is_closed(status: str) -> bool:
    # Other values seen: Open, Pending, Referred Out, Cancelled. Cancelled is not a
    # resolution the city reports as done, so it stays open for us to look at.
    return status.casefold() == "closed"


MYLA311_CAMEL = Schema(
    source="la",
    id="SRNumber",
    type="RequestType",
    created="CreatedDate",
    date_formats=_DATE_FORMATS,
    status="Status",
    is_closed=_is_closed,
    closed="ClosedDate",
    updated="UpdatedDate",
    resolution="ActionTaken",
    lat="Latitude",
    lon="Longitude",
    address=("Address",),
    agency="Owner",
    district="CD",  # council district 1-15
    district_label=positive_int_label,
)

MYLA311_LOWER = Schema(
    source="la",
    id="srnumber",
    type="requesttype",
    created="createddate",
    date_formats=_DATE_FORMATS,
    status="status",
    is_closed=_is_closed,
    closed="closeddate",
    updated="updateddate",
    resolution="actiontaken",
    lat="latitude",
    lon="longitude",
    address=("address",),
    agency="owner",
    district="cd",
    district_label=positive_int_label,
)

SCHEMAS = (MYLA311_CAMEL, MYLA311_LOWER)


def matches(head: Head) -> bool:
    return head.kind == "csv" and pick_schema(SCHEMAS, head.columns) is not None


def read(path: str | Path, tz: ZoneInfo, batch_size: int) -> Iterator[list[Item]]:
    return read_csv_batches(path, SCHEMAS, NAME, tz, batch_size)

"""NYC 311 exports (NYC Open Data dataset erm2-nwe9), three layouts of the same records.

* Portal CSV, Title Case headers: the 2013 generation (52 columns with School/Ferry/Garage
  fields, no Resolution Description) and the 2019-2023 generation (41 columns, some pulls
  with 5 computed-region columns). Dates `12/25/2013 11:59:08 PM`.
* SODA API CSV, snake_case headers: column order and presence vary per pull because the API
  omits all-null columns, so only id, type and created date are required.
  Dates `2023-12-08T12:00:00.000`.
* SODA API JSON (`*.json.gz`): an array of objects with the snake_case keys, null fields
  left out, `location` as an object (we read `latitude`/`longitude` instead).

All dates are New York wall-clock time. `Community Board` ("05 BROOKLYN") becomes the
BoroCD code ("305") that the community-district polygons carry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from .streams import Head, read_head
from .table import Item, Schema, pick_schema, read_csv_batches, read_json_batches

__all__ = ["NAME", "SCHEMAS", "community_district", "matches", "read"]

NAME = "nyc"

_DATE_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%S.%f")

_BOROUGH_CODES = {"MANHATTAN": 1, "BRONX": 2, "BROOKLYN": 3, "QUEENS": 4, "STATEN ISLAND": 5}


def community_district(text: str) -> str | None:
    """"05 BROOKLYN" → "305" (borough code * 100 + board number, the BoroCD of the polygons).

    "Unspecified BROOKLYN", "0 Unspecified" and anything else unexpected → None. Numbers
    above 18 are kept: 26-28 BRONX, 55-56 BROOKLYN, 64 MANHATTAN, 80-84 QUEENS, 95 STATEN
    ISLAND are the parks/airports "joint interest areas" that have polygons of their own.
    """
    number, _, borough = text.strip().partition(" ")
    code = _BOROUGH_CODES.get(borough.strip().upper())
    if code is None or not number.isdigit():
        return None
    try:
        board = int(number)
    except ValueError:  # isdigit accepts some characters int() refuses, e.g. "²"
        return None
    if not 0 < board < 100:
        return None
    return str(code * 100 + board)


def _is_closed(status: str) -> bool:
    # Other values seen: Open, Assigned, Pending, Started, In Progress, Email Sent.
    return status.casefold() == "closed"


PORTAL = Schema(
    source="nyc",
    id="Unique Key",
    type="Complaint Type",
    created="Created Date",
    date_formats=_DATE_FORMATS,
    status="Status",
    is_closed=_is_closed,
    closed="Closed Date",
    updated="Resolution Action Updated Date",
    resolution="Resolution Description",  # absent in the 2013 generation
    lat="Latitude",
    lon="Longitude",
    address=("Incident Address", ("Cross Street 1", "Cross Street 2"), ("Intersection Street 1", "Intersection Street 2")),
    agency="Agency",
    district="Community Board",
    district_label=community_district,
    description=("Descriptor", "Location Type"),
    subtype="Descriptor",
)

SODA_API = Schema(
    source="nyc",
    id="unique_key",
    type="complaint_type",
    created="created_date",
    date_formats=_DATE_FORMATS,
    status="status",
    is_closed=_is_closed,
    closed="closed_date",
    updated="resolution_action_updated_date",
    resolution="resolution_description",
    lat="latitude",
    lon="longitude",
    address=("incident_address", ("cross_street_1", "cross_street_2"), ("intersection_street_1", "intersection_street_2")),
    agency="agency",
    district="community_board",
    district_label=community_district,
    description=("descriptor", "location_type"),
    subtype="descriptor",
)

SCHEMAS = (PORTAL, SODA_API)


def matches(head: Head) -> bool:
    if head.kind == "json":
        return pick_schema((SODA_API,), head.columns) is not None
    return pick_schema(SCHEMAS, head.columns) is not None


def read(path: str | Path, tz: ZoneInfo, batch_size: int) -> Iterator[list[Item]]:
    if read_head(path).kind == "json":
        return read_json_batches(path, SODA_API, NAME, tz, batch_size)
    return read_csv_batches(path, SCHEMAS, NAME, tz, batch_size)

"""City of Chicago 311 exports: two unrelated schemas, both source "chicago".

* Street lights / alley lights: the DSSG "411-on-311" projection of the old per-type portal
  datasets (2012-04..2013-07). No status column (a `Completed Date` means done), dates like
  `1-Apr-12`, and only Illinois State Plane East coordinates (EPSG:3435, US feet) in
  `x_coord`/`y_coord`. `Location` holds the street address ("5931 N ROCKWELL ST "), so it is
  used as the address. The agency is not in the file; street and alley lights are the
  Department of Transportation's (CDOT) work.
* Graffiti removal (portal "311 Service Requests - Graffiti Removal - Historical"): dates
  `MM/DD/YYYY`, WGS84 Latitude/Longitude with X/Y Coordinate (EPSG:3435) as fallback (14 rows
  have only X/Y), and Status "Completed", "Completed - Dup", "Open - Dup". Graffiti
  removal is run by the Department of Streets and Sanitation (DSS).

Dates carry no time, so a request is dated local midnight.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from .common import positive_int_label
from .streams import Head
from .table import Item, Schema, pick_schema, read_csv_batches

__all__ = ["NAME", "SCHEMAS", "matches", "read"]

NAME = "chicago"

_DATE_FORMATS = ("%d-%b-%y", "%m/%d/%Y")


def _graffiti_closed(status: str) -> bool:
    return status.startswith("Completed")  # "Completed" and "Completed - Dup"


LIGHTS = Schema(
    source="chicago",
    id="Service Request No",
    type="Type",
    created="Created Date",
    date_formats=_DATE_FORMATS,
    status=None,
    is_closed=None,
    closed="Completed Date",
    updated=None,
    resolution="Outcome",  # the crew's action: Relamped, Replaced Fixture, ...
    x="x_coord",
    y="y_coord",
    address=("Location",),
    fixed_agency="CDOT",
    district="community_area",
    district_label=positive_int_label,  # "0" and blank → None
)

GRAFFITI = Schema(
    source="chicago",
    id="Service Request Number",
    type="Type of Service Request",
    created="Creation Date",
    date_formats=_DATE_FORMATS,
    status="Status",
    is_closed=_graffiti_closed,
    closed="Completion Date",
    updated=None,
    resolution="Status",  # "Completed - Dup" is the city's duplicate flag, worth keeping
    lat="Latitude",
    lon="Longitude",
    x="X Coordinate",
    y="Y Coordinate",
    address=("Street Address",),
    fixed_agency="DSS",
    district="Community Area",
    district_label=positive_int_label,
    description=("What Type of Surface is the Graffiti on?", "Where is the Graffiti located?"),
)

SCHEMAS = (LIGHTS, GRAFFITI)


def matches(head: Head) -> bool:
    return head.kind == "csv" and pick_schema(SCHEMAS, head.columns) is not None


def read(path: str | Path, tz: ZoneInfo, batch_size: int) -> Iterator[list[Item]]:
    return read_csv_batches(path, SCHEMAS, NAME, tz, batch_size)

"""Declarative column tables for the city exports, and the one mapper that applies them.

Each export generation (LA 2017-2019 CamelCase, LA 2020 lower case, Chicago lights, Chicago
graffiti, NYC portal CSV, NYC SODA API) is a `Schema`: which column holds which field. A
`RowMapper` binds a schema to a concrete header once (names → positions) and then turns rows
into `IncomingCase` or `RejectedRow`. Format modules only declare tables; the rules (what
makes a case closed, which close date wins, how coordinates are validated) live here once.

Rows whose coordinates are State Plane feet come out of the mapper as `Unprojected` and are
finished per batch, so the pyproj call happens on whole lists (see projection.py).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from ..records import BAD_CLOSE_TIME, FormatError, IncomingCase, RejectedRow
from .common import (
    FieldError,
    TimeParser,
    batched,
    clean,
    coordinate_pair,
    join_nonblank,
    projected_pair,
    reject,
    slug,
    text_of,
)
from .projection import state_plane_to_wgs84
from .streams import STREAM_ERRORS, json_array_items, open_text

__all__ = ["Item", "Schema", "RowMapper", "Unprojected", "read_csv_batches", "read_json_batches", "pick_schema"]

Item = IncomingCase | RejectedRow

# An address source: one column, or two columns naming a corner ("A & B", used only when both are filled).
AddressSource = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Schema:
    """Where one export generation keeps each field. Column names are exact header cells;
    None means the generation has no such column. Only id, type and created are required
    in a header: any other column may be missing (SODA API pulls drop all-null columns)
    and then reads as blank."""

    source: str  # IncomingCase.source
    id: str
    type: str
    created: str
    date_formats: tuple[str, ...]  # explicit strptime formats, for every date column of the schema
    status: str | None  # None: there is no status column and a case is closed iff `closed` is filled
    is_closed: Callable[[str], bool] | None  # the stripped status text → closed? (None when status is None)
    closed: str | None  # close date; falls back to `updated`, then to the created date
    updated: str | None
    resolution: str | None
    lat: str | None = None  # WGS84 degrees
    lon: str | None = None
    x: str | None = None  # EPSG:3435 US feet; used when lat/lon are absent or blank
    y: str | None = None
    address: tuple[AddressSource, ...] = ()  # first usable source wins
    agency: str | None = None  # column
    fixed_agency: str | None = None  # for exports of a single department, which carry no agency column
    district: str | None = None
    district_label: Callable[[str], str | None] = clean  # raw district text → normalised label
    description: tuple[str, ...] = ()  # filled values joined with "; "
    subtype: str | None = None  # the finer kind of the complaint (NYC's descriptor), to describe new types

    @property
    def required(self) -> tuple[str, str, str]:
        return (self.id, self.type, self.created)


def pick_schema(schemas: Iterable[Schema], columns: Sequence[str]) -> Schema | None:
    present = set(columns)
    for schema in schemas:
        if all(column in present for column in schema.required):
            return schema
    return None


def columns_message(kind: str, columns: Sequence[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:12])
    more = f", … ({len(columns)} in all)" if len(columns) > 12 else ""
    return f"not a recognised {kind} export: header has columns {shown}{more}"


@dataclass(slots=True)
class Unprojected:
    """A case whose location is still State Plane feet; `resolve` finishes it after the batch transform."""

    case: IncomingCase
    x: float
    y: float
    columns: tuple[str, str]
    texts: tuple[str, str]
    header: Sequence[str]
    row: Sequence[str]

    def resolve(self, lat: float, lon: float) -> Item:
        if math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            self.case.lat = lat
            self.case.lon = lon
            return self.case
        (x_col, y_col), (x_text, y_text) = self.columns, self.texts
        reason = f"bad coordinates in {x_col!r}/{y_col!r}: {x_text!r}/{y_text!r} (no WGS84 position)"
        return reject(self.case.line or 0, reason, self.header, self.row)


def finish_batch(items: list[Item | Unprojected]) -> list[Item]:
    """Transform every State Plane point of the batch in one call, then fill lat/lon in."""
    waiting = [item for item in items if isinstance(item, Unprojected)]
    if not waiting:
        return items  # type: ignore[return-value]  # no Unprojected in it
    lats, lons = state_plane_to_wgs84([u.x for u in waiting], [u.y for u in waiting])
    points = iter(zip(lats, lons, strict=False))
    return [item.resolve(*next(points)) if isinstance(item, Unprojected) else item for item in items]


def _position(positions: dict[str, int], column: str | None) -> int | None:
    return None if column is None else positions.get(column)


def _date_only_same_day(closed_at: datetime, requested_at: datetime, tz: tzinfo) -> bool:
    local_close = closed_at.astimezone(tz)
    return local_close.time() == time(0, 0) and local_close.date() == requested_at.astimezone(tz).date()


def _cell(row: Sequence[str], index: int | None) -> str:
    return row[index].strip() if index is not None else ""


class RowMapper:
    """A schema bound to one header: names resolved to positions once, not per row."""

    def __init__(self, schema: Schema, header: Sequence[str], times: TimeParser) -> None:
        positions: dict[str, int] = {}
        for index, name in enumerate(header):
            positions.setdefault(name.strip(), index)  # a repeated column name: the first one counts
        at = positions.get
        self.schema = schema
        self.header = header
        self.times = times
        self.i_id = at(schema.id)
        self.i_type = at(schema.type)
        self.i_created = at(schema.created)
        self.i_status = _position(positions, schema.status)
        self.i_closed = _position(positions, schema.closed)
        self.i_updated = _position(positions, schema.updated)
        self.i_resolution = _position(positions, schema.resolution)
        self.i_lat = _position(positions, schema.lat)
        self.i_lon = _position(positions, schema.lon)
        self.i_x = _position(positions, schema.x)
        self.i_y = _position(positions, schema.y)
        self.i_agency = _position(positions, schema.agency)
        self.i_district = _position(positions, schema.district)
        self.i_subtype = _position(positions, schema.subtype)
        self.i_description = tuple(i for i in (at(c) for c in schema.description) if i is not None)
        self.address_sources: list[int | tuple[int, int]] = []
        for source in schema.address:
            if isinstance(source, str):
                if (single := at(source)) is not None:
                    self.address_sources.append(single)
            elif (first := at(source[0])) is not None and (second := at(source[1])) is not None:
                self.address_sources.append((first, second))

    def __call__(self, line: int, row: Sequence[str]) -> Item | Unprojected:
        try:
            return self._map(line, row)
        except FieldError as problem:
            return reject(line, str(problem), self.header, row)

    def _map(self, line: int, row: Sequence[str]) -> IncomingCase | Unprojected:
        schema = self.schema
        external_id = _cell(row, self.i_id)
        if not external_id:
            raise FieldError(f"missing id (column {schema.id!r})")
        service_name = _cell(row, self.i_type)
        service_code = slug(service_name)
        if not service_code:
            raise FieldError(f"missing service type (column {schema.type!r}): {service_name!r}")
        created_text = _cell(row, self.i_created)
        requested_at = self.times.to_utc(created_text, schema.created)

        closed_text = _cell(row, self.i_closed)
        if schema.status is None:
            # Chicago lights: the DSSG projection dropped the status; a completion date means done.
            status: str | None = "Completed" if closed_text else "Open"
            is_closed = bool(closed_text)
        else:
            status = _cell(row, self.i_status) or None
            is_closed = status is not None and schema.is_closed is not None and schema.is_closed(status)
        closed_at = None
        attributes: dict[str, list[str]] = {}
        if is_closed:
            closed_at = requested_at
            for column, text in ((schema.closed, closed_text), (schema.updated, _cell(row, self.i_updated))):
                if column is not None and text:
                    closed_at = self.times.to_utc(text, column)
                    if closed_at < requested_at and _date_only_same_day(closed_at, requested_at, self.times.tz):
                        # LA records some closes as a bare date (local midnight) on the day the
                        # request came in: closed that day, so not before it was opened.
                        closed_at = requested_at
                    if closed_at < requested_at:
                        # A typo in the year loses no real request: it is kept, closed when it
                        # was opened, and the source's close time is kept as a flag.
                        attributes[BAD_CLOSE_TIME] = [f"{column} {text!r} is before {schema.created} {created_text!r}"]
                        closed_at = requested_at
                    break

        point = None
        if self.i_lat is not None or self.i_lon is not None:
            point = coordinate_pair(_cell(row, self.i_lat), _cell(row, self.i_lon), schema.lat or "", schema.lon or "")
        projected = None
        if point is None and (self.i_x is not None or self.i_y is not None):
            x_text, y_text = _cell(row, self.i_x), _cell(row, self.i_y)
            projected = projected_pair(x_text, y_text, schema.x or "", schema.y or "")
            if projected == (0.0, 0.0):
                # 0/0 is an export's "no geocode" marker. Projected, it would become a real-looking
                # point in southern Missouri; passed on as 0/0 the pipeline recognises it.
                point, projected = (0.0, 0.0), None

        case = IncomingCase(
            source=schema.source,
            external_id=external_id,
            service_code=service_code,
            service_name=service_name,
            requested_at=requested_at,
            lat=point[0] if point else None,
            lon=point[1] if point else None,
            description=join_nonblank(map(row.__getitem__, self.i_description)) if self.i_description else "",
            address=self._address(row),
            agency=schema.fixed_agency or (_cell(row, self.i_agency) or None),
            status_received=status,
            closed_at=closed_at,
            resolution=_cell(row, self.i_resolution) or None,
            reported_district=schema.district_label(row[self.i_district]) if self.i_district is not None else None,
            attributes=attributes,
            line=line,
            subtype=_cell(row, self.i_subtype) or None,
        )
        if projected is None:
            return case
        return Unprojected(
            case, projected[0], projected[1], (schema.x or "", schema.y or ""), (x_text, y_text), self.header, row
        )

    def _address(self, row: Sequence[str]) -> str | None:
        for source in self.address_sources:
            if isinstance(source, int):
                if text := row[source].strip():
                    return text
            else:
                first, second = row[source[0]].strip(), row[source[1]].strip()
                if first and second:
                    return f"{first} & {second}"
        return None


def read_csv_batches(
    path: str | Path, schemas: Sequence[Schema], kind: str, tz: ZoneInfo, batch_size: int
) -> Iterator[list[Item]]:
    """Batches of a CSV export whose header matches one of `schemas` (FormatError otherwise)."""
    with open_text(path) as stream:
        for batch in batched(_csv_items(stream, schemas, kind, tz), batch_size):
            yield finish_batch(batch)


def _csv_items(stream: TextIO, schemas: Sequence[Schema], kind: str, tz: ZoneInfo) -> Iterator[Item | Unprojected]:
    reader = csv.reader(stream)
    line = 0
    try:
        header = [cell.strip() for cell in next(reader, [])]
        if not any(header):
            raise FormatError(f"not a recognised {kind} export: the file has no header")
        schema = pick_schema(schemas, header)
        if schema is None:
            raise FormatError(columns_message(kind, header))
        mapper = RowMapper(schema, header, TimeParser(schema.date_formats, tz))
        width = len(header)
        for row in reader:
            if not row:
                continue  # a blank line is not a record
            line += 1
            if len(row) == width:
                yield mapper(line, row)
            else:
                yield reject(line, f"row has {len(row)} fields, header has {width}", header, row)
    except STREAM_ERRORS as exc:
        raise FormatError(f"file is truncated or corrupt after record {line}: {exc}") from exc


# Records of a JSON array come with varying key sets (the API omits null fields), so mappers
# are cached per key set; a few dozen key sets at most in practice, bounded anyway.
_MAPPER_CACHE_LIMIT = 256


def read_json_batches(
    path: str | Path, schema: Schema, kind: str, tz: ZoneInfo, batch_size: int
) -> Iterator[list[Item]]:
    """Batches of a JSON array of objects read through `schema`; null and missing keys read
    as blank, nested values as JSON text. FormatError if the first object lacks the id,
    type or created key (later objects lacking them are rejected one by one)."""
    with open_text(path) as stream:
        for batch in batched(_json_items(stream, schema, kind, tz), batch_size):
            yield finish_batch(batch)


def _json_items(stream: TextIO, schema: Schema, kind: str, tz: ZoneInfo) -> Iterator[Item | Unprojected]:
    times = TimeParser(schema.date_formats, tz)
    mappers: dict[tuple[str, ...], RowMapper] = {}
    line = 0
    try:
        for record in json_array_items(stream):
            line += 1
            if not isinstance(record, dict):
                yield RejectedRow(line=line, reason="record is not a JSON object", raw={"_value": text_of(record)})
                continue
            header = tuple(record)  # JSON object keys are always str
            if line == 1 and pick_schema((schema,), header) is None:
                raise FormatError(columns_message(kind, header))
            mapper = mappers.get(header)
            if mapper is None:
                if len(mappers) >= _MAPPER_CACHE_LIMIT:
                    mappers.clear()
                mapper = mappers[header] = RowMapper(schema, header, times)
            # Nearly every value is already a string; skipping the call for those is most of the cost.
            yield mapper(line, [value if type(value) is str else text_of(value) for value in record.values()])
    except STREAM_ERRORS as exc:
        raise FormatError(f"file is truncated or corrupt after record {line}: {exc}") from exc

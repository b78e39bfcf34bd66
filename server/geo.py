"""All of Fieldwork's geometry: service areas, point-in-polygon, distances. The only module
that imports Shapely.

Distances are computed in metres on a local equirectangular projection centred on the
jurisdiction (raw degrees are wrong at city scale: a degree of longitude is ~83 km in LA and
~75 km in Chicago). Over a city's extent the projection's error stays well under 1 %.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping, shape

__all__ = [
    "Area",
    "DistrictIndex",
    "LocalProjection",
    "PointGrid",
    "read_areas",
    "valid_wgs84",
]

EARTH_RADIUS_M = 6_371_008.8


def valid_wgs84(lat: float | None, lon: float | None) -> str | None:
    """Why a point is unusable, or None if it is a usable WGS84 point."""
    if lat is None or lon is None:
        return "no coordinates"
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return "coordinates are not numbers"
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return "coordinates out of range"
    if lat == 0.0 and lon == 0.0:
        return "0,0 is a placeholder, not a location"
    return None


@dataclass(frozen=True, slots=True)
class LocalProjection:
    """Equirectangular metres around (lat0, lon0)."""

    lat0: float
    lon0: float

    @property
    def _kx(self) -> float:
        return math.radians(1.0) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))

    @property
    def _ky(self) -> float:
        return math.radians(1.0) * EARTH_RADIUS_M

    def to_xy(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        return (np.asarray(lon) - self.lon0) * self._kx, (np.asarray(lat) - self.lat0) * self._ky

    def point_xy(self, lon: float, lat: float) -> tuple[float, float]:
        return (lon - self.lon0) * self._kx, (lat - self.lat0) * self._ky

    def degrees_for(self, metres: float) -> tuple[float, float]:
        """(dlat, dlon) that cover `metres` in each direction: for bounding-box queries."""
        return metres / self._ky, metres / self._kx


@dataclass(frozen=True, slots=True)
class Area:
    code: str
    name: str
    geometry: dict[str, Any]
    properties: dict[str, Any]


def read_areas(path: str | Path, *, name_field: str, code_field: str | None = None) -> list[Area]:
    """Read a GeoJSON FeatureCollection of (Multi)Polygons; fix invalid rings."""
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a GeoJSON file: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise ValueError("not a GeoJSON FeatureCollection")
    areas: list[Area] = []
    for number, feature in enumerate(data.get("features") or [], start=1):
        props = dict(feature.get("properties") or {})
        if name_field not in props:
            available = ", ".join(sorted(props)) or "none"
            raise ValueError(f"feature {number} has no property '{name_field}' (has: {available})")
        geom = shape(feature.get("geometry") or {})
        if geom.geom_type not in {"Polygon", "MultiPolygon"}:
            raise ValueError(f"feature {number} is a {geom.geom_type}, not a polygon")
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        name = str(props[name_field]).strip()
        code = str(props[code_field]).strip() if code_field else name
        areas.append(Area(code=_normal_code(code), name=name, geometry=mapping(geom), properties=props))
    if not areas:
        raise ValueError("the file has no features")
    return areas


def _normal_code(code: str) -> str:
    # "05" and "5.0" are the same district number in the cities' exports.
    try:
        number = float(code)
    except ValueError:
        return code
    return str(int(number)) if number.is_integer() else code


class DistrictIndex:
    """Assigns points to districts: STRtree on projected polygons, vectorised.

    A point inside no polygon but within `tolerance_m` of one (an address on a boundary
    street's centre line, a sliver between two polygons) goes to the nearest; a point in
    two overlapping polygons goes to the smaller, more specific one.
    """

    def __init__(
        self,
        ids: Sequence[int],
        geometries: Sequence[dict[str, Any]],
        *,
        tolerance_m: float = 50.0,
        projection: LocalProjection | None = None,
    ) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        wgs = [shape(g) for g in geometries]
        if projection is None:
            if wgs:
                minx, miny, maxx, maxy = shapely.total_bounds(np.array(wgs, dtype=object))
                projection = LocalProjection((miny + maxy) / 2, (minx + maxx) / 2)
            else:
                projection = LocalProjection(0.0, 0.0)
        self.projection = projection
        self.tolerance_m = tolerance_m
        projected = [shapely.transform(g, self._project_coords) for g in wgs]
        self.polygons = np.array(projected, dtype=object)
        shapely.prepare(self.polygons)
        self.areas = shapely.area(self.polygons) if projected else np.zeros(0)
        self.tree = shapely.STRtree(self.polygons)

    def _project_coords(self, coords: np.ndarray) -> np.ndarray:
        x, y = self.projection.to_xy(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    def __len__(self) -> int:
        return len(self.ids)

    def assign(self, lons: Iterable[float], lats: Iterable[float]) -> np.ndarray:
        """District id per point, or -1 where none is within the tolerance."""
        x, y = self.projection.to_xy(np.asarray(list(lons), float), np.asarray(list(lats), float))
        result = np.full(len(x), -1, dtype=np.int64)
        if len(x) == 0 or len(self.ids) == 0:
            return result
        points = shapely.points(x, y)
        point_idx, poly_idx = self.tree.query(points)
        inside = shapely.contains_xy(self.polygons[poly_idx], x[point_idx], y[point_idx])
        point_idx, poly_idx = point_idx[inside], poly_idx[inside]
        # Overlaps: sort so that for each point the smallest polygon comes last and wins.
        order = np.lexsort((-self.areas[poly_idx], point_idx))
        result[point_idx[order]] = self.ids[poly_idx[order]]
        missing = np.flatnonzero(result < 0)
        if len(missing) and self.tolerance_m > 0:
            near_pt, near_poly = self.tree.query_nearest(
                points[missing], max_distance=self.tolerance_m, all_matches=False
            )
            result[missing[near_pt]] = self.ids[near_poly]
        return result

    def distance_m(self, district_id: int, lon: float, lat: float) -> float:
        """Metres from a point to a district (0 inside)."""
        where = np.flatnonzero(self.ids == district_id)
        if not len(where):
            return math.inf
        x, y = self.projection.point_xy(lon, lat)
        return float(shapely.distance(self.polygons[where[0]], shapely.Point(x, y)))


class PointGrid:
    """A uniform grid of points in metres, for radius queries on open work orders."""

    def __init__(self, cell_m: float) -> None:
        self.cell = max(cell_m, 1.0)
        self.cells: dict[tuple[int, int], list[tuple[float, float, Any]]] = {}

    def _key(self, x: float, y: float) -> tuple[int, int]:
        return math.floor(x / self.cell), math.floor(y / self.cell)

    def add(self, x: float, y: float, item: Any) -> None:
        self.cells.setdefault(self._key(x, y), []).append((x, y, item))

    def remove(self, x: float, y: float, item: Any) -> None:
        bucket = self.cells.get(self._key(x, y), [])
        self.cells[self._key(x, y)] = [entry for entry in bucket if entry[2] is not item]

    def near(self, x: float, y: float, radius: float) -> list[tuple[float, Any]]:
        """(distance, item) within `radius`, nearest first."""
        kx, ky = self._key(x, y)
        reach = math.ceil(radius / self.cell)
        found: list[tuple[float, Any]] = []
        for i in range(kx - reach, kx + reach + 1):
            for j in range(ky - reach, ky + reach + 1):
                for px, py, item in self.cells.get((i, j), ()):
                    d = math.hypot(px - x, py - y)
                    if d <= radius:
                        found.append((d, item))
        found.sort(key=lambda pair: pair[0])
        return found


def union_geojson(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The union of two GeoJSON (multi)polygons, as GeoJSON."""
    return mapping(shapely.union(shape(first), shape(second)))

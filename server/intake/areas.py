"""Service areas: load a city's district polygons (GeoJSON) into a named layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, select, update

from server.db import write_session
from server.geo import read_areas, union_geojson
from server.models import District

__all__ = ["AreasLoaded", "load_areas"]


@dataclass(frozen=True, slots=True)
class AreasLoaded:
    layer: str
    added: int
    updated: int
    primary: bool


def load_areas(
    engine: Engine,
    path: str | Path,
    *,
    layer: str,
    name_field: str,
    code_field: str | None = None,
    primary: bool = True,
) -> AreasLoaded:
    """Insert or update every polygon of the file in `layer` (keyed by its code).

    The primary layer is the one work orders are routed by; making a layer primary makes
    every other layer secondary.
    """
    areas = read_areas(path, name_field=name_field, code_field=code_field)
    added = updated = 0
    with write_session(engine) as session:
        existing = {d.code: d for d in session.exec(select(District).where(District.layer == layer)).all()}
        if primary:
            session.exec(update(District).where(col(District.layer) != layer).values(primary=False))
        merged: dict[str, District] = {}
        for area in areas:
            district = existing.get(area.code) or merged.get(area.code)
            if district is None:
                district = District(layer=layer, code=area.code, name=area.name)
                added += 1
            elif area.code in existing:
                updated += 1
            district.name = area.name
            district.geometry = _union(district.geometry, area.geometry) if area.code in merged else area.geometry
            district.properties = area.properties
            district.primary = primary
            merged[area.code] = district
            session.add(district)
    return AreasLoaded(layer=layer, added=added, updated=updated, primary=primary)


def _union(first: dict[str, Any] | None, second: dict[str, Any]) -> dict[str, Any]:
    # Some files split one district into several features (Chicago police district 31).
    return union_geojson(first, second) if first else second

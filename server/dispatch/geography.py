"""Which districts a crew works: neighbouring districts around the crew's part of town.

Each crew has an anchor (a point in its part of town, from the city's configuration). Its
region starts at the district under (or nearest to) the anchor and grows through shared
borders, the smallest region first and the nearest district first, so regions stay
contiguous and about equal in count; a district no region reaches (an island) goes to the
nearest anchor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shapely.geometry import Point, shape
from shapely.strtree import STRtree

__all__ = ["group_districts"]


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    # Equirectangular: plenty for ranking districts of one city.
    lat = math.radians((a[0] + b[0]) / 2)
    return math.hypot((a[0] - b[0]) * 111.2, (a[1] - b[1]) * 111.2 * math.cos(lat))


def group_districts(districts: Sequence[tuple[int, dict[str, Any]]], anchors: Sequence[tuple[float, float]]) -> list[list[int]]:
    """District ids per anchor (same order as `anchors`); `districts` are (id, GeoJSON geometry)."""
    if not anchors:
        return []
    ids = [d[0] for d in districts]
    shapes = [shape(d[1]).buffer(0) for d in districts]
    centres = [(s.representative_point().y, s.representative_point().x) for s in shapes]
    tree = STRtree(shapes)
    # Neighbours: polygons that touch or nearly touch (exports leave slivers between them).
    grown = [s.buffer(1e-4) for s in shapes]
    neighbours = {
        i: {int(j) for j in tree.query(grown[i], predicate="intersects") if int(j) != i} for i in range(len(shapes))
    }
    owner: dict[int, int] = {}
    regions: list[list[int]] = [[] for _ in anchors]
    for k, anchor in enumerate(anchors):
        point = Point(anchor[1], anchor[0])
        free = [i for i in range(len(shapes)) if i not in owner]
        if not free:
            break
        under = [i for i in free if shapes[i].contains(point)]
        start = under[0] if under else min(free, key=lambda i: _km(anchor, centres[i]))
        owner[start] = k
        regions[k].append(start)
    while len(owner) < len(shapes):
        options = []
        for k, region in enumerate(regions):
            frontier = {j for i in region for j in neighbours[i] if j not in owner}
            if frontier:
                nearest = min(frontier, key=lambda j: _km(anchors[k], centres[j]))
                options.append((len(region), _km(anchors[k], centres[nearest]), k, nearest))
        if not options:  # islands: the nearest anchor takes each
            for i in range(len(shapes)):
                if i not in owner:
                    k = min(range(len(anchors)), key=lambda k: _km(anchors[k], centres[i]))
                    owner[i] = k
                    regions[k].append(i)
            break
        _, _, k, chosen = min(options)
        owner[chosen] = k
        regions[k].append(chosen)
    return [sorted(ids[i] for i in region) for region in regions]

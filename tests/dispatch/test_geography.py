"""The demo's crews get neighbouring districts by geography, on the cities' real boundaries."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import Point, shape

from server.demo import CITIES
from server.dispatch.geography import group_districts
from tests.conftest import DATA


def districts_of(city: str) -> list[tuple[int, dict]]:  # type: ignore[type-arg]
    layer = CITIES[city].layers[0]
    features = json.loads((DATA / layer.file).read_text())["features"]
    return [(n, f["geometry"]) for n, f in enumerate(features, start=1) if f.get("geometry")]


def connected(region: list[int], districts: dict[int, object]) -> bool:
    shapes = {i: shape(districts[i]).buffer(1e-4) for i in region}  # type: ignore[arg-type]
    seen = {region[0]}
    todo = [region[0]]
    while todo:
        here = todo.pop()
        for other in region:
            if other not in seen and shapes[here].intersects(shapes[other]):
                seen.add(other)
                todo.append(other)
    return seen == set(region)


@pytest.mark.parametrize("city", ["la", "chicago", "nyc"])
def test_every_district_once_in_contiguous_regions(city: str) -> None:
    districts = districts_of(city)
    regions = group_districts(districts, CITIES[city].anchors)
    assert len(regions) == len(CITIES[city].crews) and all(regions)
    flat = [i for region in regions for i in region]
    assert sorted(flat) == sorted(i for i, _ in districts)
    by_id = dict(districts)
    islands = city == "nyc"  # Staten Island and parts of Queens/Bronx touch nothing across water
    for region in regions:
        assert islands or connected(region, by_id), region


def test_downtown_goes_to_central_and_the_harbor_to_harbor() -> None:
    districts = districts_of("la")
    regions = dict(zip(CITIES["la"].crews, group_districts(districts, CITIES["la"].anchors), strict=True))

    def district_at(lat: float, lon: float) -> int:
        return next(i for i, g in districts if shape(g).contains(Point(lon, lat)))

    assert district_at(34.0537, -118.2428) in regions["Central"]  # City Hall
    assert district_at(33.7361, -118.2922) in regions["Harbor"]  # San Pedro
    assert district_at(34.2706, -118.4700) in regions["Valley North"]  # Mission Hills

"""Route optimisation on real work: LA's MyLA311 requests of 2018-12-27..31, grouped as a
crew would get them (one service type in one council district, in the order they came in)."""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest

from server.dispatch.route import exhaustive, haversine_m, nearest_neighbour, optimise, route_length, two_opt
from server.intake.formats import read_batches
from server.intake.records import IncomingCase
from tests.api.support import LA_FILE

Point = tuple[float, float]


@pytest.fixture(scope="module")
def jobs_by_group() -> dict[tuple[str, str], list[Point]]:
    """Points of real requests, by (reported district, service type), distinct points only."""
    groups: dict[tuple[str, str], list[Point]] = defaultdict(list)
    for batch in read_batches(LA_FILE, tz=ZoneInfo("America/Los_Angeles")):
        for item in batch:
            if isinstance(item, IncomingCase) and item.lat and item.lon and item.reported_district:
                point = (item.lat, item.lon)
                group = groups[(item.reported_district, item.service_code)]
                if point not in group:
                    group.append(point)
    return groups


def instances(groups: dict[tuple[str, str], list[Point]], size: int, count: int) -> list[list[Point]]:
    found = [points[:size] for _, points in sorted(groups.items()) if len(points) >= size]
    return random.Random(size).sample(found, min(count, len(found)))


def test_haversine_on_known_distances() -> None:
    assert haversine_m((34.0522, -118.2437), (34.0522, -118.2437)) == 0
    # LA City Hall to Santa Monica Pier: about 24 km as the crow flies.
    assert 23_000 < haversine_m((34.0537, -118.2428), (34.0083, -118.4987)) < 25_000
    assert math.isclose(haversine_m((0, 0), (0, 1)), 111_195, rel_tol=1e-3)


@pytest.mark.parametrize("size", [4, 6, 8, 9])
def test_within_ten_percent_of_the_best_and_never_worse_than_nearest_neighbour(
    jobs_by_group: dict[tuple[str, str], list[Point]], size: int
) -> None:
    cases = instances(jobs_by_group, size, 6 if size < 9 else 3)
    assert len(cases) >= 3, "the data should hold several such groups"
    for points in cases:
        for start in (None, points[-1]):  # from the first job, or from a yard at one of them
            best = route_length(start, points, exhaustive(start, points))
            nn = route_length(start, points, nearest_neighbour(start, points))
            ours = optimise(start, points)
            assert sorted(ours) == list(range(len(points)))
            length = route_length(start, points, ours)
            assert length <= nn + 1e-6
            assert length <= best * 1.10 + 1e-6, (length, best)


def test_large_real_routes_improve_on_nearest_neighbour(jobs_by_group: dict[tuple[str, str], list[Point]]) -> None:
    everything = [p for points in jobs_by_group.values() for p in points]
    rng = random.Random(7)
    better = 0
    for size in (30, 80, 150):
        points = rng.sample(everything, size)
        start = points[0]
        nn = route_length(start, points, nearest_neighbour(start, points))
        ours = optimise(start, points)
        assert sorted(ours) == list(range(size))
        length = route_length(start, points, ours)
        assert length <= nn + 1e-6
        better += length < nn * 0.99
    assert better >= 2  # 2-opt untangles nearest neighbour's crossings on real scatters


def test_two_opt_never_lengthens_any_order() -> None:
    rng = random.Random(3)
    for _ in range(20):
        points = [(34 + rng.random() / 5, -118.5 + rng.random() / 5) for _ in range(12)]
        order = list(range(12))
        rng.shuffle(order)
        improved = two_opt(None, points, order)
        assert route_length(None, points, improved) <= route_length(None, points, order) + 1e-6


def test_tiny_and_exhaustive_limits() -> None:
    assert optimise(None, []) == [] and optimise(None, [(34.0, -118.0)]) == [0]
    with pytest.raises(ValueError):
        exhaustive(None, [(34.0, -118.0)] * 11)
    assert list(itertools.islice(itertools.count(), 0)) == []

"""A crew's day in a good order: nearest neighbour from the start, improved by 2-opt.

2-opt alone leaves some tours 15-20 % above the best on real instances (found by the tests
on LA's requests), so the improvement also moves short runs of stops elsewhere (Or-opt),
and it starts nearest neighbour from a few different first stops, keeping the shortest.

Distances are great-circle (haversine) metres between the jobs' points: streets are not in
the database, and for jobs a few kilometres apart the order that is shortest as the crow
flies is nearly always the shortest by road too. The route is open (it ends at the last
job; crews do not return to the yard between jobs).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence

__all__ = ["EARTH_RADIUS_M", "exhaustive", "haversine_m", "nearest_neighbour", "optimise", "route_length", "two_opt"]

EARTH_RADIUS_M = 6_371_008.8
Point = tuple[float, float]  # (lat, lon) in degrees


def haversine_m(a: Point, b: Point) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _matrix(start: Point | None, points: Sequence[Point]) -> list[list[float]]:
    """Distances between all nodes; node 0 is the start (a zero-distance dummy if None)."""
    nodes: list[Point | None] = [start, *points]
    size = len(nodes)
    matrix = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1, size):
            a, b = nodes[i], nodes[j]
            d = 0.0 if a is None or b is None else haversine_m(a, b)
            matrix[i][j] = matrix[j][i] = d
    return matrix


def _length(matrix: list[list[float]], tour: Sequence[int]) -> float:
    return sum(matrix[a][b] for a, b in itertools.pairwise((0, *tour)))


def route_length(start: Point | None, points: Sequence[Point], order: Sequence[int]) -> float:
    """Metres from the start (if any) through `points` in `order` (indexes into `points`)."""
    return _length(_matrix(start, points), [i + 1 for i in order])


def nearest_neighbour(start: Point | None, points: Sequence[Point]) -> list[int]:
    """Always the closest job not yet visited, from the start (or from the first job)."""
    matrix = _matrix(start, points)
    return [i - 1 for i in _nn(matrix, len(points))]


def _nn(matrix: list[list[float]], count: int) -> list[int]:
    left = set(range(1, count + 1))
    tour: list[int] = []
    here = 0
    while left:
        # Ties go to the lower index, so the answer does not depend on set order.
        nxt = min(left, key=lambda j: (matrix[here][j], j))
        tour.append(nxt)
        left.remove(nxt)
        here = nxt
    return tour


def _two_opt(matrix: list[list[float]], tour: list[int], deadline: float = math.inf) -> list[int]:
    """Reverse any stretch of the route that makes it shorter, until none does (or time is up)."""
    route = [0, *tour]
    n = len(route)
    improved = True
    while improved:
        improved = False
        for i in range(1, n - 1):
            if time.monotonic() > deadline:
                return route[1:]
            a, b = route[i - 1], route[i]
            for j in range(i + 1, n):
                c = route[j]
                d = route[j + 1] if j + 1 < n else None
                before = matrix[a][b] + (matrix[c][d] if d is not None else 0.0)
                after = matrix[a][c] + (matrix[b][d] if d is not None else 0.0)
                if after < before - 1e-6:
                    route[i:j + 1] = reversed(route[i:j + 1])
                    improved = True
                    b = route[i]
    return route[1:]


def two_opt(start: Point | None, points: Sequence[Point], order: Sequence[int]) -> list[int]:
    matrix = _matrix(start, points)
    return [i - 1 for i in _two_opt(matrix, [i + 1 for i in order])]


def _or_opt(matrix: list[list[float]], tour: list[int], deadline: float = math.inf) -> tuple[list[int], bool]:
    """One pass over the route: move each run of 1-3 stops (either way round) to a place where
    it shortens the route, if there is one. Each candidate costs O(1): what leaving its place
    saves against what its new place costs. True if anything moved."""
    route = [0, *tour]
    improved = False
    i = 1
    while i < len(route):
        if time.monotonic() > deadline:
            break
        n = len(route)
        moved = False
        for length in (1, 2, 3):
            if i + length > n:
                break
            first, last = route[i], route[i + length - 1]
            before = route[i - 1]
            after = route[i + length] if i + length < n else None
            saved = matrix[before][first] + (matrix[last][after] - matrix[before][after] if after is not None else 0.0)
            rest = route[:i] + route[i + length:]
            for j in range(1, len(rest) + 1):
                if j == i:
                    continue
                a = rest[j - 1]
                b = rest[j] if j < len(rest) else None
                for head, tail in ((first, last), (last, first)):
                    added = matrix[a][head] + (matrix[tail][b] - matrix[a][b] if b is not None else 0.0)
                    if added < saved - 1e-6:
                        run = route[i:i + length] if head == first else route[i:i + length][::-1]
                        route = rest[:j] + run + rest[j:]
                        moved = improved = True
                        break
                if moved:
                    break
            if moved:
                break
        if not moved:
            i += 1
    return route[1:], improved


def _improve(matrix: list[list[float]], tour: list[int], deadline: float = math.inf) -> list[int]:
    tour = _two_opt(matrix, tour, deadline)
    moved = True
    while moved and time.monotonic() < deadline:
        tour, moved = _or_opt(matrix, tour, deadline)
        if moved:
            tour = _two_opt(matrix, tour, deadline)
    return tour


def _nn_from(matrix: list[list[float]], count: int, first: int) -> list[int]:
    left = set(range(1, count + 1)) - {first}
    tour = [first]
    here = first
    while left:
        nxt = min(left, key=lambda j: (matrix[here][j], j))
        tour.append(nxt)
        left.remove(nxt)
        here = nxt
    return tour


_STARTS = 8  # nearest-neighbour tours tried (from the nearest first stops) …
_MULTI_START_MAX = 60  # … on routes up to this many stops (a crew's day); longer ones get one
BUDGET_SECONDS = 3.0  # a dispatcher is waiting: past this, the best route found so far


def optimise(start: Point | None, points: Sequence[Point], *, budget: float = BUDGET_SECONDS) -> list[int]:
    """Nearest neighbour, then 2-opt and Or-opt: never longer than nearest neighbour alone
    (its tour is the first tried, and the improvements only accept shorter routes)."""
    if len(points) <= 1:
        return list(range(len(points)))
    deadline = time.monotonic() + budget
    matrix = _matrix(start, points)
    count = len(points)
    best = _improve(matrix, _nn(matrix, count), deadline)
    best_length = _length(matrix, best)
    if count > _MULTI_START_MAX:
        return [i - 1 for i in best]
    firsts = sorted(range(1, count + 1), key=lambda j: (matrix[0][j], j))
    if start is None:  # any stop may come first: spread the tries over the set
        firsts = firsts[:: max(1, count // _STARTS)]
    for first in firsts[:_STARTS]:
        if time.monotonic() > deadline:
            break
        tour = _improve(matrix, _nn_from(matrix, count, first), deadline)
        length = _length(matrix, tour)
        if length < best_length - 1e-6:
            best, best_length = tour, length
    return [i - 1 for i in best]


def exhaustive(start: Point | None, points: Sequence[Point]) -> list[int]:
    """The shortest order of all (for tests and small instances: n! orders)."""
    if len(points) > 10:
        raise ValueError("exhaustive search is for at most 10 stops")
    matrix = _matrix(start, points)
    best = min(itertools.permutations(range(1, len(points) + 1)), key=lambda tour: _length(matrix, tour))
    return [i - 1 for i in best]

"""Geocoder accuracy on the cities' own data: hide the coordinates of located records and
ask the geocoder (server/intake/geocode.py) where their addresses are.

For each city, every located record with a house-number address is read with the real
parsers; every 10th is hidden (deterministic), the rest build the index, as a city's
history would. Printed per city: share of hidden records placed (confidence >= 0.5) and
suggested at all, median and 90th-percentile error in metres of the placed ones, by
method; and, in the same run, a baseline: the median point of every record on the same
street (what a geocoder without house numbers would say). Also: how many of the records
that arrived with an address but no point (LA's graffiti rows) would now be placed.

    .venv/bin/python bench/geocode.py [--data PATH] [--every N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.demo import CITIES, default_data_dir  # noqa: E402
from server.intake.formats import read_batches  # noqa: E402
from server.intake.geocode import GeocodeIndex, median_point, metres_between, parse_address  # noqa: E402
from server.intake.records import IncomingCase  # noqa: E402


def records(city: str, data: Path) -> list[IncomingCase]:
    spec = CITIES[city]
    found: list[IncomingCase] = []
    for path in sorted(data.glob(spec.records)):
        for batch in read_batches(path, tz=ZoneInfo(spec.timezone)):
            found.extend(item for item in batch if isinstance(item, IncomingCase))
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def run(city: str, data: Path, every: int) -> None:
    started = time.perf_counter()
    cases = records(city, data)
    usable = [c for c in cases if c.lat is not None and c.lon is not None and parse_address(c.address)]
    hidden = usable[::every]
    hidden_ids = {id(c) for c in hidden}
    index = GeocodeIndex()
    street_points: dict[str, list[tuple[float, float]]] = {}
    for case in usable:
        if id(case) in hidden_ids:
            continue
        index.add(case.address, case.lat, case.lon)
        parsed = parse_address(case.address)
        assert parsed is not None and case.lat is not None and case.lon is not None
        street_points.setdefault(parsed.street, []).append((case.lat, case.lon))

    errors: dict[str, list[float]] = {"exact": [], "interpolated": [], "nearby": []}
    placed = suggested = 0
    baseline: list[float] = []
    for case in hidden:
        assert case.lat is not None and case.lon is not None
        parsed = parse_address(case.address)
        assert parsed is not None
        if parsed.street in street_points:
            lat, lon = median_point(street_points[parsed.street])
            baseline.append(metres_between(lat, lon, case.lat, case.lon))
        suggestion = index.suggest(case.address)
        if suggestion is None:
            continue
        suggested += 1
        if suggestion.places:
            placed += 1
            errors[suggestion.method].append(metres_between(suggestion.lat, suggestion.lon, case.lat, case.lon))
    every_error = errors["exact"] + errors["interpolated"] + errors["nearby"]
    # Hidden records whose exact address the rest never had: only interpolation can place them.
    unseen = sum(1 for c in hidden if (p := parse_address(c.address)) is not None
                 and p.number not in set(index.streets[p.street].numbers if p.street in index.streets else ()))
    address_only = [c for c in cases if c.lat is None and parse_address(c.address)]
    full = GeocodeIndex()
    full.add_many((c.address, c.lat, c.lon) for c in usable)
    rescued = sum(1 for c in address_only if (s := full.suggest(c.address)) is not None and s.places)

    n = len(hidden)
    print(f"{city}: {len(usable):,} located records with a house-number address, {n:,} hidden "
          f"({time.perf_counter() - started:.1f} s)")
    print(f"  placed {placed / n:.1%} (suggested {suggested / n:.1%}): median {statistics.median(every_error):.0f} m, "
          f"p90 {percentile(every_error, 0.9):.0f} m")
    for method, values in errors.items():
        if values:
            print(f"    {method:<12} {len(values) / n:6.1%} of hidden: median {statistics.median(values):5.0f} m, "
                  f"p90 {percentile(values, 0.9):6.0f} m")
    if unseen:
        print(f"  addresses never seen before: {unseen:,} of hidden, placed {(len(errors['interpolated']) + len(errors['nearby'])) / unseen:.1%}")
    print(f"  baseline (median point of the street, {len(baseline) / n:.1%} of hidden): "
          f"median {statistics.median(baseline):.0f} m, p90 {percentile(baseline, 0.9):.0f} m")
    if address_only:
        print(f"  records that came with an address but no point: {len(address_only):,}, "
              f"placed now {rescued:,} ({rescued / len(address_only):.1%})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--every", type=int, default=10, help="hide every N-th located record (default 10)")
    args = parser.parse_args()
    for city in ("la", "chicago", "nyc"):
        run(city, args.data, args.every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

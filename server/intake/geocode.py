"""A geocoder from the city's own located history: no outside service, no licence.

Every located case the city ever sent (an import, a placed report) pairs an address with a
point. For a new address:

1. **exact**: the same house number on the same street (normalised: "AVENUE" is "AVE",
   "NORTH" is "N", city, state and ZIP dropped) was located before: the median of those
   points.
2. **interpolated**: numbers on both sides of it on the same street, on the same side
   (odd/even) where there are some: the point between them in proportion to the number.
   Two neighbours farther apart than a block or two, or kilometres apart (the same street
   name in another borough), are not trusted.
3. **nearby**: else a house a few numbers away on the same side (the last known house of a
   street, or one next to a gap too wide to interpolate): its point, less sure.

`confidence` says how sure: 0.95 for an exact address seen several times in one place, less
for one seen once, for wide interpolation gaps and for the other side of the street. Below
`PLACE_CONFIDENCE` a caller should not place the case (it stays in the unlocated queue for a
dispatcher, with the suggestion to look at).

    suggest_position(session, "1557 W 13th Street, Chicago") -> Suggestion | None

The index is built in memory from the located cases whose point came from the city (an import)
or a person (a resident's lat/long, a dispatcher placing it), never from the geocoder's own
guesses (`GEOCODED_KEY` in the case's attributes): a guess fed back in would come back as an
"exact" address, surer than it ever was. It is kept per database; later calls read only the
cases added since (by id), so a server pays the full build once, and, every few seconds, the
cases it saw unlocated that a dispatcher has placed since (in any worker).
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from server.models import Case

__all__ = ["GEOCODED_KEY", "PLACE_CONFIDENCE", "GeocodeIndex", "ParsedAddress", "Suggestion", "median_point",
           "geocoded_note", "metres_between", "parse_address", "placed_by_guess", "read_geocoded", "suggest_position"]

GEOCODED_KEY = "open311:geocoded"  # in Case.attributes: how an address-only report was placed ("nearby, confidence 0.54")
PLACE_CONFIDENCE = 0.5  # a suggestion at least this sure places an address-only report
MAX_GAP_NUMBERS = 400  # house numbers between the two neighbours of an interpolation
MAX_GAP_METRES = 1200.0  # distance between those neighbours
MAX_NEARBY_NUMBERS = 10  # a house this many numbers away on the same side, when nothing brackets it

Method = Literal["exact", "interpolated", "nearby"]

_SUFFIXES = {
    "STREET": "ST", "STR": "ST", "AVENUE": "AVE", "AV": "AVE", "AVEN": "AVE", "BOULEVARD": "BLVD", "BLV": "BLVD",
    "ROAD": "RD", "DRIVE": "DR", "PLACE": "PL", "COURT": "CT", "LANE": "LN", "TERRACE": "TER", "PARKWAY": "PKWY",
    "HIGHWAY": "HWY", "SQUARE": "SQ", "CIRCLE": "CIR", "EXPRESSWAY": "EXPY", "TURNPIKE": "TPKE", "WAY": "WAY",
    "ALLEY": "ALY", "CRESCENT": "CRES", "TRAIL": "TRL", "PLAZA": "PLZ", "LOOP": "LOOP",
}
_DIRECTIONS = {"NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W", "NORTHEAST": "NE", "NORTHWEST": "NW",
               "SOUTHEAST": "SE", "SOUTHWEST": "SW"}
_WORDS = {"SAINT": "ST", "FORT": "FT", "MOUNT": "MT"}
_NUMBER = re.compile(r"^(\d+)([A-Z]?)(?:-(\d+))?$")  # 1234, 1234A, 42-15 (Queens: cross street - house)
_ORDINAL = re.compile(r"^(\d+)(ST|ND|RD|TH)$")
_UNIT = re.compile(r"\b(APT|UNIT|STE|SUITE|#)\b.*$")
_ZIP = re.compile(r"\b\d{5}(?:-\d{4})?\b")
_STATES = {"CA", "IL", "NY", "CALIFORNIA", "ILLINOIS", "NEW YORK", "USA", "US"}


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    number: int
    street: str  # normalised: "W 13TH ST"
    zipcode: str | None


@dataclass(frozen=True, slots=True)
class Suggestion:
    lat: float
    lon: float
    confidence: float  # 0..1
    method: Method
    basis: int  # located cases it rests on

    @property
    def places(self) -> bool:
        """Sure enough to place a report without a dispatcher."""
        return self.confidence >= PLACE_CONFIDENCE


def _word(token: str) -> str:
    if token in _DIRECTIONS:
        return _DIRECTIONS[token]
    if token in _SUFFIXES:
        return _SUFFIXES[token]
    if token in _WORDS:
        return _WORDS[token]
    ordinal = _ORDINAL.match(token)
    if ordinal:
        return str(int(ordinal.group(1)))  # "13TH" and "13" are the same street
    return token


_SUFFIX_WORDS = set(_SUFFIXES) | set(_SUFFIXES.values())


def _ends_with_suffix(text: str) -> bool:
    words = re.findall(r"[A-Z0-9-]+", _UNIT.sub("", text))
    return bool(words) and words[-1] in _SUFFIX_WORDS


def parse_address(text: str | None) -> ParsedAddress | None:
    """"1557 W 13th Street, Chicago, IL 60608" → (1557, "W 13 ST", "60608"); None without a
    leading house number (an intersection, a block face, a place name)."""
    if not text:
        return None
    upper = text.upper().replace(".", " ")
    zipcode = None
    if zips := _ZIP.findall(upper):
        zipcode = zips[-1][:5]
    parts = upper.split(",")
    first = parts[0]
    for part in parts[1:]:
        # "2032 W MARTIN LUTHER KING, JR BLVD, 90062": a comma inside the street's name (LA
        # writes it so), not the one before the city: the street ends only after it.
        if _ends_with_suffix(first) or not _ends_with_suffix(part):
            break
        first = f"{first} {part}"
    first = _UNIT.sub("", first)
    tokens = re.findall(r"[A-Z0-9-]+", first)
    if len(tokens) < 2:
        return None
    match = _NUMBER.match(tokens[0])
    if not match:
        return None
    number = int(match.group(1))
    if match.group(3):  # Queens "42-15": house 15 after cross street 42, in order along the street
        number = number * 1000 + int(match.group(3))
    rest = [t for t in tokens[1:] if t not in _STATES]
    street = " ".join(_word(t) for t in rest).strip()
    if not street or number <= 0:
        return None
    return ParsedAddress(number, street, zipcode)


def metres_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return 6_371_000.0 * math.hypot(x, y)


@dataclass(slots=True)
class _Street:
    """The located house numbers of one street, kept sorted."""

    numbers: list[int] = field(default_factory=list)
    points: list[list[tuple[float, float]]] = field(default_factory=list)  # per number, every point seen

    def add(self, number: int, lat: float, lon: float) -> None:
        at = bisect.bisect_left(self.numbers, number)
        if at < len(self.numbers) and self.numbers[at] == number:
            self.points[at].append((lat, lon))
        else:
            self.numbers.insert(at, number)
            self.points.insert(at, [(lat, lon)])


def median_point(points: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in points), statistics.median(p[1] for p in points)


class GeocodeIndex:
    """Located addresses by street, for exact look-ups and interpolation."""

    def __init__(self) -> None:
        self.streets: dict[str, _Street] = {}
        self.size = 0

    def add(self, address: str | None, lat: float | None, lon: float | None) -> bool:
        if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)) or (lat == 0 and lon == 0):
            return False
        parsed = parse_address(address)
        if parsed is None:
            return False
        self.streets.setdefault(parsed.street, _Street()).add(parsed.number, lat, lon)
        self.size += 1
        return True

    def add_many(self, rows: Iterable[tuple[str | None, float | None, float | None]]) -> None:
        for address, lat, lon in rows:
            self.add(address, lat, lon)

    def suggest(self, address: str | None) -> Suggestion | None:
        parsed = parse_address(address)
        if parsed is None:
            return None
        street = self.streets.get(parsed.street)
        if street is None:
            return None
        at = bisect.bisect_left(street.numbers, parsed.number)
        if at < len(street.numbers) and street.numbers[at] == parsed.number:
            return self._exact(street.points[at])
        candidates = [self._interpolate(street, parsed.number, at), self._nearby(street, parsed.number, at)]
        found = [c for c in candidates if c is not None]
        return max(found, key=lambda c: c.confidence) if found else None

    @staticmethod
    def _nearby(street: _Street, number: int, at: int) -> Suggestion | None:
        """A house a few numbers away on the same side: its point (the end of a street's
        known numbers, or past a gap too wide to interpolate across)."""
        best = None
        for i in (*range(at - 1, max(at - 8, -1), -1), *range(at, min(at + 7, len(street.numbers)))):
            other = street.numbers[i]
            if other % 2 == number % 2 and abs(other - number) <= MAX_NEARBY_NUMBERS and (
                    best is None or abs(other - number) < abs(street.numbers[best] - number)):
                best = i
        if best is None:
            return None
        lat, lon = median_point(street.points[best])
        # The houses around it must agree: the same street name in another borough does not.
        around = [median_point(street.points[i]) for i in range(max(0, best - 5), min(len(street.numbers), best + 6))
                  if i != best and abs(street.numbers[i] - number) <= 100]
        if len(around) < 2 or statistics.median(metres_between(lat, lon, a, b) for a, b in around) > 250:
            return None
        distance = abs(street.numbers[best] - number)
        confidence = 0.62 - 0.02 * distance  # 2 numbers away: 0.58; 6: 0.50; 10: 0.42
        return Suggestion(lat, lon, round(confidence, 2), "nearby", len(street.points[best]))

    @staticmethod
    def _exact(points: list[tuple[float, float]]) -> Suggestion | None:
        lat, lon = median_point(points)
        spread = max(metres_between(lat, lon, p[0], p[1]) for p in points)
        if spread > MAX_GAP_METRES:
            return None  # the same number and street name in two parts of the city
        confidence = 0.95 if len(points) > 1 and spread < 50 else 0.85
        return Suggestion(lat, lon, confidence, "exact", len(points))

    @staticmethod
    def _interpolate(street: _Street, number: int, at: int) -> Suggestion | None:
        """Between the nearest numbers below and above, preferring the same side of the street."""
        below = list(range(at - 1, -1, -1))
        above = list(range(at, len(street.numbers)))

        def nearest(indexes: list[int], same_side: bool) -> int | None:
            for i in indexes[:60]:  # a few dozen numbers out is already more than a block
                if not same_side or street.numbers[i] % 2 == number % 2:
                    return i
            return None

        low, high, same_side = nearest(below, True), nearest(above, True), True
        if low is None or high is None:
            low, high, same_side = nearest(below, False), nearest(above, False), False
        if low is None or high is None:
            return None
        n_low, n_high = street.numbers[low], street.numbers[high]
        if n_high - n_low > MAX_GAP_NUMBERS:
            return None
        lat_low, lon_low = median_point(street.points[low])
        lat_high, lon_high = median_point(street.points[high])
        gap_m = metres_between(lat_low, lon_low, lat_high, lon_high)
        if gap_m > MAX_GAP_METRES:
            return None
        share = (number - n_low) / (n_high - n_low)
        lat = lat_low + share * (lat_high - lat_low)
        lon = lon_low + share * (lon_high - lon_low)
        # Sure when the neighbours are close in number and on the ground; less across the street.
        confidence = 0.8 - 0.3 * min(1.0, (n_high - n_low) / MAX_GAP_NUMBERS) - 0.2 * min(1.0, gap_m / MAX_GAP_METRES)
        if not same_side:
            confidence -= 0.1
        basis = len(street.points[low]) + len(street.points[high])
        return Suggestion(lat, lon, round(max(confidence, 0.05), 2), "interpolated", basis)


def placed_by_guess(attributes: dict[str, Any] | None) -> bool:
    """Whether a case's point is the geocoder's own suggestion, not the city's or a person's."""
    return attributes is not None and GEOCODED_KEY in attributes


def geocoded_note(suggestion: Suggestion) -> list[str]:
    """The attribute value a placed report keeps: ["nearby, confidence 0.54"]."""
    return [f"{suggestion.method}, confidence {suggestion.confidence:.2f}"]


_NOTE = re.compile(r"^(exact|interpolated|nearby), confidence ([01](?:\.\d+)?)$")


def read_geocoded(attributes: dict[str, Any] | None) -> tuple[Method, float] | None:
    """(method, confidence) of a case the geocoder placed; None for a point from the city or a person."""
    values = (attributes or {}).get(GEOCODED_KEY)
    text = values[0] if isinstance(values, list) and values else values
    match = _NOTE.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    return cast(Method, match.group(1)), float(match.group(2))


# -- one index per database, read incrementally ---------------------------------------------------

RECHECK_SECONDS = 5.0  # how often an index looks whether cases it saw unlocated were placed since


@dataclass
class _Cached:
    """One database's index, and where its reading stopped."""

    index: GeocodeIndex = field(default_factory=GeocodeIndex)
    last_id: int = 0  # the last case read
    # Cases with an address that were not on the map when read (the unlocated queue, a few
    # hundred at most): a dispatcher may place one later, its id long read by then.
    waiting: set[int] = field(default_factory=set)
    checked_at: float = 0.0  # time.monotonic() of the last look at `waiting`


_INDEXES: dict[str, _Cached] = {}  # database URL -> its index
_LOCK = threading.Lock()
_COLUMNS = (col(Case.id), col(Case.address), col(Case.lat), col(Case.lon), col(Case.attributes),
            col(Case.location_state))


def _index_for(session: Session) -> GeocodeIndex:
    key = str(session.get_bind().engine.url)
    with _LOCK:
        cached = _INDEXES.setdefault(key, _Cached())
        connection = session.connection()
        rows = connection.execute(
            sa_select(*_COLUMNS).where(col(Case.id) > cached.last_id, col(Case.address).is_not(None))
            .order_by(col(Case.id))
        ).all()
        for row in rows:
            cached.last_id = max(cached.last_id, row[0] or 0)
            if row[5] == "unlocated":
                cached.waiting.add(row[0])
            else:
                _learn(cached.index, row)
        if cached.waiting and time.monotonic() - cached.checked_at >= RECHECK_SECONDS:
            cached.checked_at = time.monotonic()
            ids = sorted(cached.waiting)
            for start in range(0, len(ids), 500):
                for row in connection.execute(
                    sa_select(*_COLUMNS).where(col(Case.id).in_(ids[start : start + 500]),
                                               col(Case.location_state) != "unlocated")
                ).all():
                    cached.waiting.discard(row[0])
                    _learn(cached.index, row)
        return cached.index


def _learn(index: GeocodeIndex, row: Any) -> None:
    """A case's address and point, if the point came from the city or a person."""
    _case_id, address, lat, lon, attributes, state = row
    if state == "located" and lat is not None and lon is not None and not placed_by_guess(attributes):
        index.add(address, lat, lon)


def suggest_position(session: Session, address: str) -> Suggestion | None:
    """Where the city's own located history puts `address` (None: it cannot say).

    Look at `confidence` (or `Suggestion.places`) before trusting it.
    """
    return _index_for(session).suggest(address)

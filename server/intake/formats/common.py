"""Value parsing shared by every export format: dates, coordinates, slugs, rejects.

The parsers here raise only `FieldError` (a `ValueError`) on bad input, and its message is the
reject reason, already naming the column. Row mappers catch it and keep the record as a
`RejectedRow`, so one bad value never stops a file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, tzinfo
from typing import TypeVar

from ..records import RejectedRow

__all__ = [
    "UTC",
    "FieldError",
    "TimeParser",
    "batched",
    "clean",
    "coordinate_pair",
    "join_nonblank",
    "positive_int_label",
    "projected_pair",
    "reject",
    "slug",
    "text_of",
]



# Memo tables are cleared when they reach this size: exports repeat values (Chicago has
# one date per day, NYC API pulls stamp hundreds of rows "12:00:00.000", a file has a few
# dozen request types), but a long file must not grow the memo without bound.
_MEMO_LIMIT = 4096

_T = TypeVar("_T")


class FieldError(ValueError):
    """One value of a record cannot be used; the message is the reject reason."""


class TimeParser:
    """Parses one schema's timestamps with explicit strptime formats and returns UTC.

    Formats are tried in order. A timestamp without an offset is wall-clock time in `tz`
    (city exports carry no zone). At DST changes it is resolved with fold=0: an ambiguous
    time (the repeated hour in autumn) is taken as the first, daylight-time occurrence; a
    nonexistent time (the skipped hour in spring) is read with the offset in force before
    the gap, which is what zoneinfo does for fold=0. A timestamp with an offset (`%z`, as
    Open311 sends) is converted as is and `tz` plays no part.

    strptime's `%b` and `%p` follow LC_TIME; Python keeps the C locale unless the process
    calls `locale.setlocale`, which this server does not.
    """

    __slots__ = ("_formats", "_memo", "_tz")

    def __init__(self, formats: Sequence[str], tz: tzinfo) -> None:
        if not formats:
            raise ValueError("TimeParser needs at least one format")
        self._formats = tuple(formats)
        self._tz = tz
        self._memo: dict[str, datetime] = {}

    @property
    def tz(self) -> tzinfo:
        return self._tz

    def to_utc(self, text: str, column: str) -> datetime:
        """Parse `text` (already stripped) from `column`; FieldError names the column."""
        found = self._memo.get(text)
        if found is not None:
            return found
        parsed = self._parse(text)
        if parsed is None:
            raise FieldError(f"bad date in {column!r}: {text!r}")
        try:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=self._tz)  # fold=0, see the class docstring
            utc = parsed.astimezone(UTC)
        except (OverflowError, ValueError) as exc:  # e.g. 9999-12-31 23:00 local is past year 9999 in UTC
            raise FieldError(f"bad date in {column!r}: {text!r} ({exc})") from None
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[text] = utc
        return utc

    def _parse(self, text: str) -> datetime | None:
        fast = _FAST_PATHS.get(self._formats[0])
        if fast is not None:
            parsed = fast(text)
            if parsed is not None:
                return parsed
        for index, fmt in enumerate(self._formats):
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            if index:
                # A file uses one format throughout: try the one that worked first from now
                # on, so each date costs one strptime call, not one failed call per format before it.
                self._formats = (fmt, *self._formats[:index], *self._formats[index + 1 :])
            return parsed
        return None


def _us_12h(text: str) -> datetime | None:
    """`%m/%d/%Y %I:%M:%S %p` by slicing: strptime is the slowest step of a large import."""
    if len(text) != 22 or text[2] != "/" or text[5] != "/" or text[10] != " " or text[13] != ":" or text[16] != ":":
        return None
    try:
        hour = int(text[11:13])
        marker = text[20:22]
        if not 1 <= hour <= 12 or marker not in ("AM", "PM"):
            return None
        hour = hour % 12 + (12 if marker == "PM" else 0)
        return datetime(int(text[6:10]), int(text[0:2]), int(text[3:5]), hour, int(text[14:16]), int(text[17:19]))
    except ValueError:
        return None


def _iso_local(text: str) -> datetime | None:
    """`%Y-%m-%d %H:%M:%S` and `%Y-%m-%dT%H:%M:%S.%f` (no offset) by slicing."""
    if len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] not in " T" or text[13] != ":":
        return None
    try:
        micro = 0
        if len(text) > 19:
            if text[19] != "." or not text[20:].isdigit() or len(text) > 26:
                return None
            micro = int(text[20:].ljust(6, "0"))
        return datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                        int(text[17:19]), micro)
    except ValueError:
        return None


# Tried first when the schema's current first format is the key; None falls back to strptime.
_FAST_PATHS = {
    "%m/%d/%Y %I:%M:%S %p": _us_12h,
    "%Y-%m-%d %H:%M:%S": _iso_local,
    "%Y-%m-%dT%H:%M:%S.%f": _iso_local,
    "%Y-%m-%dT%H:%M:%S": _iso_local,
}


def _finite_float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _bad_coordinates(first_col: str, second_col: str, first: str, second: str, why: str = "") -> FieldError:
    suffix = f" ({why})" if why else ""
    return FieldError(f"bad coordinates in {first_col!r}/{second_col!r}: {first!r}/{second!r}{suffix}")


def coordinate_pair(lat_text: str, lon_text: str, lat_col: str, lon_col: str) -> tuple[float, float] | None:
    """WGS84 latitude/longitude texts → (lat, lon); both blank → None (an unlocated case).

    Half a pair, unparseable or non-finite numbers, and |lat| > 90 or |lon| > 180 are
    FieldErrors. 0/0 is returned as is: deciding that it means "no location" is the
    pipeline's job, not the parser's.
    """
    if not lat_text and not lon_text:
        return None
    lat = _finite_float(lat_text)
    lon = _finite_float(lon_text)
    if lat is None or lon is None:
        raise _bad_coordinates(lat_col, lon_col, lat_text, lon_text)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise _bad_coordinates(lat_col, lon_col, lat_text, lon_text, "outside WGS84 range")
    return lat, lon


def projected_pair(x_text: str, y_text: str, x_col: str, y_col: str) -> tuple[float, float] | None:
    """Projected (State Plane) x/y texts → (x, y); both blank → None. Range is checked after
    the transform, on the resulting latitude/longitude."""
    if not x_text and not y_text:
        return None
    x = _finite_float(x_text)
    y = _finite_float(y_text)
    if x is None or y is None:
        raise _bad_coordinates(x_col, y_col, x_text, y_text)
    return x, y


_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_slugs: dict[str, str] = {}


def slug(text: str) -> str:
    """"Street Lights - All/Out" → "street-lights-all-out" (ASCII a-z0-9 and single dashes).

    Memoised: a file has a few dozen distinct request types, so the regex runs a few dozen
    times per file, not once per row.
    """
    found = _slugs.get(text)
    if found is None:
        found = _NON_ALNUM.sub("-", text.lower()).strip("-")
        if len(_slugs) >= _MEMO_LIMIT:
            _slugs.clear()
        _slugs[text] = found
    return found


def clean(text: str) -> str | None:
    """Stripped text, or None when blank."""
    text = text.strip()
    return text or None


def join_nonblank(values: Iterable[str], sep: str = "; ") -> str:
    # map and a list, not nested generators: this runs for every record of an export.
    return sep.join([v for v in map(str.strip, values) if v])


def positive_int_label(text: str) -> str | None:
    """A district number as the plain integer string ("05" → "5"); blank, 0 or non-numeric → None.

    Used for comparison with our polygons only, so an odd value is not worth a reject.
    """
    text = text.strip()
    if not text.isdigit():  # isdigit is also true for e.g. "²", which int() refuses
        return None
    try:
        number = int(text)
    except ValueError:
        return None
    return str(number) if number > 0 else None


def text_of(value: object) -> str:
    """A JSON value as the text a CSV cell would hold: null → "", objects → compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def reject(line: int, reason: str, header: Sequence[str], row: Sequence[str]) -> RejectedRow:
    """Keep the record whole: values by column name; cells beyond the header as _extra_N."""
    raw = dict(zip(header, row, strict=False))
    for n, cell in enumerate(row[len(header) :], 1):
        raw[f"_extra_{n}"] = cell
    return RejectedRow(line=line, reason=reason, raw=raw)


def batched(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """Consecutive lists of at most `size` items, in order."""
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

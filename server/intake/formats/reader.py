"""Which parser a file needs, and the one entry point that streams it in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

from ..records import FormatError
from . import chicago, la, nyc, open311
from .streams import Head, read_head
from .table import Item, columns_message

__all__ = ["CITY_ZONES", "FORMATS", "Format", "detect_format", "read_batches"]

# The time zone of the city whose export each format is: its zone-less local times are that
# city's clock. Open311 JSON carries offsets, so it has none.
CITY_ZONES: Mapping[str, str] = MappingProxyType({
    "la": "America/Los_Angeles",
    "chicago": "America/Chicago",
    "nyc": "America/New_York",
})


@dataclass(frozen=True, slots=True)
class Format:
    """One supported export family: how to recognise its head, and how to read it."""

    name: str
    matches: Callable[[Head], bool]
    read: Callable[[str | Path, ZoneInfo, int], Iterator[list[Item]]]


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        module.NAME: Format(module.NAME, module.matches, module.read)
        for module in (nyc, chicago, la, open311)
    }
)


def detect_format(path: str | Path) -> str:
    """"nyc", "chicago", "la" or "open311", from the CSV header or the first JSON record.

    FormatError for anything else: a GeoJSON file, an unrelated CSV, binary data, an empty file.
    """
    head = read_head(path)
    for name, fmt in FORMATS.items():
        if fmt.matches(head):
            return name
    raise FormatError(_not_recognised("311", head))


def read_batches(
    path: str | Path, *, fmt: str = "auto", tz: ZoneInfo, batch_size: int = 2000
) -> Iterator[list[Item]]:
    """Stream `path` (gzip or plain, told by its magic bytes) as lists of at most `batch_size`
    `IncomingCase` / `RejectedRow`, in file order; `line` is the 1-based record number.

    `tz` is the jurisdiction's zone, in which the exports' zone-less local times are read.
    The file's head is checked now, against `fmt` or by detection, so a wrong file fails
    before the first batch is asked for. A file damaged further on raises
    FormatError("file is truncated or corrupt after record N: …") mid-iteration, after the
    batches before it were yielded: the caller decides whether to keep them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected 'auto' or one of {sorted(FORMATS)}")
    name = detect_format(path) if fmt == "auto" else fmt
    chosen = FORMATS[name]
    if fmt != "auto" and not chosen.matches(head := read_head(path)):
        raise FormatError(_not_recognised(name, head))
    return chosen.read(path, tz, batch_size)


def _not_recognised(kind: str, head: Head) -> str:
    if head.kind == "json":
        shown = ", ".join(repr(key) for key in head.columns[:12])
        return f"not a recognised {kind} export: first JSON record has keys {shown}"
    return columns_message(kind, head.columns)

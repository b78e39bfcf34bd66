"""Opening export files as text streams and pulling records off them one at a time.

Nothing here reads a whole file: CSV goes through `csv.reader` over a (gzip) text stream, and
JSON arrays are decoded one element at a time with `JSONDecoder.raw_decode` over a sliding
buffer, so memory stays at one chunk plus one record whatever the file size. (`json.load`
would have been acceptable for the small JSON exports we have, but the Open311 and SODA
endpoints page up to tens of MB, and one streaming path is simpler than two.)
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from ..records import FormatError

__all__ = ["STREAM_ERRORS", "Head", "json_array_items", "open_text", "read_head"]

_GZIP_MAGIC = b"\x1f\x8b"

# What a damaged file raises while being read: truncated gzip (EOFError), corrupt deflate data
# (zlib.error, gzip.BadGzipFile which is an OSError), bytes that are not UTF-8, a CSV the
# csv module cannot tokenise (NUL bytes, a field over the size limit) or broken JSON
# (including nesting deep enough to exhaust the json module's recursion).
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    OSError,
    zlib.error,
    UnicodeDecodeError,
    csv.Error,
    json.JSONDecodeError,
    RecursionError,
)


def open_text(path: str | Path) -> TextIO:
    """UTF-8 text stream over `path`, gunzipped when the file starts with the gzip magic
    bytes (the name is not trusted). newline="" because csv.reader does its own line
    handling (quoted fields may contain line breaks); "utf-8-sig" drops a BOM if present."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


@dataclass(frozen=True, slots=True)
class Head:
    """What format detection looks at: CSV header cells, or the keys of a JSON array's first object."""

    kind: Literal["csv", "json"]
    columns: tuple[str, ...]


_HEAD_PEEK = 4096


def read_head(path: str | Path) -> Head:
    """Read just enough of `path` to know its layout. FormatError for anything that is not a
    CSV with a header or a JSON array of objects (a GeoJSON object, binary data, empty file)."""
    stream = open_text(path)  # a missing or unreadable file is the caller's OSError, not a FormatError
    try:
        with stream:
            start = stream.read(_HEAD_PEEK).lstrip()
            if not start:
                raise FormatError("not a recognised 311 export: the file is empty")
            if start[0] == "{":
                raise FormatError(
                    "not a recognised 311 export: a JSON object (e.g. GeoJSON), not an array of "
                    f"records; it starts {start[:80]!r}"
                )
            if start[0] == "[":
                stream.seek(0)
                first = next(json_array_items(stream), None)
                if not isinstance(first, dict):
                    raise FormatError(
                        f"not a recognised 311 export: a JSON array whose first element is {first!r:.80}"
                    )
                return Head("json", tuple(str(key) for key in first))
            stream.seek(0)
            header = next(csv.reader(stream), [])
            return Head("csv", tuple(cell.strip() for cell in header))
    except STREAM_ERRORS as exc:
        raise FormatError(f"not a recognised 311 export: cannot read it as UTF-8 CSV or JSON ({exc})") from exc


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_UNFINISHED_TAIL = re.compile(r"[0-9.eE+-]*\Z")  # only number characters up to the end of the buffer
_CHUNK = 1 << 16
_MAX_RECORD_CHARS = 1 << 24  # one 311 record is a few kB; 16 M characters is a corrupt file


def json_array_items(stream: TextIO) -> Iterator[object]:
    """Yield the elements of the JSON array that `stream` holds, one at a time.

    Structural problems (no opening bracket, a missing comma, a truncated last element,
    trailing garbage) raise json.JSONDecodeError, like json.load would.
    """
    decoder = json.JSONDecoder()
    buffer = ""
    pos = 0
    at_eof = False

    def fill(size: int = _CHUNK) -> None:
        # Drop what is consumed and append up to `size` more characters.
        nonlocal buffer, pos, at_eof
        chunk = stream.read(size)
        if not chunk:
            at_eof = True
        buffer = buffer[pos:] + chunk
        pos = 0

    def skip_whitespace() -> None:
        nonlocal pos
        while True:
            pos = _WHITESPACE.match(buffer, pos).end()  # type: ignore[union-attr]  # always matches
            if pos < len(buffer) or at_eof:
                return
            fill()

    def expect(allowed: str) -> str:
        skip_whitespace()
        if pos >= len(buffer) or buffer[pos] not in allowed:
            found = buffer[pos : pos + 20] if pos < len(buffer) else "end of file"
            wanted = " or ".join(repr(c) for c in allowed)
            raise json.JSONDecodeError(f"expected {wanted}, found {found!r}", buffer, pos)
        return buffer[pos]

    fill()
    expect("[")
    pos += 1
    skip_whitespace()
    if pos < len(buffer) and buffer[pos] == "]":
        pos += 1
    else:
        while True:
            skip_whitespace()
            while True:
                try:
                    item, end = decoder.raw_decode(buffer, pos)
                except json.JSONDecodeError:
                    if at_eof:
                        raise
                    if len(buffer) - pos > _MAX_RECORD_CHARS:
                        # Not a record spanning the chunk edge but broken JSON; stop before the
                        # rest of the file ends up in memory.
                        raise
                    fill(max(_CHUNK, len(buffer) - pos))  # the element spans the chunk edge: read more
                    continue
                if not at_eof and _UNFINISHED_TAIL.match(buffer, end):
                    # A number decoded up to the chunk edge ("[100." of "[100.5]") may go on
                    # in the next chunk; decode it again with more text.
                    fill()
                    continue
                break
            pos = end
            yield item
            separator = expect(",]")
            pos += 1
            if separator == "]":
                break
    skip_whitespace()
    if pos < len(buffer):
        raise json.JSONDecodeError("unexpected data after the JSON array", buffer, pos)


"""Streaming parsers of real 311 exports (LA MyLA311, Chicago, NYC, Open311 GeoReport v2).

    for batch in read_batches(path, tz=ZoneInfo("America/Chicago")):
        ...  # list of IncomingCase | RejectedRow, at most batch_size, in file order

Files are read as streams (never whole), in batches because per-batch work (the State
Plane → WGS84 transform for Chicago) is vectorised. See records.py for the output contract.
"""

from __future__ import annotations

from .reader import CITY_ZONES, FORMATS, detect_format, read_batches

__all__ = ["CITY_ZONES", "FORMATS", "detect_format", "read_batches"]

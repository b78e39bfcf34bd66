"""Chicago State Plane (EPSG:3435, Illinois East, NAD83, US survey feet) → WGS84.

Building a pyproj Transformer costs milliseconds (it looks the pipeline up in PROJ's
database), so there is one per process, made on first use; and it is called once per batch
on whole coordinate lists, because a call has a fixed overhead that per-row calls would pay
80k times.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pyproj import Transformer

__all__ = ["state_plane_to_wgs84"]

_lock = threading.Lock()
_transformer: Transformer | None = None


def _chicago_transformer() -> Transformer:
    global _transformer
    if _transformer is None:
        with _lock:  # two threads racing here would only build it twice, but once is enough
            if _transformer is None:
                _transformer = Transformer.from_crs("EPSG:3435", "EPSG:4326", always_xy=True)
    return _transformer


def state_plane_to_wgs84(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """Easting/northing lists (feet) → (latitudes, longitudes). A point PROJ cannot transform
    comes back as inf; callers check finiteness and range."""
    if not xs:
        return [], []
    lons, lats = _chicago_transformer().transform(list(xs), list(ys))
    return list(lats), list(lons)

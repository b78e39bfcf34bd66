"""Service types: sensible defaults for types first seen in data, overridable by config.

A city's export names hundreds of types; nobody should have to configure each one before a
first import. Defaults come from keywords in the type's name; a YAML or TOML file (setting
`FIELDWORK_SERVICE_TYPES`) overrides any field per type code, or for every type with `"*"`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_EMERGENCY_KEYWORDS",
    "EmergencyMatcher",
    "load_overrides",
    "service_type_defaults",
]

# Words that turn a 311 call into something a dispatcher must see now: a 311 call can
# really be a 911 call.
DEFAULT_EMERGENCY_KEYWORDS: tuple[str, ...] = (
    "gas leak",
    "gas smell",
    "smell of gas",
    "smells of gas",
    "odor of gas",
    "downed wire",
    "down wire",
    "wire down",
    "wires down",
    "live wire",
    "sparking",
    "electrocut",
    "person hurt",
    "someone hurt",
    "person injured",
    "injured person",
    "injury",
    "trapped",
    "collapse",
    "sinkhole",
    "on fire",
    "smoke coming",
    "explosion",
)

OVERRIDABLE = {
    "name",
    "group",
    "description",
    "default_priority",
    "sla_hours",
    "duplicate_radius_m",
    "duplicate_window_hours",
    "emergency_keywords",
    "attributes",
    "keywords",
    "active",
}


@dataclass(frozen=True, slots=True)
class _Rule:
    words: tuple[str, ...]
    group: str
    priority: int
    sla_hours: float
    radius_m: float
    window_hours: float


# First match wins; checked against the lower-cased type name.
_RULES: tuple[_Rule, ...] = (
    _Rule(("gas", "wire", "electric", "hazard", "emergency"), "Hazards", 1, 4, 50, 24),
    _Rule(("water main", "sewer", "flood", "leak", "hydrant", "catch basin"), "Water and sewer", 2, 24, 50, 48),
    _Rule(("tree", "branch", "limb"), "Trees", 2, 72, 30, 168),
    _Rule(("pothole", "street condition", "pavement", "sidewalk", "curb"), "Streets", 3, 72, 25, 168),
    _Rule(("light",), "Street lights", 3, 96, 40, 336),
    _Rule(("signal", "sign"), "Traffic", 2, 48, 30, 72),
    _Rule(("graffiti",), "Graffiti", 4, 168, 20, 336),
    _Rule(("dump", "bulky", "trash", "litter", "sanitation", "dirty", "waste", "rodent"), "Sanitation", 3, 96, 40, 72),
    _Rule(("heat", "hot water", "plumbing", "paint", "door", "elevator"), "Housing", 2, 48, 10, 168),
    _Rule(("noise",), "Noise", 4, 24, 60, 12),
    _Rule(("vehicle", "parking", "driveway", "abandoned"), "Parking and vehicles", 4, 72, 20, 48),
)
_FALLBACK = _Rule((), "Other", 3, 120, 25, 72)


def _mentions(name: str, word: str) -> bool:
    # Whole words only: "tree" must not match "streetlight".
    return re.search(rf"\b{re.escape(word)}", name) is not None


def service_type_defaults(code: str, name: str) -> dict[str, Any]:
    lowered = name.lower()
    rule = next((r for r in _RULES if any(_mentions(lowered, w) for w in r.words)), _FALLBACK)
    return {
        "code": code,
        "name": name,
        "group": rule.group,
        "default_priority": rule.priority,
        "sla_hours": float(rule.sla_hours),
        "duplicate_radius_m": float(rule.radius_m),
        "duplicate_window_hours": float(rule.window_hours),
        "emergency_keywords": list(DEFAULT_EMERGENCY_KEYWORDS),
        "attributes": [],
        "keywords": "",
        "description": "",
        "active": True,
    }


def load_overrides(path: Path | None) -> dict[str, dict[str, Any]]:
    """Read `{type code or "*": {field: value}}` from a YAML or TOML file."""
    if path is None:
        return {}
    text = Path(path).read_bytes()
    if Path(path).suffix.lower() == ".toml":
        data = tomllib.loads(text.decode("utf-8"))
    else:
        data = yaml.safe_load(text) or {}
    types = data.get("service_types", data) if isinstance(data, Mapping) else None
    if not isinstance(types, Mapping):
        raise ValueError(f"{Path(path).name}: expected a mapping of service type codes")
    overrides: dict[str, dict[str, Any]] = {}
    for code, fields in types.items():
        if not isinstance(fields, Mapping):
            raise ValueError(f"{Path(path).name}: '{code}' must map field names to values")
        unknown = set(fields) - OVERRIDABLE
        if unknown:
            raise ValueError(f"{Path(path).name}: '{code}' has unknown fields: {', '.join(sorted(unknown))}")
        overrides[str(code)] = dict(fields)
    return overrides


def apply_overrides(values: dict[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged = dict(values)
    merged.update(overrides.get("*", {}))
    merged.update(overrides.get(values["code"], {}))
    return merged


# Texts remembered per matcher: an export repeats the same few (a type's name and an empty
# or stock description) thousands of times, but a long import must not grow the memo.
_MEMO_LIMIT = 4096


class EmergencyMatcher:
    """Finds the first emergency keyword in a text, on word boundaries."""

    def __init__(self, keywords: list[str] | tuple[str, ...]) -> None:
        words = sorted({k.strip().lower() for k in keywords if k.strip()}, key=len, reverse=True)
        self._pattern = (
            re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")", re.IGNORECASE)
            if words
            else None
        )
        self._memo: dict[str, str | None] = {}

    def find(self, text: str) -> str | None:
        if not self._pattern or not text:
            return None
        if text in self._memo:
            return self._memo[text]
        match = self._pattern.search(text)
        found = match.group(1).lower() if match else None
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[text] = found
        return found

"""Message catalogues on the server: the texts of push notices and Open311 notices.

Nothing a resident reads is written in code. Resident texts come from the very catalogues
the resident pages use (pwa/locales/resident/<lang>.json, keys `push.*` and `notice.*`);
crew notices from server/notify/locales/crew/<lang>.json (the crew app's own catalogues
belong to the crew app). A key missing in a language falls back to English.

Placeholders are `{name}`; a plural entry is an object keyed by CLDR plural categories
("one", "few", "many", "other"...), chosen by the `count` parameter, as in /lib/i18n.js.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "RTL_LANGUAGES",
    "Catalog",
    "catalog",
    "match_language",
    "plural_category",
]

ROOT = Path(__file__).resolve().parents[2]
CATALOG_DIRS = {
    "resident": ROOT / "pwa" / "locales" / "resident",
    "crew": Path(__file__).resolve().parent / "locales" / "crew",
}
# The languages of the resident pages (the same list as /lib/i18n.js).
LANGUAGES: tuple[str, ...] = ("en", "es", "zh-Hans", "ru", "bn", "ht", "ko", "ar", "fr")
RTL_LANGUAGES = frozenset({"ar"})
DEFAULT_LANGUAGE = "en"
_ALIASES = {"zh": "zh-Hans", "zh-cn": "zh-Hans", "zh-sg": "zh-Hans", "zh-hans": "zh-Hans"}
_LOWER = {code.lower(): code for code in LANGUAGES}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def match_language(value: str | None) -> str:
    """Our best language for a code or an Accept-Language header ("es-MX,es;q=0.9,en;q=0.5")."""
    if not value:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(value.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        for candidate in (tag, tag.split("-")[0]):
            code = _ALIASES.get(candidate) or _LOWER.get(candidate)
            if code:
                return code
    return DEFAULT_LANGUAGE


def plural_category(language: str, count: int) -> str:
    """CLDR cardinal plural category of a whole number, for our languages."""
    n = abs(count)
    base = language.split("-", maxsplit=1)[0]
    if base in {"zh", "ko"}:
        return "other"
    if base == "fr":
        return "one" if n in (0, 1) else "other"
    if base == "ru":
        if n % 10 == 1 and n % 100 != 11:
            return "one"
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return "few"
        return "many"
    if base == "ar":
        if n == 0:
            return "zero"
        if n == 1:
            return "one"
        if n == 2:
            return "two"
        if 3 <= n % 100 <= 10:
            return "few"
        if 11 <= n % 100 <= 99:
            return "many"
        return "other"
    if base == "bn":
        return "one" if n in (0, 1) else "other"
    return "one" if n == 1 else "other"


class Catalog:
    """One app's catalogues, read once per process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._messages: dict[str, dict[str, Any]] = {}

    def messages(self, language: str) -> dict[str, Any]:
        if language not in self._messages:
            path = self.folder / f"{language}.json"
            self._messages[language] = json.loads(path.read_text("utf-8")) if path.exists() else {}
        return self._messages[language]

    def has(self, language: str, key: str) -> bool:
        return key in self.messages(language)

    def t(self, language: str, key: str, **params: Any) -> str:
        entry = self.messages(language).get(key)
        if entry is None:
            language, entry = DEFAULT_LANGUAGE, self.messages(DEFAULT_LANGUAGE).get(key)
        if entry is None:
            raise KeyError(f"no message {key!r} in {self.folder.name} catalogues")
        if isinstance(entry, dict):
            category = plural_category(language, int(params.get("count", 0)))
            entry = entry.get(category) or entry.get("other") or next(iter(entry.values()))
        return _PLACEHOLDER.sub(lambda m: str(params[m.group(1)]) if m.group(1) in params else m.group(0), str(entry))


@cache
def catalog(app: str) -> Catalog:
    return Catalog(CATALOG_DIRS[app])

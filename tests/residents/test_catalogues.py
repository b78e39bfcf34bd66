"""The message catalogues: every language has every message, with the same placeholders,
and the plural forms its grammar needs; the pages use only messages that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.notify.catalog import CATALOG_DIRS, LANGUAGES, catalog, match_language, plural_category

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# The CLDR categories each language distinguishes for whole numbers.
CATEGORIES = {"en": {"one", "other"}, "es": {"one", "other"}, "fr": {"one", "other"}, "ht": {"one", "other"},
              "bn": {"one", "other"}, "zh-Hans": {"other"}, "ko": {"other"}, "ru": {"one", "few", "many", "other"},
              "ar": {"zero", "one", "two", "few", "many", "other"}}


def load(app: str, language: str) -> dict[str, object]:
    return json.loads((CATALOG_DIRS[app] / f"{language}.json").read_text("utf-8"))  # type: ignore[no-any-return]


def texts(entry: object) -> list[str]:
    return list(entry.values()) if isinstance(entry, dict) else [str(entry)]


@pytest.mark.parametrize("app", ["resident", "crew"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_in_every_language(app: str, language: str) -> None:
    english, other = load(app, "en"), load(app, language)
    assert set(other) == set(english), set(other) ^ set(english)
    for key, entry in other.items():
        wanted = {name for text in texts(english[key]) for name in PLACEHOLDER.findall(text)} - {"count"}
        for text in texts(entry):
            assert text.strip(), (language, key)
            got = set(PLACEHOLDER.findall(text)) - {"count"}
            assert got == wanted, (language, key, got, wanted)
        if isinstance(entry, dict):
            assert set(entry) == CATEGORIES[language], (language, key, set(entry))


def test_the_pages_use_only_messages_that_exist() -> None:
    english = load("resident", "en")
    used: set[str] = set()
    for path in [*ROOT.glob("pwa/*.html"), *ROOT.glob("pwa/resident/*.js")]:
        source = path.read_text("utf-8")
        used |= set(re.findall(r'data-i18n="([\w.]+)"', source))
        used |= {key for pair in re.findall(r'data-i18n-attr="([^"]+)"', source) for key in
                 [p.split(":")[1] for p in pair.split(";")]}
        used |= set(re.findall(r'i18n\.t\("([\w.]+)"', source))
        used |= set(re.findall(r'say\([\w.]+, "([\w.]+)"', source))
    used = {key for key in used if "." in key}
    missing = sorted(used - set(english))
    assert not missing, missing
    # Keys built at run time: every state and timeline kind the server sends has words.
    for kind in ("received", "unlocated", "acknowledged", "scheduled", "en_route", "on_site", "on_hold", "fixed",
                 "not_fixed", "cancelled", "duplicate"):
        assert f"state.{kind}" in english
    for kind in ("received", "first_reported", "merged", "also_reported", "urgent", "acknowledged", "scheduled",
                 "waiting", "en_route", "on_site", "on_hold", "fixed", "not_fixed", "cancelled", "duplicate",
                 "reopened", "unlocated"):
        assert f"timeline.{kind}" in english


def test_plural_rules_and_language_matching() -> None:
    assert [plural_category("ru", n) for n in (1, 2, 5, 11, 21, 22, 25)] == \
        ["one", "few", "many", "many", "one", "few", "many"]
    assert [plural_category("ar", n) for n in (0, 1, 2, 3, 11, 100)] == ["zero", "one", "two", "few", "many", "other"]
    assert plural_category("fr", 0) == "one" and plural_category("en", 0) == "other"
    assert catalog("resident").t("ru", "duration.days", count=3) == "3 дней"
    assert match_language("es-MX,es;q=0.9,en;q=0.5") == "es"
    assert match_language("zh-CN,zh;q=0.8") == "zh-Hans"
    assert match_language("de-DE,fr;q=0.7") == "fr"
    assert match_language("de") == "en" and match_language(None) == "en"

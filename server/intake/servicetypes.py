"""Service types: sensible defaults for types first seen in data, overridable by config.

A city's export names hundreds of types; nobody should have to configure each one before a
first import. Defaults come from keywords in the type's name; a YAML or TOML file (setting
`FIELDWORK_SERVICE_TYPES`) overrides any field per type code, or for every type with `"*"`.
"""

from __future__ import annotations

import copy
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from server.intake.catalogue import built_in, describe_from_data

__all__ = [
    "DEFAULT_EMERGENCY_KEYWORDS",
    "EMERGENCY_PATTERNS",
    "EmergencyMatcher",
    "fold",
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


def service_type_defaults(code: str, name: str, kinds: Iterable[tuple[str, int]] = ()) -> dict[str, Any]:
    """A new type's values: its rule's by name, described from the catalogue if it is there,
    else from its records (`kinds`: the finer kinds they name, with how many; see
    `catalogue.describe_from_data`)."""
    lowered = name.lower()
    rule = next((r for r in _RULES if any(_mentions(lowered, w) for w in r.words)), _FALLBACK)
    entry = built_in(code) or describe_from_data(name, kinds)
    return {
        "code": code,
        "name": name,
        "group": rule.group,
        "default_priority": rule.priority,
        "sla_hours": float(rule.sla_hours),
        "duplicate_radius_m": float(rule.radius_m),
        "duplicate_window_hours": float(rule.window_hours),
        "emergency_keywords": list(DEFAULT_EMERGENCY_KEYWORDS),
        "attributes": copy.deepcopy(entry.get("attributes", [])),
        "keywords": entry.get("keywords", ""),
        "description": entry.get("description", ""),
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
        raise ValueError(f"{Path(path).name}: expected a mapping of service type codes")  # noqa: TRY004
    overrides: dict[str, dict[str, Any]] = {}
    for code, fields in types.items():
        if not isinstance(fields, Mapping):
            raise ValueError(f"{Path(path).name}: '{code}' must map field names to values")  # noqa: TRY004
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


def _arabic(word: str) -> str:
    """An Arabic word with the clitics written onto it: and/so/with/for, then "the"."""
    return rf"\b[وفبل]?(?:ال)?{word}"


# The same emergencies said the way residents write them, in every language of the resident
# pages and in Vietnamese: a gas smell reported in Spanish must not wait five days. These are
# regular expressions over folded text (lower case; Latin letters without accents, so
# "eléctrico" and "electrico" match alike; Arabic without diacritics, with ا for أ/إ/آ, ه for
# ة and ي for ى; ё as е). Each says an emergency, not a topic: "gas" alone or "fire" alone
# (a fire hydrant, a traffic light in French) would flag ordinary reports.
EMERGENCY_PATTERNS: dict[str, tuple[str, ...]] = {
    "en": (
        r"\bsmell(?:s|ed|ing)?(?:\s+\w+)?\s+(?:of\s+|like\s+)?gas\b", r"\bgas\s+(?:odou?r|leak\w*)",
        r"\bpower\s+lines?\s+(?:is\s+|are\s+)?(?:down|fell|fallen|sparking)", r"\bunconscious",
        r"\bnot\s+breathing", r"\bbleeding",
    ),
    "es": (
        r"\bfuga\s+de\s+gas", r"\bescape\s+de\s+gas", r"\bolor(?:\s+\w+){0,2}\s+(?:a|de)\s+gas", r"\bhuele(?:\s+\w+)?\s+a\s+gas",
        r"\bcables?\s+(?:electricos?\s+|de\s+luz\s+)?(?:caidos?|colgando|sueltos?|en\s+el\s+suelo|roto)",
        r"\bchispas", r"\belectrocut\w*", r"\bherid[oa]s?\b", r"\blesionad[oa]s?", r"\batrapad[oa]s?",
        r"\bderrumb\w*", r"\bsocavon\w*", r"\bhundimiento", r"\bincendio", r"\bfuego\b", r"\bhumo\b",
        r"\bexplo(?:sion\w*|to\b)",
    ),
    "fr": (
        r"\bfuite\s+de\s+gaz", r"\bodeur(?:\s+\w+)?\s+de\s+gaz", r"\bsent(?:\s+\w+)?\s+le\s+gaz",
        r"\b(?:fils?|cables?|lignes?)\s+(?:electriques?\s+)?(?:tombes?|tombees?|a\s+terre|par\s+terre|arrach\w*)",
        r"\betincelles?", r"\belectrocut\w*", r"\bblesse(?:e|s|es)?\b", r"\bpris\s+au\s+piege",
        r"\bcoince(?:e|s|es)?\s+sous", r"\beffondr\w*", r"\baffaissement", r"\bincendie",
        r"\b(?:en|au)\s+feu\b", r"\bfumee", r"\bexplosion",
    ),
    "ht": (
        r"\b(?:sant|ode|lode)\s+gaz", r"\bgaz\s+(?:ap\s+)?(?:koule|chape|fuit)", r"\bfuit\s+gaz",
        r"\bfil\s+(?:elektrik|kouran)\s+(?:tonbe|kase|ate)", r"\betensel", r"\belektwokite", r"\bblese\b",
        r"\bbloke\s+anndan", r"\bdife\b", r"\blafimen", r"\beksplozyon",
    ),
    "vi": (
        r"\bro\s+ri\s+(?:khi\s+)?gas?\b", r"\bxi\s+gas?\b", r"\bmui\s+(?:khi\s+)?gas?\b",
        r"\bday\s+dien\s+(?:bi\s+)?(?:dut|roi|dung|chay)", r"\bdien\s+giat", r"\bbi\s+thuong",
        r"\bmac\s+ket", r"\bdam\s+chay", r"\bhoa\s+hoan", r"\bboc\s+chay", r"\bsut\s+lun", r"\bho\s+sut",
        r"\bvu\s+no\b", r"\bphat\s+no\b", r"\bboc\s+khoi",
    ),
    "ru": (
        r"\bзапах\w*\s+газа", r"\bпахн\w*\s+газом", r"\bутечк\w*\s+газа", r"\bгаз\s+(?:пахнет|утекает)",
        r"\b(?:оборван|упав|висящ|оголенн)\w*\s+провод", r"\bпровод\w*\s+(?:оборван|упал|лежит|на\s+земле|искрит)",
        r"\bискрит", r"\bискры\b", r"\bудар\w*\s+током", r"\bтоком\s+удар", r"\bпострадал", r"\bранен",
        r"\bтравмирован", r"\bзастрял\w*\s+в\s+лифте", r"\bв\s+ловушке", r"\bобрушени", r"\bобрушил",
        r"\bпровал\w*\s+(?:грунта|асфальта|дороги)", r"\bпожар", r"\bвозгорани", r"\bогонь", r"\bпламя",
        r"\bдым(?:ит|ится|а|ом)?\b", r"\bзадымлени", r"\bвзрыв",
    ),
    "ar": (
        _arabic(r"(?:رائحه|ريحه|تسرب|تسريب)\s+(?:ال)?غاز"),
        _arabic(r"(?:سلك|اسلاك|خط|خطوط)\s+(?:ال)?كهرباء\s+(?:ال)?(?:ساقط|مقطوع|متدلي|واقع)"),
        _arabic(r"اسلاك\s+(?:ال)?(?:مقطوعه|ساقطه|عاريه)"), _arabic("شرار"), _arabic("صعق"),
        _arabic(r"ماس\s+كهربائي"), _arabic("مصاب"), _arabic(r"اصاب(?:ه|ات)"), _arabic(r"(?:جريح|جرحي)"),
        _arabic("محاصر"), _arabic(r"عالق\w*\s+(?:في|داخل)"), _arabic("انهيار"), _arabic("انهار"),
        _arabic("انخساف"), _arabic(r"هبوط\s+(?:ال)?(?:ارض|طريق|شارع)"), _arabic("حريق"), _arabic(r"نار\b"),
        _arabic("اشتعال"), _arabic("يحترق"), _arabic("تحترق"), _arabic("دخان"), _arabic("انفجار"),
    ),
    "bn": (
        r"\bগ্যাসের\s+গন্ধ", r"\bগ্যাস\s+(?:লিক|বের\s+হচ্ছে)", r"\bগ্যাস\s+লিকেজ",
        r"\b(?:বিদ্যুতের\s+)?তার\s+ছিঁড়ে", r"\bছেঁড়া\s+তার", r"\bখোলা\s+তার", r"\bস্ফুলিঙ্গ", r"\bফুলকি",
        r"\bবিদ্যুৎস্পৃষ্ট", r"\bকারেন্টে\s+শক", r"\bআহত", r"\bআঘাত\s+পেয়েছে", r"\bআটক[ো]\s+পড়েছে",
        r"\bধসে\s+পড়েছে", r"\bআগুন", r"\bধোঁয়া", r"\bবিস্ফোরণ",
    ),
    # No spaces between Chinese words: no word boundaries either.
    "zh-Hans": (
        r"煤[气氣]", r"燃[气氣](?:泄|洩|味|漏)", r"天然[气氣](?:泄|洩|味|漏)", r"瓦斯", r"[电電][线線](?:掉|断|斷|落|垂|脱落|脫落|冒火|起火)",
        r"[电電][线線]杆(?:倒|断|斷)", r"漏[电電]", r"[触觸][电電]", r"火花", r"受[伤傷]", r"被困", r"倒塌", r"坍塌",
        r"塌陷", r"地陷", r"天坑", r"[着著]火", r"起火", r"火[灾災]", r"失火", r"冒[烟煙]", r"[浓濃][烟煙]", r"爆炸",
    ),
    # Korean writes particles onto words ("가스가", "전선이"): a keyword is a word's start.
    "ko": (
        r"가스\s*(?:냄새|누출|가\s*새|새는|샌다)", r"전선(?:이)?\s*(?:끊|떨어|늘어져|드러나|노출)", r"끊어진\s*전선",
        r"불꽃", r"스파크", r"감전", r"다친\s*사람", r"다쳤", r"부상", r"갇혔|갇힌|갇혀", r"붕괴", r"무너(?:졌|져|지)",
        r"싱크홀", r"땅\s*꺼짐", r"화재", r"불(?:이)?\s*(?:났|나고|붙)", r"연기(?:가)?\s*(?:나|피어|자욱)", r"폭발",
    ),
}
LATIN_LANGUAGES = ("en", "es", "fr", "ht", "vi")


def _latin_fold_table() -> dict[int, str]:
    """Accented Latin letters (Latin-1 … Latin Extended Additional) to their bare ASCII letter."""
    table: dict[int, str] = {ord("đ"): "d", ord("Đ"): "d", ord("ø"): "o", ord("ł"): "l", ord("œ"): "oe",
                             ord("æ"): "ae", ord("ß"): "ss"}
    for code in [*range(0xC0, 0x250), *range(0x1E00, 0x1F00)]:
        base = unicodedata.normalize("NFKD", chr(code))[:1]
        if code not in table and base.isascii() and base.isalpha():
            table[code] = base.lower()
    return table


_LATIN_FOLD = _latin_fold_table()
_ARABIC_FOLD = {ord(c): "ا" for c in "أإآٱ"} | {ord("ة"): "ه", ord("ى"): "ي", ord("ـ"): None, ord("ё"): "е"} | {
    code: None for code in range(0x064B, 0x0653)  # harakat, shadda, sukun
}


def fold(text: str) -> str:
    """The text as the patterns read it (see EMERGENCY_PATTERNS)."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).lower().translate(_LATIN_FOLD).translate(_ARABIC_FOLD)


class EmergencyMatcher:
    """Finds the first emergency keyword in a text: the type's own keywords (plain words,
    matched at word starts, as configured) and the built-in phrases in every language
    (`EMERGENCY_PATTERNS`). A type with no keywords at all has emergency detection off."""

    def __init__(self, keywords: list[str] | tuple[str, ...], *, languages: bool = True) -> None:
        words = sorted({fold(k.strip()) for k in keywords if k.strip()}, key=len, reverse=True)
        self._memo: dict[str, str | None] = {}
        if not words:
            self._latin = self._other = None
            return
        latin = [re.escape(w) for w in words]
        other: list[str] = []
        if languages:
            for language, patterns in EMERGENCY_PATTERNS.items():
                if language in LATIN_LANGUAGES:  # each starts at a word start: one \b for all
                    latin.extend(p.removeprefix(r"\b") for p in patterns)
                else:
                    other.extend(unicodedata.normalize("NFKC", p) for p in patterns)
        self._latin = re.compile(r"\b(?:" + "|".join(latin) + ")")
        # Other scripts cannot occur in ASCII text: that search is skipped for most reports.
        self._other = re.compile("|".join(other)) if other else None

    def find(self, text: str) -> str | None:
        if self._latin is None or not text:
            return None
        if text in self._memo:
            return self._memo[text]
        folded = fold(text)
        match = self._latin.search(folded)
        if match is None and self._other is not None and not text.isascii():
            match = self._other.search(folded)
        found = match.group(0) if match else None
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[text] = found
        return found

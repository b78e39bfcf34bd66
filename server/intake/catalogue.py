"""What the built-in service types mean: a description, search keywords and, where the
cities' own exports show what their call-takers ask, Open311 attributes.

Types are created when an export first names them (server/intake/servicetypes.py); this
catalogue gives the ones the bundled LA, Chicago and NYC exports name a real description
instead of none. The attribute values are the cities' own: the surfaces and places of
Chicago's graffiti form, the descriptors NYC's 311 records for each complaint type. A
streetlight's pole number and a pothole's size are what crews ask first, so they are asked
too (optional: a resident may not know). Every attribute is optional, so no client that
ignores service definitions is refused. A `FIELDWORK_SERVICE_TYPES` file still wins.

NYC's export names some 160 complaint types, most of them rare. Rather than a hand-written
guess for each, a type with no entry here is described when an import first creates it, from
the data itself (`describe_from_data`): the city's name for it and the finer kinds its records
give most often (NYC's descriptors), e.g. "Reports filed under "Plumbing" in the city's 311
records, such as: basin/sink; water supply; toilet." That says only what the data says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["BUILT_IN", "built_in", "describe_from_data"]


def _choice(code: str, question: str, values: list[str], order: int) -> dict[str, Any]:
    return {"code": code, "datatype": "singlevaluelist", "required": False, "variable": True, "order": order,
            "description": question, "values": [{"key": _key(v), "name": v} for v in values]}


def _text(code: str, question: str, order: int, hint: str | None = None, datatype: str = "string") -> dict[str, Any]:
    entry = {"code": code, "datatype": datatype, "required": False, "variable": True, "order": order,
             "description": question}
    if hint:
        entry["datatype_description"] = hint
    return entry


def _key(value: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in value.lower()).strip("_")[:60]


_STREETLIGHT = {
    "description": "A street or alley light that is out, flickering, burning by day, or damaged.",
    "keywords": "streetlight, street light, lamp, lamppost, pole, light out, dark street",
    "attributes": [
        _text("POLE_NUMBER", "The number on the pole, if you can read it", 1,
              "letters and digits painted or tagged on the pole, e.g. 12345 or E-1234"),
        # NYC's descriptors of "Street Light Condition"
        _choice("PROBLEM", "What is wrong with the light?",
                ["Street Light Out", "Street Light Dayburning", "Street Light Cycling", "Lamppost Knocked Down",
                 "Street Light Lamp Missing", "Lamppost Base Door/Cover Open", "Lamppost Missing"], 2),
        _choice("LIGHTS_OUT", "How many lights are out?", ["One light", "Two or more lights in a row"], 3),
    ],
}
_GRAFFITI = {
    "description": "Paint or marker tags on public or private property, removed by the city's crews.",
    "keywords": "graffiti, tag, tagging, vandalism, spray paint",
    "attributes": [
        # Chicago's graffiti form ("What Type of Surface is the Graffiti on?", "Where is the Graffiti located?")
        _choice("SURFACE", "What type of surface is the graffiti on?",
                ["Metal - Painted", "Metal - Unpainted", "Brick - Painted", "Brick - Unpainted",
                 "Cement (Sidewalk, Alley, Wall, Curb)", "Wood - Painted", "Wood - Unpainted", "Glass",
                 "Aluminum Siding", "Vinyl Siding", "Limestone", "Tree", "Other/Unknown Surface"], 1),
        _choice("LOCATION", "Where is the graffiti?",
                ["Front", "Side", "Rear", "Pole", "Traffic Control Box", "Alley", "Garage", "Sign", "Door",
                 "Dumpster", "Fence", "Viaduct", "Mail Box", "Newspaper Box", "Garbage Cart"], 2),
    ],
}
_POTHOLE = {
    "description": "Potholes, cave-ins and broken or rough pavement in the roadway.",
    "keywords": "pothole, pavement, road, street, cave-in, crack, asphalt",
    "attributes": [
        # NYC's descriptors of "Street Condition"
        _choice("PROBLEM", "What is wrong with the street?",
                ["Pothole", "Cave-in", "Defective Hardware", "Rough, Pitted or Cracked Roads",
                 "Plate Condition - Noisy", "Failed Street Repair"], 1),
        _choice("SIZE", "About how big is it?",
                ["Smaller than a dinner plate", "Up to a car tyre", "Larger than a car tyre"], 2),
        _choice("LANE", "Where in the road?", ["Traffic lane", "Bike lane", "Crosswalk", "Parking lane"], 3),
    ],
}
_NOISE = {
    "description": "Noise from a home, business, street or vehicle.",
    "keywords": "noise, loud, music, party, banging",
    "attributes": [
        _choice("NOISE", "What kind of noise?",
                ["Loud Music/Party", "Banging/Pounding", "Loud Talking", "Loud Television"], 1),
    ],
}

# Keyed by service code (the slug of the type's name in the export).
BUILT_IN: dict[str, dict[str, Any]] = {
    # Los Angeles (MyLA311)
    "bulky-items": {
        "description": "Collection of large household items (furniture, mattresses) set out at the curb.",
        "keywords": "bulky, furniture, mattress, sofa, couch, pickup, collection",
    },
    "graffiti-removal": _GRAFFITI,
    "illegal-dumping-pickup": {
        "description": "Trash, furniture or debris dumped on a street, sidewalk or alley, to be picked up.",
        "keywords": "dumping, illegal dumping, trash, debris, pile, pickup",
    },
    "metal-household-appliances": {
        "description": "Collection of appliances and metal items: refrigerators, washers, water heaters.",
        "keywords": "appliance, fridge, refrigerator, washer, dryer, metal, pickup",
    },
    "electronic-waste": {
        "description": "Collection of electronics: televisions, computers, monitors.",
        "keywords": "e-waste, electronics, tv, television, computer, monitor",
    },
    "homeless-encampment": {
        "description": "An encampment on public property, referred for outreach and clean-up.",
        "keywords": "encampment, tent, homeless, outreach",
    },
    "dead-animal-removal": {
        "description": "A dead animal on a street, sidewalk or other public place, to be removed.",
        "keywords": "dead animal, carcass, roadkill",
        "attributes": [_choice("ANIMAL", "Which animal?", ["Dog", "Cat", "Raccoon", "Opossum", "Rat or Mouse",
                                                           "Bird", "Other"], 1)],
    },
    "single-streetlight-issue": _STREETLIGHT,
    "multiple-streetlight-issue": _STREETLIGHT,
    "report-water-waste": {
        "description": "Water being wasted: sprinklers running in the rain, runoff, leaking irrigation.",
        "keywords": "water waste, sprinkler, irrigation, runoff",
    },
    "feedback": {"description": "Feedback about a city service.", "keywords": "feedback, comment"},
    "other": {"description": "A problem that fits no other type; a dispatcher routes it.", "keywords": "other"},
    # Chicago
    "street-lights-all-out": _STREETLIGHT,
    "street-light-1-out": _STREETLIGHT,
    "alley-light-out": {**_STREETLIGHT, "description": "An alley light that is out or damaged."},
    # New York City
    "street-light-condition": _STREETLIGHT,
    "street-condition": _POTHOLE,
    "pothole": _POTHOLE,
    "graffiti": _GRAFFITI,
    "noise-residential": _NOISE,
    "noise-commercial": {**_NOISE, "description": "Noise from a business: music, a club, equipment."},
    "noise-street-sidewalk": {**_NOISE, "description": "Noise on a street or sidewalk."},
    "heat-hot-water": {
        "description": "No heat or no hot water in a residential building.",
        "keywords": "heat, heating, hot water, boiler, cold apartment",
        "attributes": [_choice("EXTENT", "Is it the entire building or your apartment only?",
                               ["ENTIRE BUILDING", "APARTMENT ONLY"], 1)],
    },
    "illegal-parking": {
        "description": "A vehicle parked illegally: at a hydrant, on a sidewalk, in a bike lane.",
        "keywords": "parking, parked, hydrant, double parked, bike lane",
        "attributes": [_choice("VIOLATION", "What is the vehicle blocking?",
                               ["Blocked Hydrant", "Posted Parking Sign Violation", "Commercial Overnight Parking",
                                "Blocked Sidewalk", "Blocked Bike Lane", "Double Parked Blocking Traffic",
                                "Blocked Crosswalk", "Double Parked Blocking Vehicle"], 1)],
    },
    "blocked-driveway": {
        "description": "A vehicle blocking a driveway.",
        "keywords": "driveway, blocked, car, vehicle",
        "attributes": [_choice("ACCESS", "Can you get in or out?", ["No Access", "Partial Access"], 1)],
    },
    "damaged-tree": {
        "description": "A tree or branch that has fallen, is cracked, leaning or in poor condition.",
        "keywords": "tree, branch, limb, fallen tree, leaning",
        "attributes": [_choice("PROBLEM", "What is wrong with the tree?",
                               ["Branch or Limb Has Fallen Down", "Tree Leaning/Uprooted",
                                "Branch Cracked and Will Fall", "Entire Tree Has Fallen Down",
                                "Tree Alive - in Poor Condition"], 1)],
    },
    "traffic-signal-condition": {
        "description": "A traffic or pedestrian signal that is dark, stuck or damaged.",
        "keywords": "traffic light, signal, pedestrian signal, walk sign",
        "attributes": [_choice("PROBLEM", "What is wrong?",
                               ["Controller", "Veh Signal Lamp", "LED Pedestrian Unit", "Pedestrian Signal",
                                "Ped Multiple Lamps", "Controller Cabinet"], 1)],
    },
    "rodent": {
        "description": "Rats or mice seen, or conditions that attract them.",
        "keywords": "rat, mouse, mice, rodent",
        "attributes": [_choice("PROBLEM", "What did you see?",
                               ["Rat Sighting", "Mouse Sighting", "Signs of Rodents",
                                "Condition Attracting Rodents"], 1)],
    },
    "sewer": {
        "description": "Sewer backups, clogged catch basins, broken manhole covers, street flooding.",
        "keywords": "sewer, catch basin, manhole, flooding, drain",
    },
    "water-system": {
        "description": "Water leaks, hydrants running or damaged, dirty water, no water.",
        "keywords": "water, leak, hydrant, water main, dirty water",
    },
}


def built_in(code: str) -> dict[str, Any] | None:
    """The catalogue entry of a service code (description, keywords, maybe attributes)."""
    return BUILT_IN.get(code)


# -- types the catalogue does not know: described from the records that name them -------------------

MAX_EXAMPLES = 6
_AGENCY_CODE = re.compile(r"\s*\((?:[A-Z0-9]{2,4})\)$")  # "Noise: Alarms (NR3)": the agency's own code
_LEADING_CODE = re.compile(r"^(?:E\d+[A-Z]?\s+|\d{1,2}[A-Z]*\s+(?=[A-Z]))")  # "12 Dead Animals", "E3 …", "1R Missed …"
_NOT_A_KIND = {"n/a", "na", "none", "other", "unknown", "other/unknown", "other (complaint details)",
               "other (explain below)", "other (use comments)"}
_SMALL_WORDS = {"a", "an", "and", "of", "or", "the", "to", "in", "for", "on", "at", "by", "with"}


def _plain(text: str, capitals: bool) -> str:
    """The capitals of a source that writes in capitals ("WATER SUPPLY" under "PLUMBING") as a
    sentence would have them; a mixed-case source's own capitals ("NYPD") are kept."""
    return text.lower() if capitals and text.isupper() else text


def _kind(value: str, name: str, capitals: bool) -> str | None:
    """One descriptor as a resident would read it, or None when it says nothing more than the type."""
    text = _LEADING_CODE.sub("", _AGENCY_CODE.sub("", value.strip()))
    prefix = re.match(r"^([A-Za-z]+)[:,]\s+", text)
    if prefix and prefix.group(1).lower() in name.lower().split():
        text = text[prefix.end():]  # "Noise: Alarms" under "Noise", "Air: Smoke" under "Air Quality"
    text = " ".join(text.split())[:80]
    if not text or text.lower() in _NOT_A_KIND or text.lower().startswith("other ") or text.lower() == name.lower():
        return None
    if "internal use" in text.lower() or "use comments" in text.lower():
        return None
    return _plain(text, capitals)


def describe_from_data(name: str, kinds: Iterable[tuple[str, int]]) -> dict[str, str]:
    """A description and keywords for a type the catalogue does not know, from its records:
    its name as the city writes it and its finer kinds (value, how many records), the most
    frequent first. Nothing is invented: with no kinds, the description is only the name."""
    kinds = sorted(kinds, key=lambda vc: -vc[1])
    # A source that writes in capitals (NYC's housing categories) is written in sentence case;
    # an acronym among mixed-case values ("NYPD") is kept.
    capitals = name.isupper() or (bool(kinds) and sum(v.isupper() for v, _ in kinds) * 2 >= len(kinds))
    shown = _plain(" ".join(name.split()), name.isupper())
    title = shown[:1].upper() + shown[1:]
    examples: list[str] = []
    for value, _count in kinds:
        kind = _kind(value, name, capitals)
        if kind is not None and kind.lower() not in {e.lower() for e in examples}:
            examples.append(kind)
        if len(examples) == MAX_EXAMPLES:
            break
    description = f'Reports filed under "{title}" in the city\'s 311 records'
    description += f", such as: {'; '.join(examples)}." if examples else "."
    words = [w for w in re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*", shown.lower()) if len(w) > 2 and w not in _SMALL_WORDS]
    parts = [part.strip() for e in examples for part in e.lower().split(",")]  # keywords are comma-separated
    keywords: list[str] = []
    for word in [shown.lower(), *words, *parts]:
        if word and word not in keywords:
            keywords.append(word)
    text = ", ".join(keywords)
    while len(text) > 500:  # ServiceType.keywords
        keywords.pop()
        text = ", ".join(keywords)
    return {"description": description, "keywords": text}

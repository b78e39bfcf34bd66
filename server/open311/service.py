"""Open311 GeoReport v2 and mySociety's `servicerequestupdates` as plain service functions.

Handlers (api.py) only parse HTTP; everything here takes the session first and keyword-only
arguments after it, and raises domain errors (`server.errors`) that the Open311 router
renders in the spec's error format:

    Forbidden       403  missing or unknown api_key
    NotFound        404  unknown jurisdiction_id, service_code, request, token
    InvalidRequest  400  every named problem of one request at once (a ValidationFailed)

What we publish: a request is a `Case` (its id, as a string, is the `service_request_id`);
its status is its work order's, through `server.status` (`open311` and `extended`). Reporter
contact details live in `CaseContact`, which this module writes (through the pipeline) and
never reads.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import and_, case, or_
from sqlmodel import Session, col, select

from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.intake.catalogue import built_in
from server.intake.geocode import GEOCODED_KEY, geocoded_note, suggest_position
from server.intake.pipeline import Pipeline
from server.intake.records import Contact, IncomingCase
from server.intake.servicetypes import load_overrides
from server.media import photo_url, store_report_photo
from server.models import Case, ServiceType, WorkOrder, WorkOrderEvent, utcnow
from server.notify.outbox import crew_job_assigned
from server.open311.render import (
    Attribute,
    AttributeValue,
    Discovery,
    Endpoint,
    RequestCreated,
    RequestUpdate,
    Service,
    ServiceDefinition,
    ServiceRequest,
    TokenLookup,
    UpdateAccepted,
    format_datetime,
)
from server.residents.expected import CloseTimes, Expectation, close_times
from server.residents.notices import expectation_text, report_notice
from server.settings import Settings
from server.status import STATUSES, InvalidTransition, Kind, Status, info
from server.workorders.changes import Actor, add_fact, change_status, load_for_update

__all__ = [
    "BASE_PATH",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_WINDOW",
    "MAX_PAGE_SIZE",
    "UPDATES_DEFAULT_WINDOW",
    "AttributeSpec",
    "InvalidRequest",
    "RequestQuery",
    "Submitted",
    "UpdateQuery",
    "attribute_specs",
    "check_api_key",
    "check_jurisdiction",
    "create_request",
    "described",
    "discovery",
    "find_requests",
    "get_request",
    "list_services",
    "lookup_token",
    "parse_request_query",
    "parse_update_query",
    "post_request_update",
    "request_updates",
    "service_definition",
    "submit_request",
]

BASE_PATH = "/open311/v2"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-11-26T00:00:00Z"  # bump when this document or the API changes shape

DEFAULT_WINDOW = timedelta(days=90)  # GET requests without a date filter (spec)
MAX_SPAN = timedelta(days=90)  # start_date..end_date "may not span more than 90 days" (spec)
DEFAULT_PAGE_SIZE = 1000  # "first 1000 requests returned" (spec); `page_size` lowers it
# A billion requests at the largest page size; past it the offset would not fit a database integer.
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1000
MAX_IDS = 1000  # service_request_id values in one GET
UPDATES_DEFAULT_WINDOW = timedelta(days=90)  # the same rules as GET requests

DATATYPES = frozenset({"string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"})
LIST_DATATYPES = frozenset({"singlevaluelist", "multivaluelist"})
# Where a POST's address_id is kept: attribute codes come only from service definitions,
# so a client cannot write this key through `attribute[...]`.
ADDRESS_ID_KEY = "open311:address_id"
MAX_ATTRIBUTE_VALUES = 100
MAX_ATTRIBUTE_VALUE_LENGTH = 2000

# Longest accepted value of each POST field (the columns they are stored in).
FIELD_LIMITS = {
    "address_string": 300,
    "address_id": 80,
    "description": 4000,
    "media_url": 500,
    "email": 254,
    "phone": 40,
    "first_name": 120,
    "last_name": 120,
    "device_id": 120,
    "account_id": 120,
}

_STATUS_EVENTS_JOIN = ("created", "merged")  # events that concern one case (data.case_id)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_ZIPCODE = re.compile(r"\b(\d{5})(?:-\d{4})?(?:\s*,?\s*USA?)?\s*$", re.IGNORECASE)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A '+' sent unencoded in a query string arrives as a space: "…T00:00:00 08:00".
_SPACE_OFFSET = re.compile(r"^(.*T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
_ATTRIBUTE_KEY = re.compile(r"^attribute\[([^\[\]]+)\](\[\])?$")
# Control characters other than tab and line breaks: no place in a report (and PostgreSQL
# refuses NUL in text).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

FormData = Mapping[str, "str | list[str]"]


class InvalidRequest(ValidationFailed):
    """One request with one or more named problems, all reported at once (400)."""

    def __init__(self, problems: list[str]) -> None:
        # Every problem is worded "<field> ...", so the first one names the field for the
        # JSON error body that the resident page's report route shares with Open311.
        first = re.match(r"[A-Za-z_][A-Za-z0-9_]*", problems[0]) if problems else None
        super().__init__("; ".join(problems), field=first.group(0) if first else None)
        self.problems = problems


def _quoted(value: str, limit: int = 60) -> str:
    """A client's value echoed in an error, shortened."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


# -- access -----------------------------------------------------------------------------


def check_api_key(api_key: str | None, *, keys: Sequence[str], action: str) -> str:
    """The caller's key if it is one of ours (compared in constant time), else 403."""
    if not api_key:
        raise Forbidden(f"api_key was not provided -- can't proceed with {action}", field="api_key")
    given = api_key.encode()
    if not any(hmac.compare_digest(given, key.encode()) for key in keys):
        raise Forbidden(f"Invalid api_key received -- can't proceed with {action}", field="api_key")
    return api_key


def check_jurisdiction(jurisdiction_id: str | None, *, settings: Settings) -> None:
    """We serve one jurisdiction: the parameter is optional, but a wrong one is a 404 (spec)."""
    if jurisdiction_id and jurisdiction_id != settings.intake.jurisdiction_id:
        raise NotFound(f"jurisdiction_id {_quoted(jurisdiction_id)} not found", field="jurisdiction_id")


# -- discovery and services -------------------------------------------------------------


def discovery(*, settings: Settings) -> Discovery:
    url = settings.public_url.rstrip("/") + BASE_PATH
    return Discovery(
        changeset=CHANGESET,
        contact=f"Fieldwork Open311 GeoReport v2 endpoint of {settings.intake.jurisdiction_id}: {url}",
        key_service=(
            "Reading needs no key. To submit requests, ask the city's Fieldwork administrator "
            "for an api_key."
        ),
        endpoints=[
            Endpoint(
                specification=SPECIFICATION,
                url=url,
                changeset=CHANGESET,
                type="production",
                formats=["text/xml", "application/json"],
            )
        ],
    )


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute of a service definition, normalised from `ServiceType.attributes`."""

    code: str
    datatype: str
    required: bool
    variable: bool
    order: int
    description: str | None
    datatype_description: str | None
    values: tuple[tuple[str, str], ...]

    @property
    def field(self) -> str:
        return f"attribute[{self.code}]"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def _list_values(raw: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, Mapping):
        return tuple((str(k), str(v)) for k, v in raw.items())
    pairs: list[tuple[str, str]] = []
    for entry in raw or ():
        if isinstance(entry, Mapping) and entry.get("key") is not None:
            pairs.append((str(entry["key"]), str(entry.get("name") or entry["key"])))
        elif isinstance(entry, str | int | float):
            pairs.append((str(entry), str(entry)))
    return tuple(pairs)


def attribute_specs(raw: list[dict[str, Any]] | None) -> list[AttributeSpec]:
    """Attribute definitions in presentation order; entries without a code are skipped.

    `ServiceType.attributes` holds GeoReport attribute objects (`code`, `datatype`,
    `required`, `variable`, `order`, `description`, `datatype_description`, `values` as
    `[{key, name}]`, plain strings or a `{key: name}` map); an unknown datatype is "string".
    """
    specs: list[AttributeSpec] = []
    for index, entry in enumerate(raw or []):
        if not isinstance(entry, Mapping) or not str(entry.get("code") or "").strip():
            continue
        datatype = str(entry.get("datatype") or "string").strip().lower()
        try:
            order = int(entry.get("order") or index + 1)
        except (TypeError, ValueError):
            order = index + 1
        specs.append(
            AttributeSpec(
                code=str(entry["code"]).strip(),
                datatype=datatype if datatype in DATATYPES else "string",
                required=_truthy(entry.get("required", False)),
                variable=_truthy(entry.get("variable", True)),
                order=order,
                description=str(entry.get("description") or entry.get("name") or "") or None,
                datatype_description=entry.get("datatype_description") or None,
                values=_list_values(entry.get("values")),
            )
        )
    return sorted(specs, key=lambda s: (s.order, s.code))


def described(stype: ServiceType) -> tuple[str, str, list[dict[str, Any]] | None]:
    """(description, keywords, attributes) of a type; one stored before the built-in
    catalogue existed (nothing of the three set) is described from the catalogue."""
    if stype.description or stype.keywords or stype.attributes:
        return stype.description, stype.keywords, stype.attributes
    entry = built_in(stype.code) or {}
    return entry.get("description", ""), entry.get("keywords", ""), entry.get("attributes")


def _active_type(session: Session, code: str) -> ServiceType:
    stype = session.get(ServiceType, code)
    if stype is None or not stype.active:
        raise NotFound(f"service_code {_quoted(code)} not found", field="service_code")
    return stype


def list_services(session: Session) -> list[Service]:
    rows = session.exec(
        select(ServiceType).where(col(ServiceType.active).is_(True)).order_by(ServiceType.name, ServiceType.code)
    ).all()
    services = []
    for t in rows:
        description, keywords, attributes = described(t)
        services.append(Service(
            service_code=t.code,
            service_name=t.name,
            description=description or None,
            metadata=bool(attribute_specs(attributes)),
            type="realtime",
            keywords=keywords or None,
            group=t.group or None,
        ))
    return services


def service_definition(session: Session, *, service_code: str) -> ServiceDefinition:
    stype = _active_type(session, service_code)
    return ServiceDefinition(
        service_code=stype.code,
        attributes=[
            Attribute(
                variable=s.variable,
                code=s.code,
                datatype=s.datatype,
                required=s.required,
                datatype_description=s.datatype_description,
                order=s.order,
                description=s.description,
                values=[AttributeValue(key=k, name=n) for k, n in s.values]
                if s.datatype in LIST_DATATYPES
                else msgspec.UNSET,
            )
            for s in attribute_specs(described(stype)[2])
        ],
    )


# -- parsing helpers --------------------------------------------------------------------


def _clean(value: str) -> str:
    return _CONTROL.sub("", value).strip()


def _first(form: FormData, name: str) -> str | None:
    """A single-valued parameter, cleaned; empty means absent (spec: "Optional Arguments")."""
    raw = form.get(name)
    values = raw if isinstance(raw, list) else [raw]
    return next((_clean(v) for v in values if v is not None and _clean(v)), None)


def parse_datetime(value: str, *, field: str, zone: ZoneInfo, problems: list[str]) -> datetime | None:
    """A W3C date-time with an offset (or a bare date: local midnight), as aware UTC."""
    text = value.strip()
    match = _SPACE_OFFSET.match(text)
    if match:
        text = f"{match.group(1)}+{match.group(2)}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"{field} is not a W3C date-time such as 2010-01-01T00:00:00Z: {_quoted(value)}")
        return None
    if parsed.tzinfo is None:
        if _DATE_ONLY.match(text):
            return datetime.combine(parsed.date(), time(), tzinfo=zone).astimezone(UTC)
        problems.append(f"{field} must include a time zone offset (Z or ±hh:mm): {_quoted(value)}")
        return None
    return parsed.astimezone(UTC)


def _int_param(value: str | None, *, field: str, low: int, high: int | None, problems: list[str]) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = int(value.strip())
    except ValueError:
        problems.append(f"{field} must be a whole number: {_quoted(value)}")
        return None
    if number < low or (high is not None and number > high):
        upper = f" and {high}" if high is not None else " or more"
        problems.append(f"{field} must be {'between ' if high is not None else ''}{low}{upper}: {number}")
        return None
    return number


def _comma_list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


# -- POST requests ----------------------------------------------------------------------


def _number(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _coordinate(value: str, *, field: str, limit: float, problems: list[str]) -> float | None:
    number = _number(value)
    if number is None:
        problems.append(f"{field} must be a number (WGS84 degrees): {_quoted(value)}")
        return None
    if not -limit <= number <= limit:
        problems.append(f"{field} must be between -{limit:g} and {limit:g}: {number:g}")
        return None
    return number


def _given_attributes(form: FormData) -> dict[str, list[str]]:
    """`attribute[code]=v` and `attribute[code][]=v1&attribute[code][]=v2`, blanks dropped."""
    given: dict[str, list[str]] = {}
    for key, raw in form.items():
        match = _ATTRIBUTE_KEY.match(key)
        if not match:
            continue
        values = [_clean(v) for v in (raw if isinstance(raw, list) else [raw]) if _clean(v)]
        if values:
            given.setdefault(match.group(1), []).extend(values)
    return given


def _check_attribute(spec: AttributeSpec, values: list[str], problems: list[str]) -> list[str] | None:
    name = spec.field
    if len(values) > 1 and spec.datatype != "multivaluelist":
        problems.append(f"{name} takes one value ({spec.datatype}), got {len(values)}")
        return None
    if len(values) > MAX_ATTRIBUTE_VALUES:
        problems.append(f"{name} has more than {MAX_ATTRIBUTE_VALUES} values")
        return None
    if any(len(v) > MAX_ATTRIBUTE_VALUE_LENGTH for v in values):
        problems.append(f"{name} is longer than {MAX_ATTRIBUTE_VALUE_LENGTH} characters")
        return None
    value = values[0]
    if spec.datatype == "string" and ("\n" in value or "\r" in value):
        problems.append(f"{name} must be one line of text (datatype string)")
        return None
    if spec.datatype == "number":
        if _number(value) is None:
            problems.append(f"{name} must be a number: {_quoted(value)}")
            return None
        return [value.strip()]
    if spec.datatype == "datetime":
        text = value.strip()
        try:
            datetime.fromisoformat(text)
        except ValueError:
            problems.append(f"{name} must be an ISO 8601 date or date-time: {_quoted(value)}")
            return None
        return [text]
    if spec.datatype in LIST_DATATYPES:
        keys = [k for k, _ in spec.values]
        wrong = [v for v in values if v not in keys]
        if wrong:
            shown = ", ".join(keys[:12]) + (", …" if len(keys) > 12 else "")
            problems.append(f"{name}: {_quoted(wrong[0])} is not one of the listed values ({shown})")
            return None
        return list(dict.fromkeys(values))  # a repeated choice counts once
    return values


def _validated_attributes(
    specs: list[AttributeSpec], given: dict[str, list[str]], problems: list[str]
) -> dict[str, list[str]]:
    """Answers to the service definition's variable attributes.

    Codes the definition does not name are ignored (not stored): their meaning is unknown and
    they might carry personal data that must not reach a crew device.
    """
    answers: dict[str, list[str]] = {}
    for spec in specs:
        if not spec.variable:
            continue  # shown to the reporter, not asked
        values = given.get(spec.code, [])
        if not values:
            if spec.required:
                problems.append(f"{spec.field} is required")
            continue
        checked = _check_attribute(spec, values, problems)
        if checked is not None:
            answers[spec.code] = checked
    return answers


@dataclass(slots=True)
class _Submission:
    lat: float | None
    lon: float | None
    address: str | None
    address_id: str | None
    description: str
    media_url: str | None
    account_id: str | None
    contact: Contact
    attributes: dict[str, list[str]]


def _read_submission(form: FormData, specs: list[AttributeSpec]) -> _Submission:
    problems: list[str] = []
    values = {name: _first(form, name) for name in FIELD_LIMITS}
    has_address = values["address_string"] is not None or values["address_id"] is not None
    for name, limit in FIELD_LIMITS.items():
        value = values[name]
        if value is not None and len(value) > limit:
            problems.append(f"{name} is longer than {limit} characters ({len(value)})")
            values[name] = None

    lat = lon = None
    lat_text, lon_text = _first(form, "lat"), _first(form, "long")
    if lat_text is not None or lon_text is not None:
        if lat_text is None:
            problems.append("lat is required when long is given")
        elif lon_text is None:
            problems.append("long is required when lat is given")
        else:
            lat = _coordinate(lat_text, field="lat", limit=90, problems=problems)
            lon = _coordinate(lon_text, field="long", limit=180, problems=problems)
    elif not has_address:
        problems.append("location is required: send lat and long, address_string or address_id")

    email = values["email"]
    if email is not None and not _EMAIL.match(email):
        problems.append("email is not an email address")
    media_url = values["media_url"]
    if media_url is not None and not media_url.lower().startswith(("http://", "https://")):
        problems.append(f"media_url must be an http or https URL: {_quoted(media_url)}")

    attributes = _validated_attributes(specs, _given_attributes(form), problems)
    if problems:
        raise InvalidRequest(problems)
    return _Submission(
        lat=lat,
        lon=lon,
        address=values["address_string"],
        address_id=values["address_id"],
        description=values["description"] or "",
        media_url=media_url,
        account_id=values["account_id"],
        contact=Contact(
            first_name=values["first_name"],
            last_name=values["last_name"],
            email=email,
            phone=values["phone"],
            device_id=values["device_id"],
        ),
        attributes=attributes,
    )


@dataclass(frozen=True, slots=True)
class Submitted:
    """A report taken in: what Open311 answers, and what the resident pages show."""

    case_id: int
    token: str
    outcome: str  # created | merged | unlocated
    emergency: bool
    work_order_id: int | None
    reports: int  # cases of its work order, this one included
    expected: Expectation | None
    notice: str
    account_id: str | None


def create_request(
    session: Session,
    *,
    form: FormData,
    api_key: str | None,
    jurisdiction_id: str | None,
    settings: Settings,
    now: datetime | None = None,
    language: str = "en",
    media: bytes | None = None,
) -> RequestCreated:
    """POST requests: check, then hand one `IncomingCase` to the intake pipeline.

    A `media` photo (a multipart file part) is cleaned and kept like a crew's photo, and
    becomes the request's `media_url` (over any `media_url` field).

    Order of checks: api_key (403), jurisdiction_id (404), service_code (400 missing, 404
    unknown), then every field and attribute together (400, each named). Nothing is written
    unless all pass; the caller's transaction commits the case, contact and work order.
    """
    key = check_api_key(_first(form, "api_key") or api_key, keys=settings.auth.open311_api_keys,
                        action="create_request")
    check_jurisdiction(_first(form, "jurisdiction_id") or jurisdiction_id, settings=settings)
    # Which client sent it, without the key itself.
    actor = "open311:key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    if media is not None:
        form = {**form, "media_url": photo_url(settings.public_url, store_report_photo(session, media, field="media"))}
    submitted = submit_request(session, form=form, settings=settings, source="open311", channel="open311",
                               actor=actor, now=now, language=language)
    return RequestCreated(
        service_request_id=str(submitted.case_id),
        token=submitted.token,
        service_notice=submitted.notice,
        account_id=submitted.account_id,
    )


def submit_request(
    session: Session,
    *,
    form: FormData,
    settings: Settings,
    source: str,
    channel: str,
    actor: str,
    now: datetime | None = None,
    language: str = "en",
) -> Submitted:
    """One report through the intake pipeline, from Open311 or the resident page alike.

    The caller has checked who may submit (Open311: the api_key; the resident page: its
    rate limits). Jobs routed to a crew tell the crew (push), in the same transaction.
    """
    code = _first(form, "service_code")
    if code is None:
        raise InvalidRequest(["service_code was not provided"])
    stype = _active_type(session, code)
    submission = _read_submission(form, attribute_specs(described(stype)[2]))

    attributes = dict(submission.attributes)
    if submission.address_id is not None:
        attributes[ADDRESS_ID_KEY] = [submission.address_id]
    if submission.lat is None and submission.address is not None:
        # An address alone: placed from the city's own located history when that is sure
        # enough; otherwise it waits in the unlocated queue for a dispatcher, as before.
        suggestion = suggest_position(session, submission.address)
        if suggestion is not None and suggestion.places:
            submission.lat, submission.lon = suggestion.lat, suggestion.lon
            attributes[GEOCODED_KEY] = geocoded_note(suggestion)
    incoming = IncomingCase(
        source=source,
        external_id=uuid.uuid4().hex,
        service_code=stype.code,
        service_name=stype.name,
        requested_at=now or utcnow(),
        lat=submission.lat,
        lon=submission.lon,
        description=submission.description,
        address=submission.address,
        media_url=submission.media_url,
        attributes=attributes,
        contact=None if submission.contact.is_empty() else submission.contact,
    )
    pipeline = Pipeline(
        overrides=load_overrides(settings.intake.service_types_config),
        tolerance_m=settings.intake.boundary_tolerance_m,
        bulk=False,
    )
    result = pipeline.ingest(session, [incoming], channel=channel, actor=actor, now=incoming.requested_at)
    outcome = result.outcomes[0]
    order = session.get(WorkOrder, outcome.work_order_id) if outcome.work_order_id is not None else None
    if order is not None:
        session.refresh(order)  # the pipeline wrote it with Core statements
        if outcome.outcome == "created":
            crew_job_assigned(session, [order])
    expected = close_times(session).expect_order(order) if order is not None and order.is_open else None
    emergency = outcome.emergency or bool(order is not None and order.emergency)
    reports = order.case_count if order is not None else 1
    return Submitted(
        case_id=outcome.case_id,
        token=outcome.tracking_token or "",
        outcome=outcome.outcome,
        emergency=emergency,
        work_order_id=outcome.work_order_id,
        reports=reports,
        expected=expected,
        notice=report_notice(outcome=outcome.outcome, emergency=emergency, reports=reports, expected=expected,
                             language=language),
        account_id=submission.account_id,
    )


def lookup_token(session: Session, *, token: str) -> TokenLookup:
    case_id = None
    if len(token) <= 40:
        case_id = session.exec(select(Case.id).where(Case.tracking_token == token)).first()
    if case_id is None:
        raise NotFound(f"token {_quoted(token)} not found", field="token")
    return TokenLookup(service_request_id=str(case_id), token=token)


# -- GET requests -----------------------------------------------------------------------


def _open311_statuses(value: str) -> list[str]:
    return [s.value for s, i in STATUSES.items() if i.open311 == value]


def _status_of(order_status: str | None, case_closed_at: datetime | None) -> str:
    """A linked case reports its work order's status; an unlinked one (unlocated queue) is
    open, unless the source itself closed it."""
    if order_status is not None:
        return info(order_status).open311
    return "closed" if case_closed_at is not None else "open"


def _status_condition(value: str) -> Any:
    unlinked = col(Case.closed_at).is_(None) if value == "open" else col(Case.closed_at).is_not(None)
    return or_(
        col(WorkOrder.status).in_(_open311_statuses(value)),
        and_(col(Case.work_order_id).is_(None), unlinked),
    )


def _updated_expression() -> Any:
    """A request's `updated_datetime` in SQL, the same rule as `_updated_at`.

    A closed request was last updated when it was closed (spec), not when an import wrote
    it: its work order's close time, or the source's own close time if it has no work
    order. An open one: the later of the case's and its work order's update times.
    """
    return case(
        (and_(col(WorkOrder.id).is_not(None), col(WorkOrder.is_open).is_(False),
              col(WorkOrder.closed_at).is_not(None)), col(WorkOrder.closed_at)),
        (and_(col(WorkOrder.id).is_(None), col(Case.closed_at).is_not(None)), col(Case.closed_at)),
        (col(WorkOrder.updated_at) > col(Case.updated_at), col(WorkOrder.updated_at)),
        else_=col(Case.updated_at),
    )


def _updated_at(c: Case, order_status: str | None, order_updated_at: datetime | None,
                order_closed_at: datetime | None) -> datetime:
    """`updated_datetime` of one request (see `_updated_expression`)."""
    if order_status is not None:
        if info(order_status).kind != Kind.OPEN and order_closed_at is not None:
            return order_closed_at
    elif c.closed_at is not None:
        return c.closed_at
    return max(c.updated_at, order_updated_at) if order_updated_at else c.updated_at


@dataclass(frozen=True, slots=True)
class RequestQuery:
    ids: tuple[int, ...] | None = None  # given: every other filter is ignored (spec)
    service_codes: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    statuses: frozenset[str] = frozenset()
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE


def parse_request_query(
    *,
    service_request_id: str | None = None,
    service_code: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    status: str | None = None,
    updated_after: str | None = None,
    updated_before: str | None = None,
    page: str | None = None,
    page_size: str | None = None,
    zone: ZoneInfo,
    now: datetime | None = None,
) -> RequestQuery:
    """Validate GET requests' parameters (all of them, each problem named) into a query.

    Date window on requested_datetime: start_date and end_date together may span at most
    90 days; one alone extends 90 days from it; with no date filter at all (updated_after
    and updated_before count as date filters) the last 90 days.
    """
    problems: list[str] = []
    if service_request_id and service_request_id.strip():
        parts = _comma_list(service_request_id)
        if len(parts) > MAX_IDS:
            raise InvalidRequest([f"service_request_id lists more than {MAX_IDS} ids"])
        # Ids are case numbers: anything else cannot match.
        return RequestQuery(ids=tuple(int(p) for p in parts if p.isascii() and p.isdigit() and len(p) < 19))

    def when(value: str | None, field: str) -> datetime | None:
        if value is None or not value.strip():
            return None
        return parse_datetime(value, field=field, zone=zone, problems=problems)

    start, end = when(start_date, "start_date"), when(end_date, "end_date")
    after, before = when(updated_after, "updated_after"), when(updated_before, "updated_before")
    statuses = frozenset(s.lower() for s in _comma_list(status))
    for wrong in sorted(statuses - {"open", "closed"}):
        problems.append(f"status must be open or closed (comma separated): {_quoted(wrong)}")
    number = _int_param(page, field="page", low=1, high=MAX_PAGE, problems=problems)
    size = _int_param(page_size, field="page_size", low=1, high=MAX_PAGE_SIZE, problems=problems)
    if start and end:
        if end < start:
            problems.append("end_date is before start_date")
        elif end - start > MAX_SPAN:
            problems.append("start_date and end_date may not span more than 90 days")
    if problems:
        raise InvalidRequest(problems)
    if start and not end:
        end = start + MAX_SPAN
    elif end and not start:
        start = end - MAX_SPAN
    elif not (start or end or after or before):
        start = (now or utcnow()) - DEFAULT_WINDOW
    return RequestQuery(
        service_codes=tuple(_comma_list(service_code)),
        start=start,
        end=end,
        statuses=statuses if statuses != {"open", "closed"} else frozenset(),
        updated_after=after,
        updated_before=before,
        page=number or 1,
        page_size=size or DEFAULT_PAGE_SIZE,
    )


def _zipcode(address: str | None) -> str | None:
    match = _ZIPCODE.search(address or "")
    return match.group(1) if match else None


def _address_id(attributes: dict[str, Any] | None) -> str | None:
    values = (attributes or {}).get(ADDRESS_ID_KEY)
    return str(values[0]) if values else None


def _request_rows(session: Session, where: Iterable[Any], *, offset: int = 0, limit: int | None = None) -> list[Any]:
    statement = (
        select(  # type: ignore[call-overload]  # SQLModel's select is typed for up to four columns
            Case, WorkOrder.status, WorkOrder.resolution, WorkOrder.sla_due_at, WorkOrder.updated_at,
            WorkOrder.service_code, WorkOrder.district_id, WorkOrder.emergency, WorkOrder.first_reported_at,
            WorkOrder.closed_at,
        )
        .outerjoin(WorkOrder, col(WorkOrder.id) == col(Case.work_order_id))
        .where(*where)
        .order_by(col(Case.requested_at).desc(), col(Case.id).desc())
        .offset(offset)
    )
    if limit is not None:
        statement = statement.limit(limit)
    return list(session.exec(statement).all())


def _expected(row: Any, times: CloseTimes) -> Expectation | None:
    _, order_status, _, sla_due_at, _, code, district_id, emergency, first_reported_at = row[:9]
    if order_status is None or info(order_status).open311 != "open" or first_reported_at is None:
        return None
    due = sla_due_at or first_reported_at + timedelta(hours=72)
    return times.expect(service_code=code, district_id=district_id, emergency=bool(emergency),
                        reported_at=first_reported_at, sla_due_at=due)


def _to_request(row: Any, zone: ZoneInfo, times: CloseTimes, language: str) -> ServiceRequest:
    c, order_status, order_resolution, _, order_updated_at = row[:5]
    status = _status_of(order_status, c.closed_at)
    located = c.location_state == "located" and c.lat is not None and c.lon is not None
    updated = _updated_at(c, order_status, order_updated_at, row[9])
    notes = order_resolution if order_status is not None else c.resolution
    # An open request's expected time is the upper end of the honest range (the tracking
    # page's "4 in 5 by"), and service_notice says the range in words.
    expected = _expected(row, times)
    return ServiceRequest(
        service_request_id=str(c.id),
        status=status,
        status_notes=notes or None,
        service_name=c.service_name or None,
        service_code=c.service_code,
        description=c.description or None,
        agency_responsible=c.agency or None,
        service_notice=expectation_text(expected, language) if expected is not None else None,
        requested_datetime=format_datetime(c.requested_at, zone) or "",
        updated_datetime=format_datetime(updated, zone),
        expected_datetime=format_datetime(expected.high_at, zone) if expected is not None else None,
        address=c.address or None,
        address_id=_address_id(c.attributes),
        zipcode=_zipcode(c.address),
        lat=c.lat if located else None,
        long=c.lon if located else None,
        media_url=c.media_url or None,
    )


def find_requests(
    session: Session, *, query: RequestQuery, zone: ZoneInfo, language: str = "en"
) -> list[ServiceRequest]:
    """GET requests, newest requested first (then highest id)."""
    times = close_times(session)
    if query.ids is not None:
        if not query.ids:
            return []
        rows = _request_rows(session, [col(Case.id).in_(query.ids)])
        return [_to_request(row, zone, times, language) for row in rows]
    where: list[Any] = []
    if query.service_codes:
        where.append(col(Case.service_code).in_(query.service_codes))
    if query.start is not None:
        where.append(col(Case.requested_at) >= query.start)
    if query.end is not None:
        where.append(col(Case.requested_at) <= query.end)
    if len(query.statuses) == 1:
        where.append(_status_condition(next(iter(query.statuses))))
    if query.updated_after is not None:
        where.append(_updated_expression() >= query.updated_after)
    if query.updated_before is not None:
        where.append(_updated_expression() <= query.updated_before)
    rows = _request_rows(
        session, where, offset=(query.page - 1) * query.page_size, limit=query.page_size
    )
    return [_to_request(row, zone, times, language) for row in rows]


def get_request(
    session: Session, *, service_request_id: str, zone: ZoneInfo, language: str = "en"
) -> list[ServiceRequest]:
    """GET requests/{id}: an array of one."""
    ref = service_request_id.strip()
    rows = _request_rows(session, [col(Case.id) == int(ref)]) if ref.isascii() and ref.isdigit() and len(ref) < 19 else []
    if not rows:
        raise NotFound(f"service_request_id {_quoted(service_request_id)} not found", field="service_request_id")
    return [_to_request(rows[0], zone, close_times(session), language)]


# -- mySociety servicerequestupdates ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateQuery:
    start: datetime | None
    end: datetime | None
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE


def parse_update_query(
    *,
    start_date: str | None = None,
    end_date: str | None = None,
    page: str | None = None,
    page_size: str | None = None,
    zone: ZoneInfo,
    now: datetime | None = None,
) -> UpdateQuery:
    """The window of updates, by when each happened, with the rules of GET requests.

    start_date and end_date together may span at most 90 days; one alone extends 90 days
    from it; neither: the last 90 days. At most 1000 updates a page (`page_size` lowers
    it), oldest first; `page` pages on: one anonymous GET can never return the whole
    history at once.
    """
    problems: list[str] = []
    start = parse_datetime(start_date, field="start_date", zone=zone, problems=problems) if start_date else None
    end = parse_datetime(end_date, field="end_date", zone=zone, problems=problems) if end_date else None
    number = _int_param(page, field="page", low=1, high=MAX_PAGE, problems=problems)
    size = _int_param(page_size, field="page_size", low=1, high=MAX_PAGE_SIZE, problems=problems)
    if start and end:
        if end < start:
            problems.append("end_date is before start_date")
        elif end - start > MAX_SPAN:
            problems.append("start_date and end_date may not span more than 90 days")
    if problems:
        raise InvalidRequest(problems)
    if start and not end:
        end = start + MAX_SPAN
    elif end and not start:
        start = end - MAX_SPAN
    elif not (start or end):
        start = (now or utcnow()) - UPDATES_DEFAULT_WINDOW
    return UpdateQuery(start=start, end=end, page=number or 1, page_size=size or DEFAULT_PAGE_SIZE)


def _update_time() -> Any:
    """When an update happened: an imported event at its real time (the source's own close
    time, not the moment of the import); a live one when we recorded it, so that a poller
    never misses a crew's change that synced late."""
    event = WorkOrderEvent
    return case((col(event.channel) == "import", col(event.occurred_at)), else_=col(event.recorded_at))


def _update_text(kind: str, status: str, data: dict[str, Any] | None) -> str:
    if kind == "created":
        return f"Report received ({info(status).label.lower()})"
    if kind == "merged":
        return "Linked to an earlier report of the same problem nearby"
    resolution = (data or {}).get("resolution") or (data or {}).get("reason")
    label = info(status).label
    return f"{label}: {resolution}" if resolution else label


def request_updates(session: Session, *, query: UpdateQuery, zone: ZoneInfo) -> list[RequestUpdate]:
    """Status changes of work orders as updates of each linked case, oldest first.

    A `created` or `merged` event concerns the one case it names (`data.case_id`); a status
    change concerns every case linked to the work order by then. `status` is the mySociety
    extended status (`fixed`, `action_scheduled`, …) and `external_status_code` our own.
    """
    event = WorkOrderEvent
    concerns_one_case = and_(
        col(event.kind).in_(_STATUS_EVENTS_JOIN),
        event.data["case_id"].as_integer() == col(Case.id),  # type: ignore[index]
    )
    status_change = and_(
        col(event.kind).not_in(_STATUS_EVENTS_JOIN),
        col(event.to_status).is_not(None),
        or_(col(event.from_status).is_(None), col(event.from_status) != col(event.to_status)),
        col(Case.received_at) <= col(event.recorded_at),
    )
    when = _update_time()
    where = [or_(concerns_one_case, status_change)]
    if query.start is not None:
        where.append(when >= query.start)
    if query.end is not None:
        where.append(when <= query.end)
    statement = (
        select(event.id, event.work_order_id, event.version, event.kind, event.to_status, event.data,  # type: ignore[call-overload]  # SQLModel's select is typed for up to four columns
               when, Case.id)
        .join(Case, col(Case.work_order_id) == col(event.work_order_id))
        .where(*where)
        .order_by(when, col(event.id), col(Case.id))
        .offset((query.page - 1) * query.page_size)
        .limit(query.page_size)
    )
    rows = session.exec(statement).all()

    # A merge changes no status: it reports the work order's status as of that version.
    merged_orders = {r[1] for r in rows if r[3] == "merged"}
    history: dict[int, list[tuple[int, str | None]]] = {}
    if merged_orders:
        for order_id, version, to_status in session.exec(
            select(event.work_order_id, event.version, event.to_status)
            .where(col(event.work_order_id).in_(merged_orders), col(event.to_status).is_not(None))
            .order_by(col(event.version))
        ).all():
            history.setdefault(order_id, []).append((version, to_status))

    updates: list[RequestUpdate] = []
    for event_id, order_id, version, kind, to_status, data, recorded_at, case_id in rows:
        status = to_status
        if kind == "merged":
            earlier = [s for v, s in history.get(order_id, []) if v < version]
            status = earlier[-1] if earlier else "new"
        state = info(status)
        updates.append(
            RequestUpdate(
                update_id=f"{event_id}_{case_id}",
                service_request_id=str(case_id),
                status=state.extended,
                description=_update_text(kind, status, data),
                updated_datetime=format_datetime(recorded_at, zone) or "",
                media_url="",
                external_status_code=state.status.value,
            )
        )
    return updates


# -- mySociety POST servicerequestupdates: a back office's updates into the same loop ------

# The extended statuses a back office may post (upper case, as FixMyStreet sends them), and
# what each does to the work order. None: a note only, unless the job is closed (then it
# reopens). Every change goes through the work-order writer, so residents hear of it.
_REOPEN = "reopen"
_SCHEDULE = "schedule"
UPDATE_STATUSES: dict[str, str | Status | None] = {
    "OPEN": _REOPEN,
    "REOPEN": _REOPEN,
    "FOR_TRIAGE": _REOPEN,
    "INVESTIGATING": Status.ON_HOLD,
    "ACTION_SCHEDULED": _SCHEDULE,
    "PLANNED": _SCHEDULE,
    "IN_PROGRESS": _SCHEDULE,
    "FIXED": Status.COMPLETED,
    "CLOSED": Status.COMPLETED,
    "UNABLE_TO_FIX": Status.CANNOT_COMPLETE,
    "NOT_COUNCILS_RESPONSIBILITY": Status.CANNOT_COMPLETE,
    "NO_FURTHER_ACTION": Status.CANNOT_COMPLETE,
    "INTERNAL_REFERRAL": Status.CANNOT_COMPLETE,
    "DUPLICATE": Status.CANCELLED,
    "CANCELLED": Status.CANCELLED,
}
MAX_UPDATE_ID = 64
MAX_UPDATE_DESCRIPTION = 2000


def _update_target(requested: str | Status | None, current: Status) -> Status | None:
    """The status a posted update moves the job to (None: no status change)."""
    closed = info(current).kind != Kind.OPEN
    if requested == _REOPEN:
        return Status.NEW if closed else None
    if requested == _SCHEDULE:
        return Status.ASSIGNED if closed or current in (Status.NEW, Status.ON_HOLD) else None
    if requested == Status.ON_HOLD:
        return Status.ON_HOLD if current == Status.NEW else None
    assert isinstance(requested, Status)
    return None if requested == current else requested


def post_request_update(
    session: Session,
    *,
    form: FormData,
    api_key: str | None,
    jurisdiction_id: str | None,
    settings: Settings,
) -> UpdateAccepted:
    """POST servicerequestupdates: a back office's status update of one request.

    Required (mySociety): api_key, service_request_id, update_id (the sender's id: posting
    the same one again changes nothing and answers the same), status (an extended status,
    e.g. FIXED), updated_datetime, description. A status change goes through the work-order
    writer with the description as its reason (the resolution residents see); an update
    that changes no status is kept as a note on the job. A change the state machine refuses
    is a 409 naming `status`.
    """
    key = check_api_key(_first(form, "api_key") or api_key, keys=settings.auth.open311_api_keys,
                        action="post servicerequestupdates")
    check_jurisdiction(_first(form, "jurisdiction_id") or jurisdiction_id, settings=settings)
    problems: list[str] = []
    ref = _first(form, "service_request_id")
    update_id = _first(form, "update_id")
    status_text = (_first(form, "status") or "").upper()
    when_text = _first(form, "updated_datetime")
    raw_description = form.get("description")
    description = _clean(raw_description[0] if isinstance(raw_description, list) else raw_description or "")
    if ref is None:
        problems.append("service_request_id was not provided")
    if update_id is None:
        problems.append("update_id was not provided")
    elif len(update_id) > MAX_UPDATE_ID:
        problems.append(f"update_id is longer than {MAX_UPDATE_ID} characters")
    if not status_text:
        problems.append("status was not provided")
    elif status_text not in UPDATE_STATUSES:
        problems.append(f"status must be one of {', '.join(UPDATE_STATUSES)}: {_quoted(status_text)}")
    when = None
    if when_text is None:
        problems.append("updated_datetime was not provided")
    else:
        when = parse_datetime(when_text, field="updated_datetime", zone=settings.intake.zone, problems=problems)
    if raw_description is None:
        problems.append("description was not provided")
    elif len(description) > MAX_UPDATE_DESCRIPTION:
        problems.append(f"description is longer than {MAX_UPDATE_DESCRIPTION} characters")
    if problems:
        raise InvalidRequest(problems)
    assert ref is not None and update_id is not None
    case_row = session.get(Case, int(ref)) if ref.isascii() and ref.isdigit() and len(ref) < 19 else None
    if case_row is None:
        raise NotFound(f"service_request_id {_quoted(ref)} not found", field="service_request_id")
    if case_row.work_order_id is None:
        raise InvalidRequest([f"service_request_id {ref} is not placed on the map yet: it has no job to update"])

    key_hash = hashlib.sha256(key.encode()).hexdigest()[:8]
    uid = "o311u-" + hashlib.sha256(f"{key_hash}:{update_id}".encode()).hexdigest()[:48]
    replay = session.exec(select(WorkOrderEvent.id).where(WorkOrderEvent.uid == uid)).first()
    if replay is not None:
        return UpdateAccepted(update_id=str(replay))

    order = load_for_update(session, case_row.work_order_id)
    actor = Actor(user_id=None, label=f"open311:key-{key_hash}", channel="open311")
    target = _update_target(UPDATE_STATUSES[status_text], Status(order.status))
    if target is not None:
        try:
            event = change_status(session, order, to=target, actor=actor, occurred_at=when,
                                  reason=description or None, uid=uid)
        except InvalidTransition as exc:
            raise Conflict(f"status {status_text}: {exc}", field="status") from None
    else:
        event, _ = add_fact(session, order, kind="note", uid=uid, actor=actor, occurred_at=when,
                            data={"text": f"{status_text.lower()}: {description}" if description else status_text.lower(),
                                  "source": "open311"})
    session.flush()
    return UpdateAccepted(update_id=str(event.id))

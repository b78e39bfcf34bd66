"""Residents: report a problem, track it, ask to be notified. Plain service functions.

A report from our own page goes through the same intake as Open311 `POST requests`
(`server.open311.service.submit_request`), without an api_key but bounded: a per-client
limit in the route (Litestar's rate limiter) and a city-wide cap per minute counted in the
database, so that it holds across workers and hosts.

Tracking accepts our number (the `service_request_id`), the tracking token, or the city's
own request number (an imported case's external id, e.g. LA `1-1523590121`). Only the
token, which only the reporter has, lets a browser subscribe to notices.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlmodel import Session, col, func, select

from server.errors import NotFound, TooManyAttempts
from server.media import photo_url, store_report_photo
from server.models import Blob, Case, PushSubscription, WorkOrder, WorkOrderEvent, utcnow
from server.notify.catalog import LANGUAGES, match_language
from server.notify.subscriptions import bind_to_case, parse_subscription, unbind_from_case
from server.open311.service import Submitted, submit_request
from server.residents.expected import Expectation, close_times
from server.settings import Settings
from server.status import Kind, Status, info

__all__ = [
    "WEB_SOURCE",
    "ExpectedPublic",
    "ReportCreated",
    "TimelineEntry",
    "TrackingPublic",
    "find_case",
    "photo",
    "submit_report",
    "subscribe",
    "tracking",
    "unsubscribe",
]

WEB_SOURCE = "web"  # Case.source of reports made on our own page
OUR_SOURCES = frozenset({"open311", WEB_SOURCE})
PHOTO_TYPES = {"image/jpeg", "image/png", "image/webp"}
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DUPLICATE = re.compile(r"\bdup(?:licate)?s?\b", re.IGNORECASE)


# -- API shapes -------------------------------------------------------------------------


class ExpectedPublic(msgspec.Struct):
    basis: str  # district | citywide | sla
    emergency: bool
    sample_size: int
    median_hours: float | None
    p80_hours: float
    low_at: datetime | None  # usually fixed by
    high_at: datetime  # 4 in 5 fixed by (or our target, for basis sla)
    overdue: bool  # still open past high_at


class TimelineEntry(msgspec.Struct):
    """One line of a case's story; the page says it in words (`timeline.<kind>`)."""

    kind: str
    at: datetime
    detail: str | None = None  # a reason or resolution, as the crew or office wrote it
    count: int | None = None  # reports of the same problem


class TrackingPublic(msgspec.Struct):
    service_request_id: str
    city_request_id: str | None
    work_order_number: str | None
    service_code: str
    service_name: str
    description: str | None
    address: str | None
    lat: float | None
    lon: float | None
    media_url: str | None
    requested_at: datetime
    state: str  # received | unlocated | acknowledged | scheduled | en_route | on_site | on_hold | fixed | not_fixed | cancelled | duplicate
    open: bool
    emergency: bool
    reports: int
    resolution: str | None
    closed_at: datetime | None
    expected: ExpectedPublic | None
    timeline: list[TimelineEntry]
    token: str | None  # echoed only to whoever looked the case up by its token
    can_subscribe: bool


class ReportCreated(msgspec.Struct):
    service_request_id: str
    token: str
    track_url: str
    outcome: str  # created | merged | unlocated
    emergency: bool
    reports: int
    notice: str
    expected: ExpectedPublic | None


def _expected_public(expected: Expectation | None, now: datetime) -> ExpectedPublic | None:
    if expected is None:
        return None
    return ExpectedPublic(
        basis=expected.basis, emergency=expected.emergency, sample_size=expected.sample_size,
        median_hours=expected.median_hours, p80_hours=expected.p80_hours, low_at=expected.low_at,
        high_at=expected.high_at, overdue=expected.overdue(now),
    )


# -- reporting --------------------------------------------------------------------------


def photo(session: Session, sha256: str) -> Blob:
    """A photo that a resident's report refers to (nothing else is served here)."""
    if not _SHA256.match(sha256):
        raise NotFound("no such photo", field="sha256")
    blob = session.get(Blob, sha256)
    if blob is None or blob.uploaded_by is not None:  # crews' photos are theirs to show
        raise NotFound("no such photo", field="sha256")
    return blob


def _check_city_wide_rate(session: Session, settings: Settings, now: datetime) -> None:
    limit = settings.resident.reports_per_minute_total
    recent = session.exec(
        select(func.count()).select_from(Case)
        .where(col(Case.requested_at) >= now - timedelta(minutes=1), col(Case.source) == WEB_SOURCE)
    ).one()
    if recent >= limit:
        raise TooManyAttempts("many reports are arriving right now; please try again in a minute", retry_after=60)


def submit_report(
    session: Session,
    *,
    fields: dict[str, str],
    photo_bytes: bytes | None,
    settings: Settings,
    language: str,
    now: datetime | None = None,
) -> ReportCreated:
    """A report from the resident page, through the same intake as Open311."""
    now = now or utcnow()
    _check_city_wide_rate(session, settings, now)
    allowed = {"service_code", "lat", "long", "address_string", "description", "email", "phone", "first_name",
               "last_name"}
    form: dict[str, str | list[str]] = {k: v for k, v in fields.items() if k in allowed or k.startswith("attribute[")}
    if photo_bytes:
        digest = store_report_photo(session, photo_bytes, field="photo")
        form["media_url"] = photo_url(settings.public_url, digest)
    submitted: Submitted = submit_request(session, form=form, settings=settings, source=WEB_SOURCE,
                                          channel="web", actor="resident page", now=now, language=language)
    return ReportCreated(
        service_request_id=str(submitted.case_id),
        token=submitted.token,
        track_url=f"/track/{submitted.token}",
        outcome=submitted.outcome,
        emergency=submitted.emergency,
        reports=submitted.reports,
        notice=submitted.notice,
        expected=_expected_public(submitted.expected, now),
    )


# -- tracking ---------------------------------------------------------------------------


def find_case(session: Session, ref: str) -> tuple[Case, bool]:
    """The case behind a tracking token, our number or the city's number; and whether the
    reference was the token."""
    ref = ref.strip()
    if not ref or len(ref) > 80:
        raise NotFound("no report with this number", field="ref")
    if _TOKEN.match(ref):
        found = session.exec(select(Case).where(col(Case.tracking_token) == ref)).first()
        if found is not None:
            return found, True
    if ref.isascii() and ref.isdigit() and len(ref) < 19:  # "²" is a digit int() refuses
        by_id = session.get(Case, int(ref))
        if by_id is not None:
            return by_id, False
    by_city = session.exec(
        select(Case).where(col(Case.external_id) == ref, col(Case.source).not_in(OUR_SOURCES)).order_by(col(Case.id))
    ).first()
    if by_city is not None:
        return by_city, False
    raise NotFound("no report with this number", field="ref")


_STATUS_KINDS = frozenset({"acknowledged", "on_hold", "scheduled", "waiting", "en_route", "on_site", "fixed",
                           "not_fixed", "cancelled", "duplicate", "reopened"})
_STATE_OF_STATUS = {
    Status.NEW: "received",
    Status.ASSIGNED: "scheduled",
    Status.EN_ROUTE: "en_route",
    Status.ON_SITE: "on_site",
    Status.ON_HOLD: "on_hold",
    Status.COMPLETED: "fixed",
    Status.CANNOT_COMPLETE: "not_fixed",
    Status.CANCELLED: "cancelled",
}


def _status_entry(source: Status | None, target: Status, at: datetime, reason: str | None) -> TimelineEntry | None:
    if source is not None and info(source).kind != Kind.OPEN and info(target).kind == Kind.OPEN:
        return TimelineEntry("reopened", at)
    if target == Status.COMPLETED:
        return TimelineEntry("fixed", at, reason)
    if target == Status.CANNOT_COMPLETE:
        return TimelineEntry("not_fixed", at, reason)
    if target == Status.CANCELLED:
        return TimelineEntry("duplicate" if reason and _DUPLICATE.search(reason) else "cancelled", at, reason)
    if target == Status.ON_HOLD:
        return TimelineEntry("acknowledged" if source == Status.NEW else "on_hold", at)
    if target == Status.ASSIGNED and source in (None, Status.NEW, Status.ON_HOLD):
        return TimelineEntry("scheduled", at)
    if target == Status.NEW and source is not None and source != Status.NEW:
        return TimelineEntry("waiting", at)
    if target == Status.EN_ROUTE:
        return TimelineEntry("en_route", at)
    if target == Status.ON_SITE:
        return TimelineEntry("on_site", at)
    return None


def _timeline(case: Case, order: WorkOrder | None, events: list[WorkOrderEvent]) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    if order is None:
        entries.append(TimelineEntry("received", case.requested_at))
        if case.location_state == "unlocated":
            entries.append(TimelineEntry("unlocated", case.requested_at))
        if case.closed_at is not None:
            entries.append(TimelineEntry("fixed", case.closed_at, case.resolution))
        return entries
    reports = 0
    others_after: list[datetime] = []
    seen_own = False
    for event in events:
        data = event.data or {}
        if event.kind in ("created", "merged"):
            reports += 1
            own = data.get("case_id") == case.id
            if own:
                seen_own = True
                entries.append(TimelineEntry("received", case.requested_at))
                if event.kind == "merged":  # joined an earlier report: the job already had `reports - 1`
                    entries.append(TimelineEntry("merged", case.requested_at, count=reports))
            elif not seen_own and event.kind == "created":
                entries.append(TimelineEntry("first_reported", event.occurred_at))
            elif seen_own:
                others_after.append(event.occurred_at)
            if event.kind == "created" and event.to_status and event.to_status != Status.NEW.value:
                entry = _status_entry(None, Status(event.to_status), event.occurred_at, None)
                if entry is not None:
                    entries.append(entry)
        elif event.kind == "alert":
            entries.append(TimelineEntry("urgent", event.occurred_at))
        elif event.kind == "status" and event.to_status:
            source = Status(event.from_status) if event.from_status else None
            reason = data.get("reason") or data.get("resolution")
            entry = _status_entry(source, Status(event.to_status), event.occurred_at, reason)
            if entry is not None:
                entries.append(entry)
        elif event.kind == "deleted":
            entries.append(TimelineEntry("cancelled", event.occurred_at, data.get("reason")))
    if not seen_own:  # a case whose own event predates the history we keep
        entries.insert(0, TimelineEntry("received", case.requested_at))
    if others_after:
        entries.append(TimelineEntry("also_reported", max(others_after), count=len(others_after)))
    entries.sort(key=lambda e: e.at)
    return entries


def tracking(session: Session, ref: str, *, now: datetime | None = None) -> TrackingPublic:
    """A case as its reporter sees it: plain state, timeline, resolution, expected range."""
    now = now or utcnow()
    case, by_token = find_case(session, ref)
    order = session.get(WorkOrder, case.work_order_id) if case.work_order_id is not None else None
    events: list[WorkOrderEvent] = []
    if order is not None:
        events = list(session.exec(
            select(WorkOrderEvent).where(col(WorkOrderEvent.work_order_id) == order.id)
            .where(col(WorkOrderEvent.kind).in_(["created", "merged", "alert", "status", "deleted"]))
            .order_by(col(WorkOrderEvent.id))
        ).all())
    if order is not None and order.deleted_at is not None:
        state, is_open = "cancelled", False
    elif order is not None:
        status = Status(order.status)
        state, is_open = _STATE_OF_STATUS[status], order.is_open
        if status == Status.CANCELLED and order.resolution and _DUPLICATE.search(order.resolution):
            state = "duplicate"
    elif case.closed_at is not None:
        state, is_open = "fixed", False
    else:
        state, is_open = ("unlocated" if case.location_state == "unlocated" else "received"), True
    timeline = _timeline(case, order, events)
    if state == "on_hold":  # held straight from the queue: the city is looking into it
        moves = [e.kind for e in timeline if e.kind in _STATUS_KINDS]
        if moves and moves[-1] == "acknowledged":
            state = "acknowledged"
    expected = close_times(session).expect_order(order) if order is not None and is_open else None
    located = case.location_state == "located"
    return TrackingPublic(
        service_request_id=str(case.id),
        city_request_id=case.external_id if case.source not in OUR_SOURCES else None,
        work_order_number=order.number if order is not None else None,
        service_code=case.service_code,
        service_name=case.service_name,
        description=case.description or None,
        address=case.address,
        lat=case.lat if located else None,
        lon=case.lon if located else None,
        media_url=case.media_url,
        requested_at=case.requested_at,
        state=state,
        open=is_open,
        emergency=bool(case.emergency or (order is not None and order.emergency)),
        reports=order.case_count if order is not None else 1,
        resolution=(order.resolution if order is not None else case.resolution) or None,
        closed_at=order.closed_at if order is not None else case.closed_at,
        expected=_expected_public(expected, now),
        timeline=timeline,
        token=case.tracking_token if by_token else None,
        can_subscribe=by_token,
    )


# -- notices ----------------------------------------------------------------------------


def _case_by_token(session: Session, token: str) -> Case:
    case, by_token = find_case(session, token)
    if not by_token:
        raise NotFound("notices need the link you got when you reported", field="token")
    return case


def subscribe(session: Session, *, token: str, subscription: dict[str, Any], language: str | None,
              settings: Settings) -> PushSubscription:
    """Notify this browser when the case behind `token` changes, in `language`."""
    case = _case_by_token(session, token)
    info_ = parse_subscription(subscription, allow_loopback_http=settings.push.allow_loopback_http)
    chosen = language if language in LANGUAGES else match_language(language)
    assert case.id is not None
    return bind_to_case(session, case_id=case.id, info=info_, language=chosen)


def unsubscribe(session: Session, *, token: str, endpoint: str) -> int:
    case = _case_by_token(session, token)
    assert case.id is not None
    return unbind_from_case(session, case_id=case.id, data={"endpoint": endpoint})

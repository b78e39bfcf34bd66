"""The resident pages' routes (public: no account):

    GET    /track/{ref}                                  the tracking page (pwa/track.html)
    GET    /api/resident/config                          map tiles, where the city is, push on/off
    POST   /api/resident/reports                         report a problem (multipart form, optional photo)
    GET    /api/resident/track/{ref}                     a case: state, timeline, expected range
    POST   /api/resident/track/{token}/subscription      notify this browser (PushSubscription JSON)
    DELETE /api/resident/track/{token}/subscription      {"endpoint"}: stop
    GET    /api/resident/photos/{sha256}                 a photo a resident sent with a report

Reports are limited per client address (`ResidentSettings.reports_per_minute_per_client`,
Litestar's rate limiter, per server process) and city-wide per minute (counted in the
database, across workers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, MultipartBody
from litestar.response import File, Redirect
from sqlalchemy import Engine, func
from sqlmodel import col, select

from server.db import read_session, write_session
from server.errors import ValidationFailed
from server.media import MAX_REPORT_PHOTO_BYTES
from server.models import WorkOrder
from server.notify.api import PushSubscriptionIn
from server.notify.catalog import LANGUAGES, match_language
from server.notify.vapid import load_identity
from server.residents import service
from server.residents.service import ReportCreated, TrackingPublic
from server.settings import Settings

__all__ = ["REPORT_RATE_LIMIT_STORE", "TRACK_PAGE", "build_resident_router"]

TRACK_PAGE = Path(__file__).resolve().parents[2] / "pwa" / "track.html"
MAX_REPORT_BYTES = 6 * 1024 * 1024  # a resized photo and the form fields, with room to spare
MAX_FIELD_CHARS = 4000
AcceptLanguage = Annotated[str | None, HeaderParameter(name="accept-language", required=False)]

# Counted in the database (server/app.py registers the store): every worker sees the same count.
REPORT_RATE_LIMIT_STORE = "resident_reports"


class MapConfig(msgspec.Struct):
    tiles_url: str
    tiles_attribution: str
    center: tuple[float, float] | None  # lat, lon
    bounds: tuple[tuple[float, float], tuple[float, float]] | None  # (south, west), (north, east)


class ResidentConfig(msgspec.Struct):
    map: MapConfig
    push: bool  # notices can be offered (the server has a VAPID key)
    languages: list[str]


class EndpointIn(msgspec.Struct):
    endpoint: str


class SubscriptionIn(msgspec.Struct):
    subscription: PushSubscriptionIn
    language: str | None = None


class Subscribed(msgspec.Struct):
    language: str


@get("/track/{ref:str}", operation_id="trackingPage", include_in_schema=False, sync_to_thread=False)
def tracking_page(ref: FromPath[str]) -> File:
    """The tracking page: one HTML file; its script reads the reference from the path."""
    return File(TRACK_PAGE, content_disposition_type="inline", media_type="text/html",
                headers={"Cache-Control": "no-cache"})


@get("/track", operation_id="trackingPageBare", include_in_schema=False, sync_to_thread=False)
def tracking_bare(ref: FromQuery[str | None] = None) -> Redirect:
    """The look-up form sent without JavaScript (?ref=), or no reference: the form again."""
    if ref and ref.strip():
        return Redirect(f"/track/{quote(ref.strip(), safe='')}")
    return Redirect("/#lookup")


@get("/config", operation_id="residentConfig", sync_to_thread=True)
def config(database: NamedDependency[Engine], settings: NamedDependency[Settings]) -> ResidentConfig:
    """What the resident pages need to start: the map, whether notices can be offered."""
    with read_session(database) as db:
        south, north, west, east = db.exec(
            select(func.min(WorkOrder.lat), func.max(WorkOrder.lat), func.min(WorkOrder.lon), func.max(WorkOrder.lon))
            .where(col(WorkOrder.deleted_at).is_(None))
        ).one()
        push = load_identity(db, override_pem=settings.push.vapid_private_key) is not None
    bounds = ((south, west), (north, east)) if south is not None else None
    center = ((south + north) / 2, (west + east) / 2) if south is not None else None
    return ResidentConfig(
        map=MapConfig(tiles_url=settings.resident.tiles_url, tiles_attribution=settings.resident.tiles_attribution,
                      center=center, bounds=bounds),
        push=push,
        languages=list(LANGUAGES),
    )


def _text_fields(data: dict[str, Any]) -> tuple[dict[str, str], bytes | None, str | None]:
    fields: dict[str, str] = {}
    photo: bytes | None = None
    language: str | None = None
    for name, value in data.items():
        if not name.strip():
            raise ValidationFailed("a form field has no name", field="(unnamed)")
        if isinstance(value, list):
            raise ValidationFailed(f"{name} is given more than once", field=name)
        if isinstance(value, UploadFile):
            if name != "photo":
                raise ValidationFailed(f"unexpected file {name}", field=name)
            photo = value.file.read(MAX_REPORT_PHOTO_BYTES + 1)
            continue
        text = str(value)
        if len(text) > MAX_FIELD_CHARS:
            raise ValidationFailed(f"{name} is longer than {MAX_FIELD_CHARS} characters", field=name)
        if name == "language":
            language = text
        else:
            fields[name] = text
    return fields, photo, language


def _report_handler(settings: Settings) -> Any:
    limiter = RateLimitConfig(rate_limit=("minute", settings.resident.reports_per_minute_per_client),
                              store=REPORT_RATE_LIMIT_STORE)

    @post("/reports", operation_id="residentReport", sync_to_thread=True, status_code=201,
          request_max_body_size=MAX_REPORT_BYTES, middleware=[limiter.middleware])
    def report(
        data: MultipartBody[dict[str, Any]],
        database: NamedDependency[Engine],
        settings: NamedDependency[Settings],
        accept_language: AcceptLanguage = None,
    ) -> ReportCreated:
        """Report a problem: service_code, lat+long or address_string, description, an optional photo."""
        fields, photo, language = _text_fields(data)
        chosen = language if language in LANGUAGES else match_language(language or accept_language)
        with write_session(database) as db:
            return service.submit_report(db, fields=fields, photo_bytes=photo, settings=settings, language=chosen)

    return report


@get("/track/{ref:str}", operation_id="residentTrack", sync_to_thread=True)
def track(ref: FromPath[str], database: NamedDependency[Engine]) -> TrackingPublic:
    """A report by our number, its tracking token or the city's request number."""
    with read_session(database) as db:
        return service.tracking(db, ref)


@post("/track/{token:str}/subscription", operation_id="residentSubscribe", sync_to_thread=True, status_code=201)
def subscribe(
    token: FromPath[str], data: JSONBody[SubscriptionIn], database: NamedDependency[Engine],
    settings: NamedDependency[Settings], accept_language: AcceptLanguage = None,
) -> Subscribed:
    """Notify this browser (a PushSubscription) when the report behind the token changes."""
    with write_session(database) as db:
        bound = service.subscribe(db, token=token, subscription=data.subscription.as_dict(),
                                  language=data.language or match_language(accept_language), settings=settings)
    return Subscribed(language=bound.language)


@delete("/track/{token:str}/subscription", operation_id="residentUnsubscribe", sync_to_thread=True)
def unsubscribe(token: FromPath[str], data: JSONBody[EndpointIn], database: NamedDependency[Engine]) -> None:
    """Stop notifying this browser about this report."""
    with write_session(database) as db:
        service.unsubscribe(db, token=token, endpoint=data.endpoint)


@get("/photos/{sha256:str}", operation_id="residentPhoto", sync_to_thread=True)
def photo(sha256: FromPath[str], database: NamedDependency[Engine]) -> Response[bytes]:
    """A photo sent with a resident's report."""
    with read_session(database) as db:
        blob = service.photo(db, sha256)
    return Response(blob.data, media_type=blob.content_type,
                    headers={"Cache-Control": "public, max-age=31536000, immutable"})


def build_resident_router(settings: Settings) -> list[Router]:
    """The /api/resident routes (with this app's rate limit) and the /track page."""
    api = Router(path="/api/resident",
                 route_handlers=[config, _report_handler(settings), track, subscribe, unsubscribe, photo],
                 tags=["residents"])
    pages = Router(path="/", route_handlers=[tracking_page, tracking_bare], include_in_schema=False)
    return [api, pages]

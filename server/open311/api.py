"""Open311 GeoReport v2 over HTTP, under /open311/v2: thin handlers over `service`.

The response format is the extension of the last path segment (`services.xml`,
`requests/12.json`); any other extension, a missing one, or an unknown path is a 404.
Every error on these routes, Litestar's own included (validation, 404, 405, 413), is
answered in the spec's error format by the router's exception handlers, in the format the
path asked for (XML, the spec's required format, when it asked for none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request, Response, Router, get, post, route
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter, URLEncodedBody
from sqlalchemy import Engine

from server.db import read_session, write_session
from server.errors import DomainError, NotFound, ValidationFailed, retry_after_header
from server.media import MAX_REPORT_PHOTO_BYTES
from server.notify.catalog import match_language
from server.open311 import service
from server.open311.http import CorsMiddleware, HeadAsGet, options_response
from server.open311.render import Format, render, render_errors
from server.settings import Settings

__all__ = ["open311_router"]

log = logging.getLogger("fieldwork.open311")

MAX_POST_BYTES = 64 * 1024  # a form-encoded POST
MAX_MEDIA_POST_BYTES = 6 * 1024 * 1024  # a multipart POST: a photo and the fields, with room to spare
_FORM_TYPES = ("application/x-www-form-urlencoded",)
_TOO_LARGE = (f"media: the photo is too large: a request with a photo is at most {MAX_MEDIA_POST_BYTES // (1024 * 1024)}"
              f" MB, the photo itself at most {MAX_REPORT_PHOTO_BYTES // (1024 * 1024)} MB")
_URLENCODED, _MULTIPART = "application/x-www-form-urlencoded", "multipart/form-data"


@dataclass(frozen=True, slots=True)
class PostedRequest:
    """A POST requests body, form-encoded or multipart: its fields and its `media` file."""

    form: dict[str, str | list[str]]
    media: bytes | None


@dataclass
class _PostRequestsOperation(Operation):
    """The OpenAPI operation of POST requests: its body is read by `provide_posted_request`
    (either encoding), so the schema says what it takes."""

    def __post_init__(self) -> None:
        fields = Schema(type=OpenAPIType.OBJECT, additional_properties=Schema(type=OpenAPIType.STRING))
        with_media = Schema(type=OpenAPIType.OBJECT, additional_properties=Schema(type=OpenAPIType.STRING),
                            properties={"media": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)})
        self.request_body = RequestBody(required=True, content={
            _URLENCODED: OpenAPIMediaType(schema=fields),
            _MULTIPART: OpenAPIMediaType(schema=with_media),
        })


async def provide_posted_request(request: Request[Any, Any, Any]) -> PostedRequest:
    """Read POST requests' body: `application/x-www-form-urlencoded` (at most 64 KB), or
    `multipart/form-data` with an optional `media` file part (what real clients send)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == _URLENCODED:
        declared = request.headers.get("content-length", "")
        if (declared.isdigit() and int(declared) > MAX_POST_BYTES) or len(await request.body()) > MAX_POST_BYTES:
            raise HTTPException(status_code=413, detail=f"a form-encoded request is at most {MAX_POST_BYTES} bytes; "
                                "send a photo as a multipart media part")
    elif content_type != _MULTIPART:
        raise ValidationFailed("Content-Type must be application/x-www-form-urlencoded or multipart/form-data",
                               field="content-type")
    form: dict[str, str | list[str]] = {}
    media: bytes | None = None
    try:
        parts = (await request.form()).multi_items()
    except ClientException as refused:  # a broken multipart body: nothing in it can be read
        if refused.status_code == 413:
            # Only the photo makes a multipart request this large: say so, naming it.
            raise HTTPException(status_code=413, detail=_TOO_LARGE) from None
        if refused.status_code != 400:  # anything else: said as it is
            raise
        raise ValidationFailed("the body is not valid multipart/form-data, so no field (api_key, service_code, "
                               "...) could be read from it", field="body") from None
    for name, value in parts:
        if isinstance(value, UploadFile):
            if name != "media":
                raise ValidationFailed(f"unexpected file part {name!r}: the photo goes in 'media'", field=name)
            if media is not None:
                raise ValidationFailed("media is given more than once", field="media")
            media = await value.read(MAX_REPORT_PHOTO_BYTES + 1)
            continue
        text = value if isinstance(value, str) else str(value)
        previous = form.get(name)
        if previous is None:
            form[name] = text
        else:
            form[name] = [*previous, text] if isinstance(previous, list) else [previous, text]
    return PostedRequest(form=form, media=media)


def path_format(path: str) -> Format:
    """The format named by the last path segment's extension (404 for any other)."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    _, dot, extension = last.rpartition(".")
    try:
        if dot:
            return Format(extension.lower())
    except ValueError:
        pass
    raise NotFound("unsupported format: use .json or .xml", field="format")


def strip_format(ref: str) -> str:
    """`"12.json"` → `"12"`: the path parameter without its format extension."""
    return ref.rpartition(".")[0]


def provide_format(request: Request[Any, Any, Any]) -> Format:
    return path_format(request.scope["path"])


def _both(path: str) -> list[str]:
    return [f"{path}.{fmt}" for fmt in Format]


def both_formats(
    decorator: Callable[..., HTTPRouteHandler], path: str, *, operation_id: str, **options: Any
) -> Callable[[Callable[..., Any]], tuple[HTTPRouteHandler, ...]]:
    """One route handler per format (`/services.json`, `/services.xml`) over one function.

    Separate handlers rather than one with two paths: Litestar 2.25 calls a multi-path
    handler's `sync_to_thread` wrapper without awaiting it.
    """

    def decorate(fn: Callable[..., Any]) -> tuple[HTTPRouteHandler, ...]:
        return tuple(
            decorator(f"{path}.{fmt}", operation_id=f"{operation_id}_{fmt}", **options)(fn) for fmt in Format
        )

    return decorate


JurisdictionId = Annotated[str | None, QueryParameter(description="optional: this endpoint serves one jurisdiction")]
# The language of `service_notice` (English unless the client asks for one of ours).
AcceptLanguage = Annotated[str | None, HeaderParameter(name="accept-language", required=False)]
# "can be declared multiple times, comma delimited" (spec): status=open&status=closed
Repeatable = Annotated[list[str] | None, QueryParameter(description="comma separated, or repeated")]


def _joined(values: list[str] | None) -> str | None:
    return ",".join(values) if values else None


# -- handlers ---------------------------------------------------------------------------


@both_formats(get, "/discovery", operation_id="open311Discovery", sync_to_thread=False)
def get_discovery(fmt: NamedDependency[Format], settings: NamedDependency[Settings]) -> Response[bytes]:
    """Service discovery: where this GeoReport v2 endpoint lives and which formats it speaks."""
    return render(fmt, service.discovery(settings=settings), root="discovery")


@both_formats(get, "/services", operation_id="open311ListServices", sync_to_thread=True)
def get_services(
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """The service types we accept (active ones), with their codes."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    with read_session(database) as db:
        services = service.list_services(db)
    return render(fmt, services, root="services", item="service")


@get("/services/{service_ref:str}", operation_id="open311GetServiceDefinition", sync_to_thread=True)
def get_service_definition(
    service_ref: FromPath[str],
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """A service type's definition: the attributes a request of that type carries."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    with read_session(database) as db:
        definition = service.service_definition(db, service_code=strip_format(service_ref))
    return render(fmt, definition, root="service_definition")


@both_formats(
    post,
    "/requests",
    operation_id="open311CreateRequest",
    status_code=200,
    request_max_body_size=MAX_MEDIA_POST_BYTES,
    dependencies={"posted": Provide(provide_posted_request)},
    operation_class=_PostRequestsOperation,
    sync_to_thread=True,
)
def create_request(
    posted: NamedDependency[PostedRequest],
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    api_key: FromQuery[str | None] = None,
    jurisdiction_id: JurisdictionId = None,
    accept_language: AcceptLanguage = None,
) -> Response[bytes]:
    """Submit a service request: form-encoded, or multipart/form-data with a `media` photo
    (needs an api_key, in the form or the query)."""
    with write_session(database) as db:
        created = service.create_request(
            db, form=posted.form, api_key=api_key, jurisdiction_id=jurisdiction_id, settings=settings,
            language=match_language(accept_language), media=posted.media,
        )
    return render(fmt, [created], root="service_requests", item="request")


@get("/tokens/{token_ref:str}", operation_id="open311GetToken", sync_to_thread=True)
def get_token(
    token_ref: FromPath[str],
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """The service_request_id behind a token returned by POST requests."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    with read_session(database) as db:
        found = service.lookup_token(db, token=strip_format(token_ref))
    return render(fmt, [found], root="service_requests", item="request")


@both_formats(get, "/requests", operation_id="open311ListRequests", sync_to_thread=True)
def get_requests(
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
    service_request_id: Repeatable = None,
    service_code: Repeatable = None,
    start_date: FromQuery[str | None] = None,
    end_date: FromQuery[str | None] = None,
    status: Repeatable = None,
    updated_after: FromQuery[str | None] = None,
    updated_before: FromQuery[str | None] = None,
    page: FromQuery[str | None] = None,
    page_size: FromQuery[str | None] = None,
    accept_language: AcceptLanguage = None,
) -> Response[bytes]:
    """Service requests, newest first; spec filters plus page/page_size and updated_after/before."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    query = service.parse_request_query(
        service_request_id=_joined(service_request_id),
        service_code=_joined(service_code),
        start_date=start_date,
        end_date=end_date,
        status=_joined(status),
        updated_after=updated_after,
        updated_before=updated_before,
        page=page,
        page_size=page_size,
        zone=settings.intake.zone,
    )
    with read_session(database) as db:
        found = service.find_requests(db, query=query, zone=settings.intake.zone,
                                      language=match_language(accept_language))
    return render(fmt, found, root="service_requests", item="request")


@get("/requests/{request_ref:str}", operation_id="open311GetRequest", sync_to_thread=True)
def get_request(
    request_ref: FromPath[str],
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
    accept_language: AcceptLanguage = None,
) -> Response[bytes]:
    """One service request, as an array of one."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    with read_session(database) as db:
        found = service.get_request(db, service_request_id=strip_format(request_ref), zone=settings.intake.zone,
                                    language=match_language(accept_language))
    return render(fmt, found, root="service_requests", item="request")


@both_formats(get, "/servicerequestupdates", operation_id="open311RequestUpdates", sync_to_thread=True)
def get_request_updates(
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
    api_key: FromQuery[str | None] = None,
    start_date: FromQuery[str | None] = None,
    end_date: FromQuery[str | None] = None,
    page: FromQuery[str | None] = None,
    page_size: FromQuery[str | None] = None,
) -> Response[bytes]:
    """mySociety extension: status updates of requests, oldest first (api_key optional)."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    if api_key:
        service.check_api_key(api_key, keys=settings.auth.open311_api_keys, action="servicerequestupdates")
    query = service.parse_update_query(
        start_date=start_date, end_date=end_date, page=page, page_size=page_size, zone=settings.intake.zone
    )
    with read_session(database) as db:
        updates = service.request_updates(db, query=query, zone=settings.intake.zone)
    return render(fmt, updates, root="service_request_updates", item="request_update")


@both_formats(
    post,
    "/servicerequestupdates",
    operation_id="open311PostRequestUpdate",
    status_code=200,
    request_max_body_size=MAX_POST_BYTES,
    sync_to_thread=True,
)
def post_request_update(
    data: URLEncodedBody[dict[str, Any]],
    fmt: NamedDependency[Format],
    database: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    content_type: Annotated[str | None, HeaderParameter(name="content-type")] = None,
    api_key: FromQuery[str | None] = None,
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """mySociety extension: a back office posts a status update of a request (api_key)."""
    if (content_type or "").split(";")[0].strip().lower() not in _FORM_TYPES:
        raise ValidationFailed("Content-Type must be application/x-www-form-urlencoded", field="content-type")
    with write_session(database) as db:
        accepted = service.post_request_update(
            db, form=data, api_key=api_key, jurisdiction_id=jurisdiction_id, settings=settings
        )
    return render(fmt, [accepted], root="service_request_updates", item="request_update")


_GET_ONLY = [
    *_both("/discovery"),
    *_both("/services"),
    "/services/{service_ref:str}",
    "/tokens/{token_ref:str}",
    "/requests/{request_ref:str}",
]


@route(_GET_ONLY, http_method=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False, sync_to_thread=False)
def read_only(request: Request[Any, Any, Any]) -> None:
    """Writes to a read-only resource."""
    raise MethodNotAllowedException(f"{request.method} is not allowed here; use GET")


@route([*_both("/requests"), *_both("/servicerequestupdates")], http_method=["PUT", "PATCH", "DELETE"],
       include_in_schema=False, sync_to_thread=False)
def requests_other(request: Request[Any, Any, Any]) -> None:
    """Anything but GET and POST on the requests collection."""
    raise MethodNotAllowedException(f"{request.method} is not allowed here; use GET or POST")


_GET_AND_POST = [*_both("/requests"), *_both("/servicerequestupdates")]


_ANY_OTHER = ["/", "/{rest:path}", "/services/{a:str}/{rest:path}", "/requests/{a:str}/{rest:path}",
              "/tokens/{a:str}/{rest:path}"]


@route([*_GET_ONLY, *_GET_AND_POST, *_ANY_OTHER], http_method=["HEAD"], middleware=[HeadAsGet], include_in_schema=False,
       sync_to_thread=False)
def head(request: Request[Any, Any, Any]) -> None:
    """HEAD: served as a GET by `HeadAsGet` (never reached)."""
    raise AssertionError("HEAD is dispatched as GET by its middleware")


@route(_GET_ONLY, http_method=["OPTIONS"], include_in_schema=False, sync_to_thread=False)
def options_get_only(request: Request[Any, Any, Any]) -> Response[None]:
    """OPTIONS of a read-only resource (and CORS preflight)."""
    return options_response(request, ["GET"])


@route(_GET_AND_POST, http_method=["OPTIONS"], include_in_schema=False, sync_to_thread=False)
def options_get_and_post(request: Request[Any, Any, Any]) -> Response[None]:
    """OPTIONS of a collection one can also POST to (and CORS preflight)."""
    return options_response(request, ["GET", "POST"])


@route(["/discovery", "/services", "/requests", "/servicerequestupdates", "/tokens"],
       http_method=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False, sync_to_thread=False)
def missing_format(request: Request[Any, Any, Any]) -> None:
    """A resource named without its format: the spec's error, saying how to ask."""
    path = request.scope["path"].rstrip("/")
    raise NotFound(f"no format given: ask for {path}.json or {path}.xml", field="format")


@route(
    _ANY_OTHER,
    http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
    sync_to_thread=False,
)
def unknown(request: Request[Any, Any, Any]) -> None:
    """Any other path under the endpoint."""
    raise NotFound(f"no such Open311 resource: {request.scope['path']}")


# -- errors in the spec's format --------------------------------------------------------


def _error_format(request: Request[Any, Any, Any]) -> Format:
    try:
        return path_format(request.scope["path"])
    except NotFound:
        return Format.JSON if "json" in request.headers.get("accept", "") else Format.XML


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    problems: list[str] = getattr(exc, "problems", None) or [exc.message]
    response = render_errors(_error_format(request), exc.status_code, problems)
    response.headers.update(retry_after_header(exc))
    return response


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if isinstance(exc, ValidationException):
        status, problems = 400, []
        for item in exc.extra if isinstance(exc.extra, list) else []:
            if isinstance(item, dict) and item.get("key"):
                problems.append(f"{item['key']}: {item.get('message', 'invalid')}")
        problems = problems or [str(exc.detail)]
    elif exc.status_code >= 500:
        status, problems = 400, ["General service error: the request could not be processed"]
    else:
        status, problems = exc.status_code, [str(exc.detail)]
    response = render_errors(_error_format(request), status, problems)
    if isinstance(exc, MethodNotAllowedException | NotFoundException) and exc.headers:
        response.headers.update(exc.headers)
    return response


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # The spec answers any failure during processing with 400 "General service error".
    log.error("open311 %s %s failed", request.method, request.scope["path"], exc_info=exc)
    return render_errors(
        _error_format(request), 400, ["General service error: the request could not be processed"]
    )


open311_router = Router(
    path=service.BASE_PATH,
    route_handlers=[
        # OPTIONS first: a route made from another handler gets Litestar's own OPTIONS
        # handler, which names only the methods of the handlers registered before it.
        options_get_only,
        options_get_and_post,
        *get_discovery,
        *get_services,
        get_service_definition,
        *create_request,
        get_token,
        *get_requests,
        get_request,
        *get_request_updates,
        *post_request_update,
        read_only,
        requests_other,
        head,
        missing_format,
        unknown,
    ],
    middleware=[CorsMiddleware],
    dependencies={"fmt": Provide(provide_format, sync_to_thread=False)},
    exception_handlers={
        DomainError: _domain_error,
        HTTPException: _http_error,
        ValidationException: _http_error,
        Exception: _unexpected,
    },
    tags=["Open311 GeoReport v2"],
)

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
from typing import Annotated, Any

from litestar import Request, Response, Router, get, post, route
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter, URLEncodedBody
from sqlmodel import Session

from server.errors import DomainError, NotFound, ValidationFailed
from server.open311 import service
from server.open311.render import Format, render, render_errors
from server.settings import Settings

__all__ = ["open311_router"]

log = logging.getLogger("fieldwork.open311")

MAX_POST_BYTES = 64 * 1024
_FORM_TYPES = ("application/x-www-form-urlencoded",)


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
    db: NamedDependency[Session],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """The service types we accept (active ones), with their codes."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    return render(fmt, service.list_services(db), root="services", item="service")


@get("/services/{service_ref:str}", operation_id="open311GetServiceDefinition", sync_to_thread=True)
def get_service_definition(
    service_ref: FromPath[str],
    fmt: NamedDependency[Format],
    db: NamedDependency[Session],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """A service type's definition: the attributes a request of that type carries."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    definition = service.service_definition(db, service_code=strip_format(service_ref))
    return render(fmt, definition, root="service_definition")


@both_formats(
    post,
    "/requests",
    operation_id="open311CreateRequest",
    status_code=200,
    request_max_body_size=MAX_POST_BYTES,
    sync_to_thread=True,
)
def create_request(
    data: URLEncodedBody[dict[str, Any]],
    fmt: NamedDependency[Format],
    db_write: NamedDependency[Session],
    settings: NamedDependency[Settings],
    content_type: Annotated[str | None, HeaderParameter(name="content-type")] = None,
    api_key: FromQuery[str | None] = None,
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """Submit a service request (form-encoded; needs an api_key, in the form or the query)."""
    if (content_type or "").split(";")[0].strip().lower() not in _FORM_TYPES:
        raise ValidationFailed("Content-Type must be application/x-www-form-urlencoded", field="content-type")
    created = service.create_request(
        db_write, form=data, api_key=api_key, jurisdiction_id=jurisdiction_id, settings=settings
    )
    return render(fmt, [created], root="service_requests", item="request")


@get("/tokens/{token_ref:str}", operation_id="open311GetToken", sync_to_thread=True)
def get_token(
    token_ref: FromPath[str],
    fmt: NamedDependency[Format],
    db: NamedDependency[Session],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """The service_request_id behind a token returned by POST requests."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    found = service.lookup_token(db, token=strip_format(token_ref))
    return render(fmt, [found], root="service_requests", item="request")


@both_formats(get, "/requests", operation_id="open311ListRequests", sync_to_thread=True)
def get_requests(
    fmt: NamedDependency[Format],
    db: NamedDependency[Session],
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
    found = service.find_requests(db, query=query, zone=settings.intake.zone)
    return render(fmt, found, root="service_requests", item="request")


@get("/requests/{request_ref:str}", operation_id="open311GetRequest", sync_to_thread=True)
def get_request(
    request_ref: FromPath[str],
    fmt: NamedDependency[Format],
    db: NamedDependency[Session],
    settings: NamedDependency[Settings],
    jurisdiction_id: JurisdictionId = None,
) -> Response[bytes]:
    """One service request, as an array of one."""
    service.check_jurisdiction(jurisdiction_id, settings=settings)
    found = service.get_request(db, service_request_id=strip_format(request_ref), zone=settings.intake.zone)
    return render(fmt, found, root="service_requests", item="request")


@both_formats(get, "/servicerequestupdates", operation_id="open311RequestUpdates", sync_to_thread=True)
def get_request_updates(
    fmt: NamedDependency[Format],
    db: NamedDependency[Session],
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
    updates = service.request_updates(db, query=query, zone=settings.intake.zone)
    return render(fmt, updates, root="service_request_updates", item="request_update")


_GET_ONLY = [
    *_both("/discovery"),
    *_both("/services"),
    "/services/{service_ref:str}",
    "/tokens/{token_ref:str}",
    "/requests/{request_ref:str}",
    *_both("/servicerequestupdates"),
]


@route(_GET_ONLY, http_method=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False, sync_to_thread=False)
def read_only(request: Request[Any, Any, Any]) -> None:
    """Writes to a read-only resource."""
    raise MethodNotAllowedException(f"{request.method} is not allowed here; use GET")


@route(_both("/requests"), http_method=["PUT", "PATCH", "DELETE"], include_in_schema=False, sync_to_thread=False)
def requests_other(request: Request[Any, Any, Any]) -> None:
    """Anything but GET and POST on the requests collection."""
    raise MethodNotAllowedException(f"{request.method} is not allowed here; use GET or POST")


@route(
    ["/", "/{rest:path}", "/services/{a:str}/{rest:path}", "/requests/{a:str}/{rest:path}",
     "/tokens/{a:str}/{rest:path}"],
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
    return render_errors(_error_format(request), exc.status_code, problems)


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
        *get_discovery,
        *get_services,
        get_service_definition,
        *create_request,
        get_token,
        *get_requests,
        get_request,
        *get_request_updates,
        read_only,
        requests_other,
        unknown,
    ],
    dependencies={"fmt": Provide(provide_format, sync_to_thread=False)},
    exception_handlers={  # type: ignore[dict-item]
        DomainError: _domain_error,
        HTTPException: _http_error,
        ValidationException: _http_error,
        Exception: _unexpected,
    },
    tags=["Open311 GeoReport v2"],
)

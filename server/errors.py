"""Domain errors, and the one place that maps them to HTTP.

    DomainError                 a request the domain refuses (400 unless a subclass says)
    ├── ValidationFailed        bad input; names the field (400)
    ├── NotFound                no such thing, or not yours to know about (404)
    ├── Forbidden               signed in, but not allowed (403)
    ├── NotAuthenticated        no or bad credentials (401)
    ├── Conflict                the state changed under you (409)
    ├── TooManyAttempts         slow down (429, Retry-After)
    └── Overloaded              the server is busy; come back soon (503, Retry-After)

Service functions raise these; handlers never build error responses themselves. The sync
engine's own errors (`sync.SyncError`: 403, 409, 413, 422) are mapped here too. Open311
routes render the same errors in the GeoReport v2 error format (see server.open311).
"""

from __future__ import annotations

import re

from litestar import Request, Response
from litestar.exceptions import TooManyRequestsException, ValidationException

from sync import SyncError

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "NotAuthenticated",
    "NotFound",
    "Overloaded",
    "TooManyAttempts",
    "ValidationFailed",
    "domain_exception_handlers",
    "retry_after_header",
]


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationFailed(DomainError):
    status_code = 400


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class NotAuthenticated(DomainError):
    status_code = 401


class Conflict(DomainError):
    status_code = 409


class TooManyAttempts(DomainError):
    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(DomainError):
    status_code = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_header(exc: Exception) -> dict[str, str]:
    """`Retry-After` for the errors that carry one (429, 503), else nothing."""
    retry_after = getattr(exc, "retry_after", None)
    return {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else {}


def _domain_error(_: Request, exc: DomainError) -> Response:
    body: dict[str, object] = {"status_code": exc.status_code, "detail": exc.message}
    if exc.field:
        body["field"] = exc.field
    body.update(getattr(exc, "extra", None) or {})  # e.g. a 409's current version
    return Response(body, status_code=exc.status_code, headers=retry_after_header(exc))


# Litestar's message for a required parameter that is absent (it has no `extra`).
_MISSING_PARAMETER = re.compile(r"^Missing required \w+ parameter '([^']+)'")


def _validation_error(_: Request, exc: ValidationException) -> Response:
    # Litestar's own validation errors name the field in `extra`; keep that shape, and name
    # the field of a missing required parameter too.
    body: dict[str, object] = {"status_code": 400, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
        items = exc.extra if isinstance(exc.extra, list) else [exc.extra]
        if not any(isinstance(item, dict) and item.get("key") for item in items):
            body["field"] = "body"  # the body as a whole is wrong (not an object, say)
    elif missing := _MISSING_PARAMETER.match(exc.detail):
        body["field"] = missing.group(1)
    return Response(body, status_code=400)


def _sync_error(_: Request, exc: SyncError) -> Response:
    body: dict[str, object] = {"status_code": exc.status_code, "detail": exc.message}
    if exc.field:
        body["field"] = exc.field
    return Response(body, status_code=exc.status_code)


def _rate_limited(_: Request, exc: TooManyRequestsException) -> Response:
    # Litestar's rate limiter says when in RateLimit-Reset; say it as Retry-After too, like
    # every other 429 and 503 here.
    headers = dict(exc.headers or {})
    reset = next((v for k, v in headers.items() if k.lower() == "ratelimit-reset"), None)
    if reset is not None and reset.isdigit():
        headers["Retry-After"] = str(max(1, int(reset)))
    body = {"status_code": 429, "detail": "too many requests from this address; slow down"}
    return Response(body, status_code=429, headers=headers)


domain_exception_handlers = {
    DomainError: _domain_error,
    SyncError: _sync_error,
    ValidationException: _validation_error,
    TooManyRequestsException: _rate_limited,
}

"""Domain errors, and the one place that maps them to HTTP.

    DomainError                 a request the domain refuses (400 unless a subclass says)
    ├── ValidationFailed        bad input; names the field (400)
    ├── NotFound                no such thing, or not yours to know about (404)
    ├── Forbidden               signed in, but not allowed (403)
    ├── NotAuthenticated        no or bad credentials (401)
    ├── Conflict                the state changed under you (409)
    └── TooManyAttempts         slow down (429)

Service functions raise these; handlers never build error responses themselves. The sync
engine's own errors (`sync.SyncError`: 403, 409, 413, 422) are mapped here too. Open311
routes render the same errors in the GeoReport v2 error format (see server.open311).
"""

from __future__ import annotations

from litestar import Request, Response
from litestar.exceptions import ValidationException

from sync import SyncError

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "NotAuthenticated",
    "NotFound",
    "TooManyAttempts",
    "ValidationFailed",
    "domain_exception_handlers",
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


def _domain_error(_: Request, exc: DomainError) -> Response:
    body: dict[str, object] = {"status_code": exc.status_code, "detail": exc.message}
    if exc.field:
        body["field"] = exc.field
    headers = {}
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    return Response(body, status_code=exc.status_code, headers=headers)


def _validation_error(_: Request, exc: ValidationException) -> Response:
    # Litestar's own validation errors already name the field in `extra`; keep that shape.
    body: dict[str, object] = {"status_code": 400, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=400)


def _sync_error(_: Request, exc: SyncError) -> Response:
    body: dict[str, object] = {"status_code": exc.status_code, "detail": exc.message}
    if exc.field:
        body["field"] = exc.field
    return Response(body, status_code=exc.status_code)


domain_exception_handlers = {
    DomainError: _domain_error,
    SyncError: _sync_error,
    ValidationException: _validation_error,
}

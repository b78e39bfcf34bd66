"""Errors the engine raises for a request it refuses as a whole.

    SyncError                   base; `status_code`, `field` (the offending field or None)
    ├── InvalidRequest          422  a malformed envelope; names the field
    ├── PayloadTooLarge         413  more mutations in one push than the engine accepts
    ├── ClientForbidden         403  the client_id is bound to another user
    ├── UnsupportedSchemaVersion 409 says the supported range (`supported`)
    └── UnknownCursor           422  a cursor this server did not issue

A mutation that cannot apply is not an error of the request: it is answered with status
"rejected" and kept for review (see `Rejected` in sync.registry).
"""

from __future__ import annotations

__all__ = [
    "ClientForbidden",
    "InvalidRequest",
    "PayloadTooLarge",
    "SyncError",
    "UnknownCursor",
    "UnsupportedSchemaVersion",
]


class SyncError(Exception):
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(SyncError):
    status_code = 422


class PayloadTooLarge(SyncError):
    status_code = 413


class ClientForbidden(SyncError):
    status_code = 403


class UnsupportedSchemaVersion(SyncError):
    status_code = 409

    def __init__(self, version: int, supported: tuple[int, int]) -> None:
        low, high = supported
        super().__init__(f"schema_version {version} is not supported (supported: {low}..{high})",
                         field="schema_version")
        self.supported = supported


class UnknownCursor(SyncError):
    status_code = 422

    def __init__(self, message: str = "unknown cursor: pull again without one") -> None:
        super().__init__(message, field="cursor")

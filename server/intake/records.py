"""The shape every intake channel turns its input into before the pipeline sees it.

Parsers of city exports (`server.intake.formats`), the Open311 POST handler and the JSON API
all produce `IncomingCase` values; anything they cannot read becomes a `RejectedRow` with a
reason that names the field. The pipeline never sees raw text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["BAD_CLOSE_TIME", "Contact", "IncomingCase", "RejectedRow", "FormatError"]

# A case whose source closes it before it was opened (a typo in the year) is kept, closed at
# its creation time, with the source's text under this attribute key.
BAD_CLOSE_TIME = "import:close_time_before_creation"


class FormatError(Exception):
    """The file as a whole cannot be read (wrong format, truncated, corrupt)."""


@dataclass(slots=True)
class Contact:
    """A reporter's personal data: stored apart from the case, never logged or published."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    device_id: str | None = None

    def is_empty(self) -> bool:
        return not any((self.first_name, self.last_name, self.email, self.phone, self.device_id))


@dataclass(slots=True)
class IncomingCase:
    """One 311 request as received, normalised; times are timezone-aware UTC."""

    source: str  # "la" | "chicago" | "nyc" | "open311" | "api" | "open311:<host>"
    external_id: str
    service_code: str  # stable slug, e.g. "street-light-all-out"
    service_name: str  # as the city names it, e.g. "Street Lights - All/Out"
    requested_at: datetime
    lat: float | None = None
    lon: float | None = None
    description: str = ""
    address: str | None = None
    agency: str | None = None
    status_received: str | None = None  # the source's own status text
    closed_at: datetime | None = None  # set only when the source marks the case closed
    resolution: str | None = None
    reported_district: str | None = None  # the city's own district label, for comparison
    media_url: str | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)
    contact: Contact | None = None
    subtype: str | None = None  # the source's finer kind (NYC's descriptor): describes a type first seen
    line: int | None = None  # 1-based record number in the source file

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None


@dataclass(slots=True)
class RejectedRow:
    """A record that could not be taken, kept whole with the reason (for the rejects file)."""

    line: int
    reason: str
    raw: dict[str, str]

"""Photos that come with a report (Open311 `media`, the resident page's photo): checked and
cleaned like a crew's photos (server/crewsync/photos.py: decoded completely by Pillow,
bounded, re-encoded without EXIF/XMP, so a phone's GPS position and serial number are not
kept), stored once by the sha256 of the cleaned bytes, and served to anyone at
`/api/resident/photos/{sha256}` (a report's photo is public, as its `media_url`).
"""

from __future__ import annotations

import hashlib

from sqlmodel import Session

from server.crewsync.photos import MAX_PHOTO_BYTES, PHOTO_FORMATS, clean_photo
from server.errors import ValidationFailed
from server.models import Blob

__all__ = ["MAX_REPORT_PHOTO_BYTES", "photo_url", "sniff_image", "store_report_photo"]

MAX_REPORT_PHOTO_BYTES = 5 * 1024 * 1024
assert MAX_REPORT_PHOTO_BYTES <= MAX_PHOTO_BYTES


def sniff_image(data: bytes) -> str | None:
    """The image type the bytes begin with (JPEG, PNG, WebP), whatever the sender said."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def store_report_photo(session: Session, data: bytes, *, field: str) -> str:
    """Clean and keep a report's photo; its sha256. ValidationFailed naming `field`."""
    if not data:
        raise ValidationFailed(f"{field} is empty", field=field)
    if len(data) > MAX_REPORT_PHOTO_BYTES:
        raise ValidationFailed(f"{field} is larger than {MAX_REPORT_PHOTO_BYTES // (1024 * 1024)} MB", field=field)
    content_type = sniff_image(data)
    if content_type is None or content_type not in PHOTO_FORMATS:
        raise ValidationFailed(f"{field} must be a JPEG, PNG or WebP image", field=field)
    try:
        clean = clean_photo(data, content_type)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{field}: {exc.message}", field=field) from None
    digest = hashlib.sha256(clean.data).hexdigest()
    if session.get(Blob, digest) is None:
        session.add(Blob(sha256=digest, content_type=clean.content_type, size=len(clean.data), data=clean.data))
        session.flush()
    return digest


def photo_url(public_url: str, digest: str) -> str:
    return f"{public_url.rstrip('/')}/api/resident/photos/{digest}"

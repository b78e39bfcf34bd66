"""The server's VAPID identity (RFC 8292): one P-256 key pair, kept in the database.

`fieldwork vapid` makes it once; every worker and host reads the same row, so a
subscription made through one worker is sent to by any other. `FIELDWORK_VAPID_PRIVATE_KEY`
(a PEM) overrides the stored key. The private key is never served, logged or printed.

Signing: `VapidSigner.headers(endpoint)` gives the Authorization header for a push service
(its origin is the JWT's `aud`), signed once per push service and reused until an hour
before it expires (12 h): the push service sees the same token for many notices.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from sqlmodel import Session, select

from server.errors import DomainError
from server.models import VapidKey, utcnow

__all__ = [
    "PushNotConfigured",
    "VapidIdentity",
    "VapidSigner",
    "audience",
    "ensure_keys",
    "generate_keys",
    "load_identity",
]

TOKEN_SECONDS = 12 * 3600
RENEW_BEFORE_SECONDS = 3600


class PushNotConfigured(DomainError):
    """No VAPID key yet: run `fieldwork vapid` (503)."""

    status_code = 503


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_b64(vapid: Vapid) -> str:
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return _b64url(raw)


@dataclass(frozen=True, slots=True)
class VapidIdentity:
    private_pem: str
    public_key: str  # base64url uncompressed point: the browser's applicationServerKey

    def __repr__(self) -> str:  # never show the private key, even in a traceback
        return f"VapidIdentity(public_key={self.public_key!r})"

    def vapid(self) -> Vapid:
        return Vapid.from_pem(self.private_pem.encode())


def generate_keys() -> VapidIdentity:
    vapid = Vapid()
    vapid.generate_keys()
    return VapidIdentity(private_pem=vapid.private_pem().decode(), public_key=_public_b64(vapid))


def identity_from_pem(pem: str) -> VapidIdentity:
    vapid = Vapid.from_pem(pem.encode())
    return VapidIdentity(private_pem=pem, public_key=_public_b64(vapid))


def load_identity(session: Session, *, override_pem: str | None = None) -> VapidIdentity | None:
    """The key pair in use: the setting if given, else the stored one, else None."""
    if override_pem:
        return identity_from_pem(override_pem)
    row = session.exec(select(VapidKey).order_by(VapidKey.id)).first()  # type: ignore[arg-type]
    if row is None:
        return None
    return VapidIdentity(private_pem=row.private_key, public_key=row.public_key)


def ensure_keys(session: Session, *, rotate: bool = False) -> tuple[VapidIdentity, bool]:
    """The stored key pair, made if there is none (or replaced, with `rotate`).

    Returns (identity, created). Rotating invalidates every browser subscription (they were
    made for the old public key): the caller deletes them in the same transaction.
    """
    row = session.exec(select(VapidKey).order_by(VapidKey.id).with_for_update()).first()  # type: ignore[arg-type]
    if row is not None and not rotate:
        return VapidIdentity(private_pem=row.private_key, public_key=row.public_key), False
    identity = generate_keys()
    if row is None:
        row = VapidKey(private_key=identity.private_pem, public_key=identity.public_key)
    else:
        row.private_key, row.public_key, row.created_at = identity.private_pem, identity.public_key, utcnow()
    session.add(row)
    session.flush()
    return identity, True


def audience(endpoint: str) -> str:
    """The push service's origin (scheme://host[:port]): the JWT's `aud`.

    Found with string operations for an endpoint that plainly is `scheme://authority/…` (every
    stored one: subscriptions are checked when bound), as `urlsplit` would, which costs the
    sender more than it should once per notice; anything else goes through `urlsplit`."""
    scheme, found, rest = endpoint.partition("://")
    if found and scheme.isascii() and scheme.isalpha() and endpoint.isprintable() and " " not in endpoint:
        end = len(rest)
        for mark in "/?#":
            at = rest.find(mark, 0, end)
            if at != -1:
                end = at
        return f"{scheme.lower()}://{rest[:end]}"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


class VapidSigner:
    """Authorization headers per push service, signed once and reused until near expiry."""

    def __init__(self, identity: VapidIdentity, *, subject: str) -> None:
        self._vapid = identity.vapid()
        self.public_key = identity.public_key
        self.subject = subject
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self.signed = 0  # how many tokens were signed (the benchmark shows the reuse)

    def headers(self, endpoint: str, *, now: float | None = None) -> dict[str, str]:
        return self.for_audience(audience(endpoint), now=now)

    def for_audience(self, aud: str, *, now: float | None = None) -> dict[str, str]:
        """The headers for the push service at origin `aud` (see `audience`)."""
        now = time.time() if now is None else now
        cached = self._cache.get(aud)
        if cached is not None and cached[0] - now > RENEW_BEFORE_SECONDS:
            return cached[1]
        expires = int(now) + TOKEN_SECONDS
        # A fresh claims dict per signature: py_vapid and pywebpush write into the one given.
        signed = self._vapid.sign({"aud": aud, "exp": expires, "sub": self.subject})
        self._cache[aud] = (float(expires), signed)
        self.signed += 1
        return signed

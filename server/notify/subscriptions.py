"""Binding browsers' Web Push subscriptions to cases (residents) and users (crews).

A subscription is the browser's `PushSubscription.toJSON()`: `endpoint`, `expirationTime`
and `keys.p256dh` / `keys.auth`. We check it before storing it, because the sender will
POST to that URL with our VAPID identity:

- the endpoint is an https URL with a host, no user or fragment, at most 1024 characters,
  and not an address on this machine or a private network (a push service is public);
  plain http to a loopback host only when `PushSettings.allow_loopback_http` (tests);
- p256dh is a point on P-256 (65 bytes, uncompressed), auth is 16 bytes, both base64url;
- a case takes at most `MAX_PER_CASE` browsers, a user `MAX_PER_USER`.

Binding the same browser again updates its keys and language (it is one row per
(endpoint, case) or (endpoint, user)).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from server.errors import Conflict, ValidationFailed
from server.models import PushSubscription
from server.notify.catalog import LANGUAGES, match_language

__all__ = [
    "MAX_PER_CASE",
    "MAX_PER_USER",
    "SubscriptionInfo",
    "bind_to_case",
    "bind_to_user",
    "endpoint_hash",
    "parse_subscription",
    "renew",
    "unbind_from_case",
    "unbind_from_user",
]

MAX_PER_CASE = 5
MAX_PER_USER = 10
MAX_ENDPOINT = 1024
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    endpoint: str
    p256dh: str
    auth: str
    expires_at: datetime | None

    @property
    def endpoint_hash(self) -> str:
        return endpoint_hash(self.endpoint)


def endpoint_hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


def _b64url_bytes(value: Any, *, field: str) -> bytes:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValidationFailed(f"{field} must be a base64url string", field=field)
    text = value.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValidationFailed(f"{field} is not valid base64url", field=field) from None


def _check_host(host: str, *, scheme: str, allow_loopback_http: bool) -> None:
    name = host.lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        address = None
    loopback = name in _LOOPBACK_NAMES or (address is not None and address.is_loopback)
    if scheme == "http":
        if not (allow_loopback_http and loopback):
            raise ValidationFailed("endpoint must be an https URL", field="endpoint")
        return
    if loopback and not allow_loopback_http:
        raise ValidationFailed("endpoint must be a public push service, not this machine", field="endpoint")
    if address is not None and not loopback and (
        address.is_private or address.is_link_local or address.is_reserved or address.is_multicast
        or address.is_unspecified
    ):
        raise ValidationFailed("endpoint must be a public push service, not a private address", field="endpoint")


def parse_subscription(data: Any, *, allow_loopback_http: bool = False) -> SubscriptionInfo:
    """Check a PushSubscription JSON object (400 naming the field on any problem)."""
    if not isinstance(data, dict):
        raise ValidationFailed("subscription must be an object with endpoint and keys", field="subscription")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValidationFailed("endpoint is required", field="endpoint")
    endpoint = endpoint.strip()
    if len(endpoint) > MAX_ENDPOINT:
        raise ValidationFailed(f"endpoint is longer than {MAX_ENDPOINT} characters", field="endpoint")
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises on a bad port
    except ValueError:
        raise ValidationFailed("endpoint is not a URL", field="endpoint") from None
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ValidationFailed("endpoint must be an https URL", field="endpoint")
    if parts.username or parts.password or parts.fragment or (port is not None and not 0 < port < 65536):
        raise ValidationFailed("endpoint must be a plain https URL (no user, no fragment)", field="endpoint")
    _check_host(parts.hostname, scheme=parts.scheme, allow_loopback_http=allow_loopback_http)

    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise ValidationFailed("keys with p256dh and auth are required", field="keys")
    p256dh = _b64url_bytes(keys.get("p256dh"), field="keys.p256dh")
    if len(p256dh) != 65 or p256dh[0] != 4:
        raise ValidationFailed("keys.p256dh must be an uncompressed P-256 point (65 bytes)", field="keys.p256dh")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise ValidationFailed("keys.p256dh is not a point on P-256", field="keys.p256dh") from None
    auth = _b64url_bytes(keys.get("auth"), field="keys.auth")
    if len(auth) != 16:
        raise ValidationFailed("keys.auth must be 16 bytes", field="keys.auth")

    expiration = data.get("expirationTime")
    expires_at = None
    if expiration is not None:
        if isinstance(expiration, bool) or not isinstance(expiration, int | float) or not 0 < expiration < 2**53:
            raise ValidationFailed("expirationTime must be null or milliseconds since 1970", field="expirationTime")
        expires_at = datetime.fromtimestamp(expiration / 1000, UTC)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return SubscriptionInfo(endpoint=endpoint, p256dh=b64(p256dh), auth=b64(auth), expires_at=expires_at)


def _language(value: str | None) -> str:
    return value if value in LANGUAGES else match_language(value)


def _bind(session: Session, info: SubscriptionInfo, *, language: str | None, case_id: int | None,
          user_id: int | None, limit: int) -> PushSubscription:
    owner = col(PushSubscription.case_id) == case_id if case_id is not None else col(PushSubscription.user_id) == user_id
    existing = session.exec(
        select(PushSubscription).where(owner, col(PushSubscription.endpoint_hash) == info.endpoint_hash)
    ).first()
    if existing is None:
        count = session.exec(select(func.count()).select_from(PushSubscription).where(owner)).one()
        if count >= limit:
            what = "report" if case_id is not None else "account"
            raise Conflict(f"this {what} already notifies {limit} browsers; remove one first", field="endpoint")
        existing = PushSubscription(endpoint=info.endpoint, endpoint_hash=info.endpoint_hash, p256dh=info.p256dh,
                                    auth=info.auth, case_id=case_id, user_id=user_id)
    existing.p256dh, existing.auth, existing.expires_at = info.p256dh, info.auth, info.expires_at
    existing.language = _language(language)
    session.add(existing)
    session.flush()
    return existing


def bind_to_case(session: Session, *, case_id: int, info: SubscriptionInfo, language: str | None) -> PushSubscription:
    return _bind(session, info, language=language, case_id=case_id, user_id=None, limit=MAX_PER_CASE)


def bind_to_user(session: Session, *, user_id: int, info: SubscriptionInfo, language: str | None) -> PushSubscription:
    return _bind(session, info, language=language, case_id=None, user_id=user_id, limit=MAX_PER_USER)


def _endpoint_of(data: Any) -> str:
    endpoint = data.get("endpoint") if isinstance(data, dict) else None
    if not isinstance(endpoint, str) or not endpoint.strip() or len(endpoint) > MAX_ENDPOINT:
        raise ValidationFailed("endpoint is required", field="endpoint")
    return endpoint.strip()


def unbind_from_case(session: Session, *, case_id: int, data: Any) -> int:
    """Stop notifying this browser about this case; how many bindings went (0 or 1)."""
    digest = endpoint_hash(_endpoint_of(data))
    result = session.execute(delete(PushSubscription).where(
        col(PushSubscription.case_id) == case_id, col(PushSubscription.endpoint_hash) == digest))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def unbind_from_user(session: Session, *, user_id: int, data: Any) -> int:
    digest = endpoint_hash(_endpoint_of(data))
    result = session.execute(delete(PushSubscription).where(
        col(PushSubscription.user_id) == user_id, col(PushSubscription.endpoint_hash) == digest))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def renew(session: Session, *, old_endpoint: str, info: SubscriptionInfo) -> int:
    """The browser replaced a subscription (`pushsubscriptionchange`): move every binding of
    the old endpoint to the new one. Knowing the old endpoint (a secret URL) is the proof."""
    old = endpoint_hash(old_endpoint.strip())
    if old == info.endpoint_hash:
        values = {"p256dh": info.p256dh, "auth": info.auth, "expires_at": info.expires_at}
    else:
        values = {"endpoint": info.endpoint, "endpoint_hash": info.endpoint_hash, "p256dh": info.p256dh,
                  "auth": info.auth, "expires_at": info.expires_at}
        # A binding the new endpoint already has wins; the old one's duplicate goes.
        taken_cases = select(PushSubscription.case_id).where(
            col(PushSubscription.endpoint_hash) == info.endpoint_hash, col(PushSubscription.case_id).is_not(None))
        taken_users = select(PushSubscription.user_id).where(
            col(PushSubscription.endpoint_hash) == info.endpoint_hash, col(PushSubscription.user_id).is_not(None))
        session.execute(delete(PushSubscription).where(
            col(PushSubscription.endpoint_hash) == old,
            col(PushSubscription.case_id).in_(taken_cases) | col(PushSubscription.user_id).in_(taken_users)))
    result = session.execute(update(PushSubscription).where(col(PushSubscription.endpoint_hash) == old).values(**values))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

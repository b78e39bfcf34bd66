"""Web Push routes shared by the apps:

    GET    /api/push/vapid-public-key      the applicationServerKey (public)
    POST   /api/me/push-subscriptions      a signed-in user's browser: notify me (crews: new jobs)
    DELETE /api/me/push-subscriptions      {"endpoint"}: stop
    POST   /api/push/renew                 {"old_endpoint", "subscription"}: the browser replaced
                                           a subscription (`pushsubscriptionchange`, public: the
                                           old endpoint, a secret URL, is the proof)

Residents bind a subscription to their report under /api/resident (server.residents.api).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody
from litestar.security.jwt import Token
from sqlalchemy import Engine

from server.auth.guards import current_user
from server.auth.tokens import AuthUser
from server.db import read_session, write_session
from server.notify.catalog import match_language
from server.notify.subscriptions import bind_to_user, parse_subscription, renew, unbind_from_user
from server.notify.vapid import PushNotConfigured, load_identity
from server.settings import Settings

__all__ = ["PushKeys", "PushSubscriptionIn", "push_router"]

ViewerRequest = Request[AuthUser, Token, State]
AcceptLanguage = Annotated[str | None, HeaderParameter(name="accept-language", required=False)]


class PushKeys(msgspec.Struct):
    p256dh: str
    auth: str


class PushSubscriptionIn(msgspec.Struct):
    """The browser's `PushSubscription.toJSON()` (and, optionally, the language of its notices)."""

    endpoint: str
    keys: PushKeys
    expirationTime: float | None = None
    language: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "expirationTime": self.expirationTime,
                "keys": {"p256dh": self.keys.p256dh, "auth": self.keys.auth}}


class EndpointIn(msgspec.Struct):
    endpoint: str


class RenewIn(msgspec.Struct):
    old_endpoint: str
    subscription: PushSubscriptionIn


class VapidPublicKey(msgspec.Struct):
    public_key: str


class SubscriptionPublic(msgspec.Struct):
    endpoint: str
    language: str


class Renewed(msgspec.Struct):
    moved: int


@get("/api/push/vapid-public-key", operation_id="vapidPublicKey", sync_to_thread=True)
def vapid_public_key(database: NamedDependency[Engine], settings: NamedDependency[Settings]) -> VapidPublicKey:
    """The server's VAPID public key, the applicationServerKey for pushManager.subscribe()."""
    with read_session(database) as db:
        identity = load_identity(db, override_pem=settings.push.vapid_private_key)
    if identity is None:
        raise PushNotConfigured("push notices are not set up on this server (fieldwork vapid)")
    return VapidPublicKey(public_key=identity.public_key)


@post("/api/me/push-subscriptions", operation_id="addMyPushSubscription", sync_to_thread=True, status_code=201)
def add_my_subscription(
    request: ViewerRequest, data: JSONBody[PushSubscriptionIn], database: NamedDependency[Engine],
    settings: NamedDependency[Settings], accept_language: AcceptLanguage = None,
) -> SubscriptionPublic:
    """Notify this browser of what concerns me (a crew member: jobs assigned to my crew)."""
    info = parse_subscription(data.as_dict(), allow_loopback_http=settings.push.allow_loopback_http)
    with write_session(database) as db:
        bound = bind_to_user(db, user_id=current_user(request).id, info=info,
                             language=data.language or match_language(accept_language))
    return SubscriptionPublic(endpoint=bound.endpoint, language=bound.language)


@delete("/api/me/push-subscriptions", operation_id="removeMyPushSubscription", sync_to_thread=True)
def remove_my_subscription(
    request: ViewerRequest, data: JSONBody[EndpointIn], database: NamedDependency[Engine]
) -> None:
    """Stop notifying this browser."""
    with write_session(database) as db:
        unbind_from_user(db, user_id=current_user(request).id, data={"endpoint": data.endpoint})


@post("/api/push/renew", operation_id="renewPushSubscription", sync_to_thread=True, status_code=200)
def renew_subscription(
    data: JSONBody[RenewIn], database: NamedDependency[Engine], settings: NamedDependency[Settings]
) -> Renewed:
    """The browser replaced its subscription: keep every case and user it was bound to."""
    info = parse_subscription(data.subscription.as_dict(), allow_loopback_http=settings.push.allow_loopback_http)
    with write_session(database) as db:
        return Renewed(moved=renew(db, old_endpoint=data.old_endpoint, info=info))


push_router = Router(
    path="/",
    route_handlers=[vapid_public_key, add_my_subscription, remove_my_subscription, renew_subscription],
    tags=["push"],
)

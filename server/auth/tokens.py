"""Bearer tokens (JWT, HS256) and the signed-in user they stand for.

A token names the user (`sub`) and, for the client's convenience, carries its role and crew
in the extras. The server does not trust those extras: every request loads the user again,
so a deactivated user is refused at once and a changed role applies at once.

Only `/api` and `/sync` are authenticated. Everything else is public: the PWA's files, the
Leaflet assets, `/healthz` and Open311 (which checks its own api_key); inside `/api`, the
sign-in route and the API docs are public too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token
from litestar.types import Receive, Scope, Send
from sqlalchemy import Engine
from sqlmodel import Session

from server.models import User, utcnow
from server.settings import Settings

__all__ = [
    "ALGORITHM",
    "PROTECTED_PATHS",
    "PUBLIC_API_PATHS",
    "AuthUser",
    "IssuedToken",
    "build_auth",
    "issue_token",
    "load_auth_user",
]

ALGORITHM = "HS256"
PROTECTED_PATHS = re.compile(r"^/(?:api|sync)(?:/|$)")
PUBLIC_API_PATHS = [r"^/api/auth/sign-in$", r"^/api/docs(?:/|$)"]


@dataclass(frozen=True, slots=True)
class AuthUser:
    """Who is asking: what guards and service functions see of a signed-in user."""

    id: int
    username: str
    role: str
    crew_id: int | None
    display_name: str

    @property
    def is_crew(self) -> bool:
        return self.role == "crew"

    @classmethod
    def of(cls, user: User) -> AuthUser:
        assert user.id is not None
        return cls(user.id, user.username, user.role, user.crew_id, user.display_name)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


def issue_token(settings: Settings, user: User, *, now: datetime | None = None) -> IssuedToken:
    """A signed token for `user`, valid for `settings.auth.token_minutes`."""
    now = (now or utcnow()).replace(microsecond=0)
    expires_at = now + timedelta(minutes=settings.auth.token_minutes)
    token = Token(
        sub=str(user.id),
        exp=expires_at,
        iat=now,
        extras={"role": user.role, "crew_id": user.crew_id},
    )
    return IssuedToken(token.encode(secret=settings.auth.secret, algorithm=ALGORITHM), expires_at)


def load_auth_user(engine: Engine, user_id: int) -> AuthUser | None:
    """The active user with this id, or None."""
    with Session(engine) as session:
        user = session.get(User, user_id)
        if user is None or not user.active:
            return None
        return AuthUser.of(user)


async def _retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthUser | None:
    try:
        user_id = int(token.sub)
    except ValueError:
        return None
    engine: Engine = connection.app.state.engine
    return await anyio.to_thread.run_sync(load_auth_user, engine, user_id)


class _ProtectedPathsMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, run only for `/api` and `/sync`.

    "Everything but /api and /sync" is a negative pattern that also matches "/", which
    Litestar's `exclude` takes for a mistake ("excludes every route") and warns about; so
    the protected prefixes are checked here and `exclude` lists only the public exceptions
    inside them.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not PROTECTED_PATHS.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def build_auth(settings: Settings) -> JWTAuth[AuthUser, Token]:
    """The app's JWT configuration (middleware, OpenAPI security scheme)."""
    return JWTAuth[AuthUser, Token](
        token_secret=settings.auth.secret,
        algorithm=ALGORITHM,
        retrieve_user_handler=_retrieve_user,
        default_token_expiration=timedelta(minutes=settings.auth.token_minutes),
        exclude=PUBLIC_API_PATHS,
        # HEAD is authenticated too (Litestar skips it by default): HEAD /sync/v1/blobs/… is
        # a crew's question.
        exclude_http_methods=["OPTIONS"],
        authentication_middleware_class=_ProtectedPathsMiddleware,
        description="Bearer token from POST /api/auth/sign-in.",
    )

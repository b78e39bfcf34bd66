"""Bearer tokens (JWT, HS256) and the signed-in user they stand for.

A token names the user (`sub`) and the user's token key (`tk`, a random value kept with the
user), and, for the client's convenience, carries its role and crew in the extras. The
server does not trust those extras: every request loads the user again and checks the key,
so a deactivated or deleted user is refused at once, a changed role applies at once, and a
token never passes to a new user who is given the same id (SQLite reuses the highest
deleted id). Changing the key (`rotate_token_key`) signs the user out everywhere.

What that check costs, per request: one statement (the user's row; on the cached routes also
the change feed's position, server/readcache.py), run on the pooled DB-API connection
without a transaction (db.fetch_one), on SQLite on the event loop itself (db.LoopReader).
A token's signature is checked once per process and token (`_VerifiedTokens`); its expiry
and its user are checked on every request.

Only `/api` and `/sync` are authenticated. Everything else is public: the PWA's files, the
Leaflet assets, `/healthz` and Open311 (which checks its own api_key); inside `/api`, the
sign-in route and the API docs are public too.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import sqlite3
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.concurrency import sync_to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token
from litestar.types import Receive, Scope, Send
from sqlalchemy import Engine, bindparam, select
from sqlmodel import Session, col

from server.db import AsyncPgReader, LoopReader, fetch_one
from server.models import User, new_token_key, utcnow
from server.readcache import POSITION_COLUMNS, POSITION_PATHS, STATE_KEY, Position, position_from_row
from server.settings import Settings

__all__ = [
    "ALGORITHM",
    "PROTECTED_PATHS",
    "PUBLIC_API_PATHS",
    "AuthUser",
    "IssuedToken",
    "build_auth",
    "close_token_readers",
    "issue_token",
    "load_auth_user",
    "load_auth_user_at",
    "rotate_token_key",
]

ALGORITHM = "HS256"
log = logging.getLogger("fieldwork.auth")
PROTECTED_PATHS = re.compile(r"^/(?:api|sync)(?:/|$)")
PUBLIC_API_PATHS = [
    r"^/api/auth/sign-in$",
    r"^/api/docs(?:/|$)",
    # Residents have no account: their pages' API, the push key, and a browser renewing
    # its subscription (server.notify, server.residents).
    r"^/api/resident(?:/|$)",
    r"^/api/push/vapid-public-key$",
    r"^/api/push/renew$",
    # The state machine's crew moves and codes (server.workflow): no one's data, and a crew
    # app starting offline after its token expired still needs them.
    r"^/api/workflow$",
]


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
        extras={"role": user.role, "crew_id": user.crew_id, "tk": user.token_key},
    )
    if settings.auth.secret is None:
        raise RuntimeError("no signing secret: the app resolves it at start-up (server.sharedstate)")
    return IssuedToken(token.encode(secret=settings.auth.secret, algorithm=ALGORITHM), expires_at)


_USER_COLUMNS = (User.id, User.username, User.role, User.crew_id, User.display_name, User.token_key)
_AUTH_SELECT = select(*_USER_COLUMNS).where(col(User.id) == bindparam("user_id"), col(User.active))  # type: ignore[call-overload]
# The same, and the change feed's position (server/readcache.py): one statement for both.
_AUTH_POSITION_SELECT = _AUTH_SELECT.add_columns(*POSITION_COLUMNS)


def load_auth_user(engine: Engine, user_id: int, token_key: str | None = None) -> AuthUser | None:
    """The active user with this id whose token key is `token_key`, or None."""
    return load_auth_user_at(engine, user_id, token_key, with_position=False)[0]


def load_auth_user_at(
    engine: Engine, user_id: int, token_key: str | None, *, with_position: bool
) -> tuple[AuthUser | None, Position | None]:
    """`load_auth_user`, and with `with_position` where the change feed stands, read in the
    same statement: a cached answer is checked against the database in the same round trip
    as the user (server/readcache.py)."""
    if token_key is None:
        return None, None
    # Plain columns, one statement on the pooled connection itself: this runs on every
    # authenticated request.
    statement = _AUTH_POSITION_SELECT if with_position else _AUTH_SELECT
    return _auth_result(fetch_one(engine, statement, user_id=user_id), token_key, with_position=with_position)


def _auth_result(
    row: tuple[Any, ...] | None, token_key: str, *, with_position: bool
) -> tuple[AuthUser | None, Position | None]:
    if row is None or not hmac.compare_digest(row[5].encode(), token_key.encode()):
        return None, None
    return AuthUser(*row[:5]), position_from_row(tuple(row[6:])) if with_position else None


async def close_token_readers(state: Any) -> None:
    """Close the token check's own connections (the app's shutdown)."""
    sqlite_reader, pg_reader = state.get("loop_readers", (None, None))
    if sqlite_reader is not None:
        sqlite_reader.close()
    if pg_reader is not None:
        await pg_reader.close()


def _loop_readers(
    connection: ASGIConnection[Any, Any, Any, Any], engine: Engine
) -> tuple[LoopReader | None, AsyncPgReader | None]:
    state = connection.app.state
    if state.get("loop_reader_engine") is not engine:  # made once per engine
        state["loop_readers"] = (LoopReader.for_engine(engine), AsyncPgReader.for_engine(engine))
        state["loop_reader_engine"] = engine
    readers: tuple[LoopReader | None, AsyncPgReader | None] = state["loop_readers"]
    return readers


def rotate_token_key(session: Session, user: User) -> None:
    """Give the user a new token key: every token issued so far stops working."""
    user.token_key = new_token_key()
    session.add(user)


async def _retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthUser | None:
    try:
        user_id = int(token.sub)
    except ValueError:
        return None
    if not -(2**63) <= user_id < 2**63:
        return None
    key = token.extras.get("tk")
    if not isinstance(key, str) or len(key) > 64:
        return None
    engine: Engine = connection.app.state.engine
    with_position = connection.scope["path"] in POSITION_PATHS
    found: tuple[AuthUser | None, Position | None] | None = None
    statement = _AUTH_POSITION_SELECT if with_position else _AUTH_SELECT
    sqlite_reader, pg_reader = _loop_readers(connection, engine)
    if sqlite_reader is not None:  # a few index entries, read on the loop itself (db.LoopReader)
        with suppress(sqlite3.OperationalError):  # it would have to wait: in a thread instead
            row = sqlite_reader.fetch_one(statement, user_id=user_id)
            found = _auth_result(row, key, with_position=with_position)
    elif pg_reader is not None:  # one round trip, awaited on the loop (db.AsyncPgReader)
        try:
            row = await pg_reader.fetch_one(statement, user_id=user_id)
            found = _auth_result(row, key, with_position=with_position)
        except Exception:  # the connection is gone or broken: the pool's way instead
            log.warning("the token check's own connection failed; reading through the pool", exc_info=True)
    if found is None:
        # In the app's worker threads, inside the request's admission (server/admission.py).
        found = await sync_to_thread(load_auth_user_at, engine, user_id, key, with_position=with_position)
    user, position = found
    if position is not None:
        connection.scope["state"][STATE_KEY] = position  # for the handler's cache (server/readcache.py)
    return user


class _VerifiedTokens:
    """Tokens whose signature this process has checked, by their text (least recently used out).

    Checking an HS256 signature and its claims costs a tenth of a millisecond, on every
    request, for the same few tokens. The same text signed with the same secret always checks
    the same way, so a token seen before is not checked again; its expiry is, on every use.
    Only tokens that passed are kept (nobody can fill this without the secret). The user
    behind a token is still read from the database on every request (`_retrieve_user`).
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._tokens: OrderedDict[tuple[str, str], Token] = OrderedDict()

    def get(self, secret: str, encoded: str) -> Token | None:
        token = self._tokens.get((secret, encoded))
        if token is None:
            return None
        if token.exp <= datetime.now(UTC):  # PyJWT's rule: expired at `exp`
            del self._tokens[(secret, encoded)]
            return None
        self._tokens.move_to_end((secret, encoded))
        return token

    def put(self, secret: str, encoded: str, token: Token) -> None:
        self._tokens[(secret, encoded)] = token
        if len(self._tokens) > self.size:
            self._tokens.popitem(last=False)


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
        # The secret is resolved when the app starts (it may come from the database).
        self.token_secret = scope["app"].state.settings.auth.secret
        await super().__call__(scope, receive, send)

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """Litestar's check (the signature, the claims, then the user from the database), with
        the signature checked once per token text and process (`_VerifiedTokens`)."""
        verified: _VerifiedTokens = connection.app.state.setdefault("verified_tokens", _VerifiedTokens())
        token = verified.get(self.token_secret, encoded_token)
        if token is None:
            token = self.token_cls.decode(
                encoded_token=encoded_token, secret=self.token_secret, algorithm=self.algorithm,
                audience=self.token_audience, issuer=self.token_issuer, require_claims=self.require_claims,
                verify_exp=self.verify_expiry, verify_nbf=self.verify_not_before, strict_audience=self.strict_audience,
            )
            verified.put(self.token_secret, encoded_token, token)
        user = await self.retrieve_user_handler(token, connection)
        if not user:
            raise NotAuthorizedException()
        return AuthenticationResult(user=user, auth=token)


def build_auth(settings: Settings) -> JWTAuth[AuthUser, Token]:
    """The app's JWT configuration (middleware, OpenAPI security scheme)."""
    return JWTAuth[AuthUser, Token](
        # Only a placeholder: the middleware checks tokens with the secret resolved at
        # start-up (app.state.settings), which may come from the database.
        token_secret=settings.auth.secret or secrets.token_urlsafe(48),
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

"""HTTP handlers for signing in, the current user, users and crews (all under /api).

    POST /api/auth/sign-in   public (rate limited per client address)
    GET  /api/me             signed in
    GET  /api/users          admin          POST /api/users   admin
    GET  /api/crews          signed in (a crew member sees names only)
    POST /api/crews          admin
"""

from __future__ import annotations

from litestar import Controller, Request, Router, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import JSONBody
from litestar.security.jwt import Token
from sqlalchemy import Engine

from server.auth.guards import admin_only, current_user, signed_in
from server.auth.schemas import (
    CrewCreate,
    CrewName,
    CrewPublic,
    MePublic,
    SignIn,
    SignInResult,
    UserCreate,
    UserPublic,
)
from server.auth.tokens import AuthUser, issue_token
from server.auth.users import authenticate, create_crew, create_user, get_profile, list_crews, list_users
from server.db import read_session, write_session
from server.settings import Settings

__all__ = ["SIGN_IN_RATE_LIMIT", "auth_router"]

# A second, coarser brake in front of the per-username limit: per client address, per
# process (the per-username count in the database is the one every worker shares).
SIGN_IN_RATE_LIMIT = RateLimitConfig(rate_limit=("minute", 30), store="sign_in_rate_limit")

AuthRequest = Request[AuthUser, Token, State]


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/sign-in",
        operation_id="signIn",
        status_code=200,
        sync_to_thread=True,
        middleware=[SIGN_IN_RATE_LIMIT.middleware],
        exclude_from_auth=True,
    )
    def sign_in(
        self, data: JSONBody[SignIn], database: NamedDependency[Engine], settings: NamedDependency[Settings]
    ) -> SignInResult:
        """Exchange a username and password for a bearer token."""
        user = authenticate(database, username=data.username, password=data.password, settings=settings.auth)
        issued = issue_token(settings, user)
        return SignInResult(token=issued.token, expires_at=issued.expires_at, user=UserPublic.of(user))


@get("/me", operation_id="getMe", guards=[signed_in], tags=["auth"], sync_to_thread=True)
def me(request: AuthRequest, database: NamedDependency[Engine]) -> MePublic:
    """The signed-in user."""
    with read_session(database) as db:
        user, crew = get_profile(db, user_id=current_user(request).id)
    return MePublic.model_validate(
        {**UserPublic.of(user).model_dump(), "crew_name": crew.name if crew else None}
    )


class UserController(Controller):
    path = "/users"
    guards = [admin_only]
    tags = ["users"]

    @get(operation_id="listUsers", sync_to_thread=True)
    def users(self, database: NamedDependency[Engine]) -> list[UserPublic]:
        """Every user account (admin only)."""
        with read_session(database) as db:
            return [UserPublic.of(u) for u in list_users(db)]

    @post(operation_id="createUser", sync_to_thread=True)
    def add_user(self, data: JSONBody[UserCreate], database: NamedDependency[Engine]) -> UserPublic:
        """Create a user account (admin only)."""
        with write_session(database) as db:
            user = create_user(
                db,
                username=data.username,
                password=data.password,
                role=data.role,
                crew_id=data.crew_id,
                display_name=data.display_name,
            )
            return UserPublic.of(user)


class CrewController(Controller):
    path = "/crews"
    guards = [signed_in]
    tags = ["crews"]

    @get(operation_id="listCrews", sync_to_thread=True)
    def crews(self, request: AuthRequest, database: NamedDependency[Engine]) -> list[CrewPublic] | list[CrewName]:
        """The crews; a crew member sees only their names."""
        with read_session(database) as db:
            crews = list_crews(db)
        if current_user(request).is_crew:
            return [CrewName(id=c.id, name=c.name) for c in crews]  # type: ignore[arg-type]
        return [CrewPublic.of(c) for c in crews]

    @post(operation_id="createCrew", guards=[admin_only], sync_to_thread=True)
    def add_crew(self, data: JSONBody[CrewCreate], database: NamedDependency[Engine]) -> CrewPublic:
        """Create a crew (admin only)."""
        with write_session(database) as db:
            crew = create_crew(
                db,
                name=data.name,
                skills=data.skills,
                home_districts=data.home_districts,
                capacity=data.capacity,
            )
            return CrewPublic.of(crew)


auth_router = Router(path="/api", route_handlers=[AuthController, me, UserController, CrewController])

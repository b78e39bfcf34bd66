"""Role rules as plain guard functions.

Attach one at controller or router level (`signed_in`) and tighten per handler
(`dispatcher_or_admin`, `admin_only`). What a crew may see of a resource it can reach
(only its own work orders) is decided in the service functions, which get the viewer.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from server.auth.tokens import AuthUser
from server.auth.users import ROLES
from server.errors import Forbidden, NotAuthenticated

__all__ = ["admin_only", "current_user", "dispatcher_or_admin", "requires_role", "signed_in"]


def current_user(connection: ASGIConnection[Any, Any, Any, Any]) -> AuthUser:
    """The signed-in user; NotAuthenticated on a route that nobody authenticated."""
    user = connection.scope.get("user")
    if not isinstance(user, AuthUser):
        raise NotAuthenticated("sign in first")
    return user


def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    current_user(connection)


def requires_role(*roles: str) -> Guard:
    """A guard that lets through only users with one of `roles`."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    allowed = frozenset(roles)
    needed = " or ".join(roles)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if current_user(connection).role not in allowed:
            raise Forbidden(f"this needs the {needed} role")

    guard.__name__ = guard.__qualname__ = f"requires_{'_or_'.join(roles)}"
    return guard


dispatcher_or_admin = requires_role("dispatcher", "admin")
admin_only = requires_role("admin")

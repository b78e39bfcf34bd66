"""Signing in, users, crews and role rules.

    auth_router    the /api routes (sign-in, me, users, crews)
    build_auth     the app's JWT configuration (what create_app installs)
    AuthUser       who is asking, as guards and service functions see it
"""

from server.auth.api import auth_router
from server.auth.guards import admin_only, current_user, dispatcher_or_admin, requires_role, signed_in
from server.auth.tokens import AuthUser, build_auth, issue_token
from server.auth.users import authenticate, create_crew, create_user

__all__ = [
    "AuthUser",
    "admin_only",
    "auth_router",
    "authenticate",
    "build_auth",
    "create_crew",
    "create_user",
    "current_user",
    "dispatcher_or_admin",
    "issue_token",
    "requires_role",
    "signed_in",
]

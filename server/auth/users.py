"""Users, crews and signing in.

Failed sign-ins are counted per username in the database (`FailedSignIn`), so every worker
and every host sees the same count. An attempt is written down, in its own committed
transaction, *before* the password is checked and removed again only by a success: a burst
of parallel guesses cannot get more than `failed_login_limit` checks per window, and a
failed attempt stays recorded although the request that made it fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from server.auth.passwords import dummy_verify, hash_password, needs_rehash, verify_password
from server.db import read_session, write_session
from server.errors import Conflict, NotAuthenticated, TooManyAttempts, ValidationFailed
from server.models import Crew, District, FailedSignIn, User, utcnow
from server.settings import AuthSettings

__all__ = [
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "ROLES",
    "authenticate",
    "create_crew",
    "create_user",
    "get_profile",
    "list_crews",
    "list_users",
    "normalize_username",
]

ROLES = ("admin", "dispatcher", "crew")
USERNAME_PATTERN = re.compile(r"[a-z0-9._-]{3,80}")
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # argon2 takes any length; a bound keeps request bodies small
WRONG_CREDENTIALS = "wrong username or password"


def normalize_username(username: str) -> str:
    """Usernames are lower case; phones capitalise the first letter of a field."""
    return username.strip().lower()


# -- users and crews ---------------------------------------------------------------------


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: str,
    crew_id: int | None = None,
    display_name: str = "",
) -> User:
    """Add a user (flushed, not committed); raises ValidationFailed or Conflict."""
    name = normalize_username(username)
    if not USERNAME_PATTERN.fullmatch(name):
        raise ValidationFailed(
            "username must be 3 to 80 characters of a-z, 0-9, '.', '_' or '-'", field="username"
        )
    if len(password) < PASSWORD_MIN:
        raise ValidationFailed(f"password must be at least {PASSWORD_MIN} characters", field="password")
    if len(password) > PASSWORD_MAX:
        raise ValidationFailed(f"password must be at most {PASSWORD_MAX} characters", field="password")
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}", field="role")
    if role == "crew":
        if crew_id is None:
            raise ValidationFailed("a crew user needs a crew_id", field="crew_id")
        if session.get(Crew, crew_id) is None:
            raise ValidationFailed(f"there is no crew {crew_id}", field="crew_id")
    elif crew_id is not None:
        raise ValidationFailed("only crew users belong to a crew", field="crew_id")
    display_name = display_name.strip()
    if len(display_name) > 120:
        raise ValidationFailed("display_name must be at most 120 characters", field="display_name")
    if session.exec(select(User.id).where(User.username == name)).first() is not None:
        raise Conflict(f"the username {name!r} is taken", field="username")

    user = User(
        username=name,
        password_hash=hash_password(password),
        role=role,
        crew_id=crew_id,
        display_name=display_name or name,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # created by someone else since the check above
        raise Conflict(f"the username {name!r} is taken", field="username") from exc
    return user


def create_crew(
    session: Session,
    *,
    name: str,
    skills: Iterable[str] = (),
    home_districts: Iterable[int] = (),
    capacity: int = 8,
) -> Crew:
    """Add a crew (flushed, not committed); raises ValidationFailed or Conflict."""
    name = name.strip()
    if not 1 <= len(name) <= 120:
        raise ValidationFailed("name must be 1 to 120 characters", field="name")
    if not 1 <= capacity <= 200:
        raise ValidationFailed("capacity must be between 1 and 200 jobs a day", field="capacity")
    skill_list = sorted({s.strip() for s in skills if s.strip()})
    district_list = sorted(set(home_districts))
    if district_list:
        known = set(session.exec(select(District.id).where(District.id.in_(district_list))).all())  # type: ignore[union-attr]
        missing = [d for d in district_list if d not in known]
        if missing:
            raise ValidationFailed(f"no such district: {missing[0]}", field="home_districts")
    if session.exec(select(Crew.id).where(Crew.name == name)).first() is not None:
        raise Conflict(f"there is already a crew named {name!r}", field="name")
    crew = Crew(name=name, skills=skill_list, home_districts=district_list, capacity=capacity)
    session.add(crew)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"there is already a crew named {name!r}", field="name") from exc
    # Imported here: server.workorders' package imports the auth package's guards.
    from server.workorders.changes import publish_reference

    assert crew.id is not None
    publish_reference(session, "crew", [crew.id])
    return crew


def get_profile(session: Session, *, user_id: int) -> tuple[User, Crew | None]:
    """An active user and its crew; NotAuthenticated if the account is gone or disabled."""
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise NotAuthenticated("this account no longer exists or is disabled")
    crew = session.get(Crew, user.crew_id) if user.crew_id is not None else None
    return user, crew


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.username)).all())


def list_crews(session: Session, *, active_only: bool = False) -> list[Crew]:
    statement = select(Crew).order_by(Crew.name)
    if active_only:
        statement = statement.where(Crew.active)
    return list(session.exec(statement).all())


# -- signing in --------------------------------------------------------------------------


def authenticate(
    engine: Engine,
    *,
    username: str,
    password: str,
    settings: AuthSettings,
    now: datetime | None = None,
) -> User:
    """The active user with these credentials, or NotAuthenticated / TooManyAttempts.

    Opens short sessions of its own, one after the other and never one inside another: a
    sign-in holds at most one pooled connection at a time, and none while the password
    hash is checked.
    """
    now = now or utcnow()
    key = normalize_username(username)[:80]
    window = timedelta(seconds=settings.failed_login_window_seconds)
    limit = settings.failed_login_limit

    with read_session(engine) as session:
        _refuse_if_limited(session, key=key, now=now, window=window, limit=limit, own_attempt=False)
    attempt_id = _record_attempt(engine, key=key, now=now, window=window)
    try:
        with read_session(engine) as fresh:  # a new snapshot: sees attempts made in parallel
            _refuse_if_limited(fresh, key=key, now=now, window=window, limit=limit, own_attempt=True)
            user = fresh.exec(select(User).where(User.username == key)).first()
    except TooManyAttempts:
        _forget_attempt(engine, attempt_id)
        raise

    if user is None or not user.active:
        dummy_verify(password)
        raise NotAuthenticated(WRONG_CREDENTIALS)
    if not verify_password(user.password_hash, password):
        raise NotAuthenticated(WRONG_CREDENTIALS)

    with write_session(engine) as writer:
        writer.exec(delete(FailedSignIn).where(col(FailedSignIn.username) == key))
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
            writer.exec(update(User).where(col(User.id) == user.id).values(password_hash=user.password_hash))
    return user


def _refuse_if_limited(
    session: Session, *, key: str, now: datetime, window: timedelta, limit: int, own_attempt: bool
) -> None:
    count, oldest = session.exec(
        select(func.count(col(FailedSignIn.id)), func.min(FailedSignIn.at)).where(
            FailedSignIn.username == key, FailedSignIn.at > now - window
        )
    ).one()
    if count - (1 if own_attempt else 0) >= limit:
        retry_after = max(1, math.ceil((oldest + window - now).total_seconds()))
        raise TooManyAttempts(
            f"too many failed sign-ins for this username; try again in {retry_after} s",
            retry_after=retry_after,
        )


def _record_attempt(engine: Engine, *, key: str, now: datetime, window: timedelta) -> int:
    with write_session(engine) as writer:
        # Rows older than the window count for nothing: drop them so the table stays small.
        writer.exec(delete(FailedSignIn).where(col(FailedSignIn.at) <= now - window))
        attempt = FailedSignIn(username=key, at=now)
        writer.add(attempt)
        writer.flush()
        assert attempt.id is not None
        return attempt.id


def _forget_attempt(engine: Engine, attempt_id: int) -> None:
    with write_session(engine) as writer:
        writer.exec(delete(FailedSignIn).where(col(FailedSignIn.id) == attempt_id))

"""API shapes of users, crews and sign-in. None of them carries a password hash."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import pydantic
from sqlmodel import Field, SQLModel

from server.models import Crew, User
from server.params import DB_INT_MAX

# An id in a body: the database's integers stop at 2**63 - 1 (server.params).
BodyId = Annotated[int, pydantic.Field(ge=1, le=DB_INT_MAX)]

__all__ = [
    "CrewCreate",
    "CrewName",
    "CrewPublic",
    "MePublic",
    "SignIn",
    "SignInResult",
    "UserCreate",
    "UserPublic",
]


class SignIn(SQLModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=4096)


class UserPublic(SQLModel):
    id: int
    username: str
    display_name: str
    role: str
    crew_id: int | None
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls.model_validate(user, from_attributes=True)


class MePublic(UserPublic):
    crew_name: str | None = None


class SignInResult(SQLModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (the scheme, not a secret)
    expires_at: datetime
    user: UserPublic


class UserCreate(SQLModel):
    username: str
    password: str
    role: str
    crew_id: BodyId | None = None
    display_name: str = ""


class CrewName(SQLModel):
    """What a crew member sees of the other crews."""

    id: int
    name: str


class CrewPublic(CrewName):
    skills: list[str]
    home_districts: list[int]
    capacity: int
    active: bool
    last_lat: float | None
    last_lon: float | None
    last_seen_at: datetime | None

    @classmethod
    def of(cls, crew: Crew) -> CrewPublic:
        return cls(
            id=crew.id,  # type: ignore[arg-type]
            name=crew.name,
            skills=crew.skills or [],
            home_districts=crew.home_districts or [],
            capacity=crew.capacity,
            active=crew.active,
            last_lat=crew.last_lat,
            last_lon=crew.last_lon,
            last_seen_at=crew.last_seen_at,
        )


class CrewCreate(SQLModel):
    name: str
    skills: list[str] = Field(default_factory=list)
    home_districts: list[BodyId] = Field(default_factory=list, max_length=500)
    capacity: int = Field(default=8, ge=1, le=200)

"""Typed settings, one frozen dataclass per concern, read from ``FIELDWORK_*`` once.

Tests build their own `Settings` and hand it to `create_app(settings)`; nothing in the
program reads the environment anywhere else.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

__all__ = [
    "AuthSettings",
    "DatabaseSettings",
    "IntakeSettings",
    "PushSettings",
    "Settings",
    "get_settings",
    "settings_from_env",
]

DEFAULT_DB_PATH = Path("var") / "fieldwork.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = f"sqlite:///{DEFAULT_DB_PATH}"
    echo: bool = False
    migrate_on_start: bool = True

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # A random per-process secret is safe for a demo but signs everyone out on restart:
    # production sets FIELDWORK_AUTH_SECRET.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    token_minutes: int = 12 * 60
    failed_login_limit: int = 5
    failed_login_window_seconds: int = 15 * 60
    open311_api_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    timezone: str = "America/Chicago"
    jurisdiction_id: str = "fieldwork.local"
    service_types_config: Path | None = None
    # A point farther than this from every service area is outside the jurisdiction.
    boundary_tolerance_m: float = 15.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class PushSettings:
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:fieldwork@localhost"


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    push: PushSettings = field(default_factory=PushSettings)
    public_url: str = DEFAULT_PUBLIC_URL
    debug: bool = False


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Build settings from ``FIELDWORK_*`` variables (unset ones keep their defaults)."""
    env = dict(os.environ if env is None else env)
    get = env.get
    database = DatabaseSettings(
        url=get("FIELDWORK_DATABASE_URL") or DatabaseSettings().url,
        echo=_bool(get("FIELDWORK_DATABASE_ECHO"), False),
        migrate_on_start=_bool(get("FIELDWORK_MIGRATE_ON_START"), True),
    )
    auth_kwargs: dict[str, object] = {}
    if get("FIELDWORK_AUTH_SECRET"):
        auth_kwargs["secret"] = get("FIELDWORK_AUTH_SECRET")
    if get("FIELDWORK_TOKEN_MINUTES"):
        auth_kwargs["token_minutes"] = int(env["FIELDWORK_TOKEN_MINUTES"])
    if get("FIELDWORK_OPEN311_API_KEYS"):
        keys = tuple(k.strip() for k in env["FIELDWORK_OPEN311_API_KEYS"].split(",") if k.strip())
        auth_kwargs["open311_api_keys"] = keys
    config = get("FIELDWORK_SERVICE_TYPES")
    intake = IntakeSettings(
        timezone=get("FIELDWORK_TIMEZONE") or IntakeSettings().timezone,
        jurisdiction_id=get("FIELDWORK_JURISDICTION_ID") or IntakeSettings().jurisdiction_id,
        service_types_config=Path(config) if config else None,
    )
    push = PushSettings(
        vapid_private_key=get("FIELDWORK_VAPID_PRIVATE_KEY") or None,
        vapid_subject=get("FIELDWORK_VAPID_SUBJECT") or PushSettings().vapid_subject,
    )
    return Settings(
        database=database,
        auth=AuthSettings(**auth_kwargs),  # type: ignore[arg-type]
        intake=intake,
        push=push,
        public_url=get("FIELDWORK_PUBLIC_URL") or DEFAULT_PUBLIC_URL,
        debug=_bool(get("FIELDWORK_DEBUG"), False),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return settings_from_env()

"""Typed settings, one frozen dataclass per concern, read from ``FIELDWORK_*`` once.

Tests build their own `Settings` and hand it to `create_app(settings)`; nothing in the
program reads the environment anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "AuthSettings",
    "DatabaseSettings",
    "ServerSettings",
    "IntakeSettings",
    "PushSettings",
    "ResidentSettings",
    "Settings",
    "get_settings",
    "settings_from_env",
]

DEFAULT_DB_PATH = Path("var") / "fieldwork.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


# How many requests one worker process serves at once; the rest wait their turn (see
# server/admission.py). The thread pool has this many threads, and the connection pool
# this many connections plus a reserve for work outside requests.
DEFAULT_THREADS = 8
POOL_RESERVE = 4


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = f"sqlite:///{DEFAULT_DB_PATH}"
    echo: bool = False
    migrate_on_start: bool = True
    # Connections per process, never more (no overflow): threads + POOL_RESERVE.
    pool_size: int = DEFAULT_THREADS + POOL_RESERVE
    # A backstop: with the pool sized to the threads nothing should wait this long.
    pool_timeout: float = 10.0

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # Signs tokens. None: the one kept in the database (created on first start, shared by
    # every worker and host, kept across restarts; server/sharedstate.py). Setting
    # FIELDWORK_AUTH_SECRET overrides it (then every host must have the same value).
    secret: str | None = None
    token_minutes: int = 12 * 60
    # "standard" argon2id, or "test-only-cheap" for test suites (server/auth/passwords.py).
    password_cost: str = "standard"  # noqa: S105 (a cost profile's name)
    failed_login_limit: int = 5
    failed_login_window_seconds: int = 15 * 60
    open311_api_keys: tuple[str, ...] = ()
    # Web origins (scheme://host[:port]) whose pages may call the Open311 API from a
    # browser (CORS); "*" allows any. Empty: none (a server-side client needs no CORS).
    open311_cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    timezone: str = "America/Chicago"
    jurisdiction_id: str = "fieldwork.local"
    service_types_config: Path | None = None
    # A point farther than this from every service area is outside the jurisdiction. 50 m
    # on purpose (README "Intake"): cities geocode addresses onto the centre line of the
    # street that forms their edge, and LA's export has intersections 17-35 m outside its
    # council districts (every LA point outside them is within ~45 m); a real point outside
    # the city is kilometres away, not metres.
    boundary_tolerance_m: float = 50.0
    # True when the zone was chosen (FIELDWORK_TIMEZONE or --timezone): it then wins over
    # the zone of the city whose export an import recognises.
    timezone_set: bool = False

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class PushSettings:
    """Web Push (server.notify): the VAPID identity and the sender's pace."""

    # Normally the key pair lives in the database (`fieldwork vapid`); this overrides it.
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:fieldwork@localhost"
    # Push services are https; plain http is accepted only for loopback hosts, and only
    # when this is on (the tests' push-service stand-in).
    allow_loopback_http: bool = False
    run_sender: bool = True  # inside `fieldwork serve`; `fieldwork worker` runs one on its own
    poll_seconds: float = 2.0  # how often a sender looks for due notices when nobody woke it
    batch_size: int = 500  # rows claimed at once
    concurrency: int = 128  # POSTs in flight at once (also the most a hard kill can leave unknown)
    # Processes of each sender that encrypt large claims beside its event loop (0: on the loop).
    encryption_processes: int = 1
    lease_seconds: float = 60.0  # a claim not finished by then goes back to the queue
    timeout_seconds: float = 10.0  # one POST to a push service
    max_attempts: int = 8
    retry_base_seconds: float = 10.0  # 5xx and network errors: 10 s, 20 s, 40 s … (capped at 30 min)
    resident_ttl_seconds: int = 4 * 24 * 3600  # a phone off for a long weekend still hears
    crew_ttl_seconds: int = 12 * 3600
    # Finished notices (sent, failed, expired, unknown) older than this are deleted by the
    # daily upkeep (server/housekeeping.py; 0: kept).
    keep_days: float = 30.0


@dataclass(frozen=True, slots=True)
class ResidentSettings:
    """The resident pages: reporting limits and the map."""

    reports_per_minute_per_client: int = 6  # per client address and server process
    reports_per_minute_total: int = 120  # across every worker and host (counted in the database)
    tiles_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    tiles_attribution: str = "© OpenStreetMap contributors"


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """The change feed's upkeep (server/housekeeping.py)."""

    # How often the feed is compacted, by whichever worker finds it due first (0: never;
    # `fieldwork sync compact` still works by hand).
    compact_every_hours: float = 24.0
    # What stays uncompacted: a phone offline longer than this primes again.
    keep_days: float = 7.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Load limits of one worker process (the overload policy, README "Running under load")."""

    # Requests served at once (each in one thread with at most one connection at a time).
    threads: int = DEFAULT_THREADS
    # Requests allowed to wait for a thread; one more gets 503 at once.
    queue_limit: int = 1000
    # A request that has waited this long for a thread gets 503 with Retry-After.
    queue_timeout: float = 15.0


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    push: PushSettings = field(default_factory=PushSettings)
    resident: ResidentSettings = field(default_factory=ResidentSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    public_url: str = DEFAULT_PUBLIC_URL
    debug: bool = False
    # The PWA's static files (None: the pwa/ folder beside server/), e.g. a city's own copy.
    pwa_dir: Path | None = None


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: dict[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, *, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


def check_zone(raw: str, *, name: str) -> str:
    """`raw` if it is an IANA time zone this machine knows; else a ValueError naming `name`
    (the setting or option it came from), not a ZoneInfoNotFoundError from deep in an import."""
    zone = raw.strip()
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name} must be a time zone name such as America/Chicago or America/New_York, "
                         f"not {raw!r}") from None
    return zone


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Build settings from ``FIELDWORK_*`` variables (unset ones keep their defaults)."""
    env = dict(os.environ if env is None else env)
    get = env.get
    server = ServerSettings(
        threads=_int(env, "FIELDWORK_THREADS", DEFAULT_THREADS, low=1, high=256),
        queue_limit=_int(env, "FIELDWORK_QUEUE_LIMIT", ServerSettings().queue_limit, low=0, high=1_000_000),
        queue_timeout=_float(env, "FIELDWORK_QUEUE_TIMEOUT", ServerSettings().queue_timeout, low=0.1, high=600),
    )
    database = DatabaseSettings(
        url=get("FIELDWORK_DATABASE_URL") or DatabaseSettings().url,
        echo=_bool(get("FIELDWORK_DATABASE_ECHO"), False),
        migrate_on_start=_bool(get("FIELDWORK_MIGRATE_ON_START"), True),
        pool_size=_int(env, "FIELDWORK_DB_POOL_SIZE", server.threads + POOL_RESERVE, low=server.threads + 1,
                       high=1000),
        pool_timeout=_float(env, "FIELDWORK_DB_POOL_TIMEOUT", DatabaseSettings().pool_timeout, low=0.1, high=600),
    )
    auth_kwargs: dict[str, object] = {}
    if get("FIELDWORK_AUTH_SECRET"):
        auth_kwargs["secret"] = get("FIELDWORK_AUTH_SECRET")
    if get("FIELDWORK_PASSWORD_COST"):
        auth_kwargs["password_cost"] = env["FIELDWORK_PASSWORD_COST"].strip()
    if get("FIELDWORK_TOKEN_MINUTES"):
        auth_kwargs["token_minutes"] = int(env["FIELDWORK_TOKEN_MINUTES"])
    if get("FIELDWORK_OPEN311_API_KEYS"):
        keys = tuple(k.strip() for k in env["FIELDWORK_OPEN311_API_KEYS"].split(",") if k.strip())
        auth_kwargs["open311_api_keys"] = keys
    if get("FIELDWORK_OPEN311_CORS_ORIGINS"):
        origins = tuple(o.strip().rstrip("/") for o in env["FIELDWORK_OPEN311_CORS_ORIGINS"].split(",") if o.strip())
        auth_kwargs["open311_cors_origins"] = origins
    config = get("FIELDWORK_SERVICE_TYPES")
    intake = IntakeSettings(
        timezone=check_zone(env["FIELDWORK_TIMEZONE"], name="FIELDWORK_TIMEZONE") if get("FIELDWORK_TIMEZONE")
        else IntakeSettings().timezone,
        timezone_set=bool(get("FIELDWORK_TIMEZONE")),
        jurisdiction_id=get("FIELDWORK_JURISDICTION_ID") or IntakeSettings().jurisdiction_id,
        service_types_config=Path(config) if config else None,
    )
    push_defaults = PushSettings()
    push = PushSettings(
        vapid_private_key=get("FIELDWORK_VAPID_PRIVATE_KEY") or None,
        vapid_subject=get("FIELDWORK_VAPID_SUBJECT") or push_defaults.vapid_subject,
        allow_loopback_http=_bool(get("FIELDWORK_PUSH_ALLOW_LOOPBACK_HTTP"), False),
        run_sender=_bool(get("FIELDWORK_PUSH_SENDER"), True),
        poll_seconds=float(get("FIELDWORK_PUSH_POLL_SECONDS") or push_defaults.poll_seconds),
        lease_seconds=float(get("FIELDWORK_PUSH_LEASE_SECONDS") or push_defaults.lease_seconds),
        retry_base_seconds=float(get("FIELDWORK_PUSH_RETRY_BASE_SECONDS") or push_defaults.retry_base_seconds),
        encryption_processes=_int(env, "FIELDWORK_PUSH_ENCRYPTION_PROCESSES", push_defaults.encryption_processes,
                                  low=0, high=64),
        concurrency=_int(env, "FIELDWORK_PUSH_CONCURRENCY", push_defaults.concurrency, low=2, high=1024),
        keep_days=_float(env, "FIELDWORK_PUSH_KEEP_DAYS", push_defaults.keep_days, low=0, high=3650),
    )
    resident_defaults = ResidentSettings()
    resident = ResidentSettings(
        reports_per_minute_per_client=int(
            get("FIELDWORK_REPORTS_PER_MINUTE_PER_CLIENT") or resident_defaults.reports_per_minute_per_client
        ),
        reports_per_minute_total=int(
            get("FIELDWORK_REPORTS_PER_MINUTE_TOTAL") or resident_defaults.reports_per_minute_total
        ),
        tiles_url=get("FIELDWORK_MAP_TILES_URL") or resident_defaults.tiles_url,
        tiles_attribution=get("FIELDWORK_MAP_TILES_ATTRIBUTION") or resident_defaults.tiles_attribution,
    )
    sync = SyncSettings(
        compact_every_hours=_float(env, "FIELDWORK_SYNC_COMPACT_EVERY_HOURS", SyncSettings().compact_every_hours,
                                   low=0, high=24 * 365),
        keep_days=_float(env, "FIELDWORK_SYNC_KEEP_DAYS", SyncSettings().keep_days, low=0, high=3650),
    )
    return Settings(
        database=database,
        server=server,
        auth=AuthSettings(**auth_kwargs),  # type: ignore[arg-type]
        intake=intake,
        push=push,
        resident=resident,
        sync=sync,
        public_url=get("FIELDWORK_PUBLIC_URL") or DEFAULT_PUBLIC_URL,
        debug=_bool(get("FIELDWORK_DEBUG"), False),
        pwa_dir=Path(get("FIELDWORK_PWA_DIR", "")) if get("FIELDWORK_PWA_DIR") else None,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return settings_from_env()

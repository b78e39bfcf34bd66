"""The application factory: it only assembles. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import swagger_ui_bundle
import xstatic.pkg.leaflet as xstatic_leaflet
from litestar import Litestar, get
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from sqlalchemy import Engine

from server.admission import Admission, AdmissionMiddleware
from server.auth import auth_router, build_auth, passwords
from server.auth.api import SIGN_IN_RATE_LIMIT
from server.auth.tokens import close_token_readers
from server.bodydrain import BodyDrainMiddleware
from server.crewsync.api import build_engine, sync_router
from server.crewsync.events import EventHub
from server.db import create_db_engine, migrate
from server.dispatch import dispatch_router
from server.errors import domain_exception_handlers
from server.housekeeping import run_housekeeping
from server.jsonbody import BoundedJSONRequest
from server.notify.api import push_router
from server.notify.sender import Sender
from server.open311 import open311_router
from server.residents.api import REPORT_RATE_LIMIT_STORE, build_resident_router
from server.settings import Settings, get_settings
from server.sharedstate import DatabaseStore, load_or_create_secret
from server.workflow import workflow
from server.workorders import workorders_router

__all__ = ["create_app", "PWA_DIR"]

PWA_DIR = Path(__file__).resolve().parent.parent / "pwa"
log = logging.getLogger("fieldwork")


def _lifespan(settings: Settings):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_db_engine(settings.database)
        # The threads that run synchronous handlers and every unit of database work: one per
        # admitted request (server/admission.py), each with its own pooled connection.
        threads = ThreadPoolExecutor(max_workers=settings.server.threads, thread_name_prefix="fieldwork")
        asyncio.get_running_loop().set_default_executor(threads)
        if settings.database.migrate_on_start:
            migrate(engine)
        app.state.engine = engine
        if settings.auth.secret is None:  # every worker and host reads the same one
            secret = load_or_create_secret(engine)
            app.state.settings = replace(settings, auth=replace(settings.auth, secret=secret))
        app.state.admission = Admission.of(settings.server)
        app.state.event_hub = EventHub(engine)
        # Push notices leave through the outbox: this worker sends its share of them.
        stop_sender = asyncio.Event()
        sender_task = (
            asyncio.create_task(Sender(engine, settings.push).run(stop_sender), name="push-sender")
            if settings.push.run_sender else None
        )
        # The sync feed's compaction and the push outbox's purge, done by whichever worker
        # finds them due (server/housekeeping.py).
        housekeeping = asyncio.create_task(run_housekeeping(engine, settings.sync, settings.push, stop_sender),
                                           name="housekeeping")
        try:
            yield
        finally:
            stop_sender.set()
            await housekeeping
            if sender_task is not None:
                try:
                    await asyncio.wait_for(sender_task, timeout=settings.push.timeout_seconds + 5)
                except (TimeoutError, asyncio.CancelledError):
                    log.warning("push sender did not stop in time; its claims return to the queue after their lease")
            await app.state.event_hub.close()
            await close_token_readers(app.state)
            engine.dispose()

    return lifespan


def provide_database(state: State) -> Engine:
    """The database: open a session on it with `read_session` / `write_session` (server.db)."""
    engine: Engine = state.engine
    return engine


def provide_settings(state: State) -> Settings:
    return state.settings


@get("/healthz", operation_id="health", include_in_schema=False, sync_to_thread=False)
def health() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}


def _admit_first(app_config: AppConfig) -> AppConfig:
    # Outermost: the body drain (server/bodydrain.py), then admission, then authentication.
    app_config.middleware[0:0] = [BodyDrainMiddleware(), AdmissionMiddleware()]
    return app_config


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    passwords.configure(settings.auth.password_cost)
    auth = build_auth(settings)
    state = State({"settings": settings, "sync_engine": build_engine()})
    pwa = create_static_files_router(
        path="/", directories=[settings.pwa_dir or PWA_DIR], html_mode=True, name="pwa", include_in_schema=False
    )
    leaflet = create_static_files_router(
        path="/vendor/leaflet", directories=[Path(xstatic_leaflet.BASE_DIR)], name="leaflet",
        include_in_schema=False,
    )
    # API docs work on a network with no CDN: Swagger UI is served from its pip package.
    swagger = create_static_files_router(
        path="/vendor/swagger-ui", directories=[Path(swagger_ui_bundle.swagger_ui_path)], name="swagger-ui",
        include_in_schema=False,
    )
    return Litestar(
        route_handlers=[
            health, auth_router, workorders_router, dispatch_router, open311_router, sync_router,
            push_router, workflow, *build_resident_router(settings), leaflet, swagger, pwa,
        ],
        dependencies={
            "database": Provide(provide_database, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        lifespan=[_lifespan(settings)],
        request_class=BoundedJSONRequest,
        # Admission goes outermost, after authentication put itself first: the token check
        # reads the database too, so it waits its turn like the rest.
        on_app_init=[auth.on_app_init, _admit_first],
        exception_handlers=domain_exception_handlers,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="Fieldwork",
            version="0.1.0",
            path="/api/docs",
            render_plugins=[
                SwaggerRenderPlugin(
                    js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
                    css_url="/vendor/swagger-ui/swagger-ui.css",
                    standalone_preset_js_url="/vendor/swagger-ui/swagger-ui-standalone-preset.js",
                    path="/",
                )
            ],
        ),
        state=state,
        # Sign-in attempts and residents' reports per client address are counted in the
        # database: every worker and host sees the same count (the store resolves the engine
        # from `state`).
        stores={
            SIGN_IN_RATE_LIMIT.store: DatabaseStore(state, namespace="rate-limit"),
            REPORT_RATE_LIMIT_STORE: DatabaseStore(state, namespace="resident-reports"),
        },
        logging_config=LoggingConfig(
            root={"level": "INFO", "handlers": ["queue_listener"]},
            log_exceptions="always",
            disable_stack_trace={400, 401, 403, 404, 405, 409, 413, 422, 429},
        ),
        debug=settings.debug,
    )

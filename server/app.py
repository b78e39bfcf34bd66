"""The application factory: it only assembles. Nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import swagger_ui_bundle
import xstatic.pkg.leaflet as xstatic_leaflet
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from sqlalchemy import Engine
from sqlmodel import Session

from server.auth import auth_router, build_auth
from server.crewsync.api import build_engine, sync_router
from server.crewsync.events import EventHub
from server.dispatch import dispatch_router
from server.db import create_db_engine, migrate, writer
from server.errors import domain_exception_handlers
from server.open311 import open311_router
from server.settings import Settings, get_settings
from server.workorders import workorders_router

__all__ = ["create_app", "PWA_DIR"]

PWA_DIR = Path(__file__).resolve().parent.parent / "pwa"
log = logging.getLogger("fieldwork")


def _lifespan(settings: Settings):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_db_engine(settings.database)
        if settings.database.migrate_on_start:
            migrate(engine)
        app.state.engine = engine
        app.state.event_hub = EventHub(engine)
        try:
            yield
        finally:
            await app.state.event_hub.close()
            engine.dispose()

    return lifespan


def provide_db(state: State) -> Iterator[Session]:
    """A read session per request."""
    engine: Engine = state.engine
    with Session(engine, expire_on_commit=False) as session:
        yield session


async def provide_db_write(state: State) -> AsyncIterator[Session]:
    """A write session per request: committed after the handler, rolled back on error.

    Async, so that the commit runs in AnyIO's worker threads. Litestar runs a sync
    dependency's cleanup in the same executor as sync handlers (6 threads on 2 cores):
    under load every one of them can be a handler waiting for the lock this uncommitted
    transaction holds (SQLite's writer lock, or a pooled connection), and nothing moves.
    """
    engine: Engine = state.engine
    session = Session(writer(engine), expire_on_commit=False)
    try:
        yield session
    except BaseException:
        await anyio.to_thread.run_sync(session.rollback)
        raise
    else:
        await anyio.to_thread.run_sync(session.commit)
    finally:
        await anyio.to_thread.run_sync(session.close)


def provide_settings(state: State) -> Settings:
    return state.settings  # type: ignore[no-any-return]


@get("/healthz", operation_id="health", include_in_schema=False, sync_to_thread=False)
def health() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    auth = build_auth(settings)
    pwa = create_static_files_router(
        path="/", directories=[PWA_DIR], html_mode=True, name="pwa", include_in_schema=False
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
            leaflet, swagger, pwa,
        ],
        dependencies={
            "db": Provide(provide_db),
            "db_write": Provide(provide_db_write),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        lifespan=[_lifespan(settings)],
        on_app_init=[auth.on_app_init],
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
        state=State({"settings": settings, "sync_engine": build_engine()}),
        logging_config=LoggingConfig(
            root={"level": "INFO", "handlers": ["queue_listener"]},
            log_exceptions="always",
            disable_stack_trace={400, 401, 403, 404, 405, 409, 413, 422, 429},
        ),
        debug=settings.debug,
    )

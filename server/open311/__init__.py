"""Open311 GeoReport v2 server (with mySociety's servicerequestupdates) under /open311/v2.

    render.py   the spec's response shapes, rendered as JSON or XML
    service.py  queries, validation and intake, as plain functions over a session
    api.py      thin Litestar handlers and the router (`open311_router`)
"""

from server.open311.api import open311_router

__all__ = ["open311_router"]

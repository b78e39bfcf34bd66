"""HTTP manners of the Open311 endpoint that a real client expects: HEAD on every GET
resource, OPTIONS naming the methods of each resource, and CORS for the web origins the
city allows (`AuthSettings.open311_cors_origins`, FIELDWORK_OPEN311_CORS_ORIGINS).

HEAD answers exactly what GET would (status and headers, Content-Length included) without
the body: the request is dispatched again as a GET through the application's router, so
the two can never drift apart.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server.settings import Settings

__all__ = ["CorsMiddleware", "HeadAsGet", "allowed_origin", "options_response"]

# Request headers a browser may send cross-origin (beyond the CORS-safelisted ones).
ALLOWED_HEADERS = "Accept, Accept-Language, Content-Type"
PREFLIGHT_MAX_AGE = 600  # seconds a browser may keep a preflight answer


def allowed_origin(settings: Settings, origin: str | None) -> str | None:
    """The value of Access-Control-Allow-Origin for this Origin, or None (not allowed)."""
    if not origin:
        return None
    allowed = settings.auth.open311_cors_origins
    if "*" in allowed:
        return "*"
    return origin if origin.rstrip("/") in allowed else None


def _settings(scope: Scope) -> Settings:
    settings: Settings = scope["app"].state.settings
    return settings


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class CorsMiddleware:
    """Adds Access-Control-Allow-Origin (and Vary: Origin) to every Open311 response, errors
    included, when the request's Origin is allowed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            await self.app(scope, receive, send)
            return
        origin = allowed_origin(_settings(scope), _header(scope, b"origin"))

        async def send_with_cors(message: Message) -> None:
            # (a HEAD passes here twice: as itself and as the GET it is served as)
            if message["type"] == "http.response.start" and not any(
                k.lower() == b"access-control-allow-origin" for k, _ in message.get("headers", ())
            ):
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"vary"]
                vary = {v for k, v in message.get("headers", ()) if k.lower() == b"vary"}
                headers.append((b"vary", b", ".join(sorted(vary | {b"Origin"}))))
                if origin is not None:
                    headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)


class HeadAsGet:
    """Middleware of the HEAD handlers: serve the request as a GET through the application's
    router and send its status and headers without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        as_get: Any = {**scope, "method": "GET"}

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of a streamed body: dropped
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await scope["app"].asgi_router(as_get, receive, headers_only)


def options_response(request: Request[Any, Any, Any], methods: list[str]) -> Response[None]:
    """204 naming the methods of the resource; a CORS preflight from an allowed origin is
    answered with what it may send."""
    allow = ", ".join([*methods, "HEAD", "OPTIONS"] if "GET" in methods else [*methods, "OPTIONS"])
    headers = {"Allow": allow}
    origin = allowed_origin(request.app.state.settings, request.headers.get("origin"))
    if origin is not None and request.headers.get("access-control-request-method"):
        headers.update({
            "Access-Control-Allow-Methods": allow,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
        })
    return Response(content=None, status_code=204, headers=headers)

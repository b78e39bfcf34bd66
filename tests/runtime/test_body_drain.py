"""The request body is read before any answer starts, also when a middleware further in
answers with an error (a rate limit's 429): else Hypercorn may close the keep-alive
connection under the client's next request (server/bodydrain.py). Driven at the ASGI level
so the order of reads and writes is seen exactly."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, post
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import JSONBody

from server.bodydrain import BodyDrainMiddleware
from tests.runtime.support import run_in_own_loop


@post("/reports", status_code=201)
async def report(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return data


def app() -> Litestar:
    limiter = RateLimitConfig(rate_limit=("minute", 1))
    return Litestar(route_handlers=[report], middleware=[BodyDrainMiddleware(), limiter.middleware])


def post_in_two_chunks(application: Litestar) -> list[str]:
    """POST a JSON body in two chunks; what the app read and wrote, in order."""
    events: list[str] = []
    chunks = [b'{"note": "pothole', b' by the bus stop"}']

    async def receive() -> dict[str, Any]:
        if not chunks:
            events.append("disconnect")
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        events.append("body" if chunks else "body end")
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            events.append(f"answer {message['status']}")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/reports", "raw_path": b"/reports", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }
    run_in_own_loop(application(scope, receive, send))  # type: ignore[arg-type]
    return events


def test_an_error_from_a_middleware_further_in_waits_for_the_body() -> None:
    application = app()
    assert post_in_two_chunks(application) == ["body", "body end", "answer 201"]
    # The limit is reached: the limiter answers 429 without reading the body, and the
    # body is still read before that answer starts.
    assert post_in_two_chunks(application) == ["body", "body end", "answer 429"]

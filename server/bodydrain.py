"""Answer only after the request body is read, so keep-alive connections survive early answers.

The cause, in Hypercorn 0.18's HTTP/1.1 stream: the connection's reader hands body chunks to
the app through a bounded queue (`max_app_queue_size`, 10) with a blocking `put`, and when
the response is complete it puts `http.disconnect` on the same queue, also blocking. An app
that answers before reading the whole body (Litestar's 413 for a body over the route's
limit, or any error raised before the body is read) leaves the queue full: the reader
waits for room, the app's last `send()` waits to put `http.disconnect`, and the
connection hangs for good with the request's task (and its admission slot) stuck in it.
The client's next request on that keep-alive connection never gets an answer.

So, before any response starts, the rest of the request body is read and dropped (at most
DRAIN_MAX_BYTES, for at most DRAIN_SECONDS): then the connection is in a clean state and
carries the next request. That includes errors raised by middleware further in (a rate
limit's 429): Litestar's outermost exception handler answers those, past this middleware's
`send`, so the body is read as the error passes through. A body too large or too slow to
drop gets its answer with `Connection: close`, and the body is drained in the background
until Hypercorn closes the connection, so nothing waits on a full queue.
"""

from __future__ import annotations

import asyncio
import contextlib

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

__all__ = ["DRAIN_MAX_BYTES", "DRAIN_SECONDS", "BodyDrainMiddleware"]

DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 5.0
_background: set[asyncio.Task[None]] = set()  # strong references until each drain ends


class BodyDrainMiddleware(ASGIMiddleware):
    """Reads what is left of a request body before the response starts (see the module doc)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        finished = False  # the whole body has been received, or the client is gone
        started = False  # the response has started

        async def tracked_receive() -> ReceiveMessage:
            nonlocal finished
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                finished = True
            return message

        async def send_after_body(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not finished and not await _drain(tracked_receive):
                    headers = [*message.get("headers", ()), (b"connection", b"close")]
                    message = {**message, "headers": headers}
                    _drain_in_background(tracked_receive)
            await send(message)

        try:
            await next_app(scope, tracked_receive, send_after_body)
        except Exception:
            # An error raised by a middleware further in (a rate limit's 429, say) is answered
            # by Litestar's outermost exception handler, with the `send` it holds, not ours:
            # read the body here before it does.
            if not started and not finished and not await _drain(tracked_receive):
                _drain_in_background(tracked_receive)
            raise


def _drain_in_background(receive: Receive) -> None:
    task = asyncio.create_task(_drain_until_closed(receive))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _drain(receive: Receive) -> bool:
    """Read and drop the rest of the body; False if it is too large or too slow."""
    dropped = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return True
                dropped += len(message.get("body", b""))  # type: ignore[arg-type]
                if not message.get("more_body", False):
                    return True
                if dropped > DRAIN_MAX_BYTES:
                    return False
    except TimeoutError:
        return False


async def _drain_until_closed(receive: Receive) -> None:
    with contextlib.suppress(Exception):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return

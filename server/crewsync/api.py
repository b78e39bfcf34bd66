"""The sync protocol over HTTP, for signed-in crew members (see DESIGN.md "Sync").

    POST /sync/v1/push             apply a batch of the device's queued mutations
    POST /sync/v1/pull             changes in the crew's scope after a cursor
    GET  /sync/v1/events           Server-Sent Events that only say "pull now"
    PUT  /sync/v1/blobs/{sha256}   content-addressed photo upload (idempotent)
    HEAD /sync/v1/blobs/{sha256}   is it there?
    GET  /sync/v1/blobs/{sha256}   the photo (crews and dispatchers)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

from litestar import Request, Response, Router, get, head, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, RawBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.security.jwt import Token
from msgspec import Struct
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.auth.guards import current_user, requires_role
from server.auth.tokens import AuthUser
from server.crewsync.loaders import DELTA_LOADERS, LOADERS
from server.crewsync.mutators import build_registry
from server.crewsync.photos import MAX_PHOTO_BYTES, PHOTO_FORMATS, clean_photo
from server.db import read_session, write_session
from server.errors import NotFound, ValidationFailed
from server.models import Blob, BlobRef, WorkOrder
from server.workorders.changes import REFERENCE_SCOPE, crew_scope
from sync import PullRequest, PullResponse, PushRequest, PushResponse, SyncEngine

__all__ = ["BLOB_TYPES", "MAX_BLOB_BYTES", "MAX_PUSH_BYTES", "build_engine", "sync_router"]

MAX_PUSH_BYTES = 1_000_000
MAX_BLOB_BYTES = MAX_PHOTO_BYTES
BLOB_TYPES = frozenset(PHOTO_FORMATS)
ViewerRequest = Request[AuthUser, Token, State]


def build_engine() -> SyncEngine:
    return SyncEngine(registry=build_registry(), loaders=LOADERS, delta_loaders=DELTA_LOADERS,
                      min_schema_version=1, max_schema_version=1)


def _scopes(user: AuthUser) -> list[str]:
    assert user.crew_id is not None  # the crew guard makes sure
    return [crew_scope(user.crew_id), REFERENCE_SCOPE]


class BlobStored(Struct):
    sha256: str
    size: int
    content_type: str
    created: bool


crew_only = requires_role("crew")


@post("/push", operation_id="syncPush", request_max_body_size=MAX_PUSH_BYTES, sync_to_thread=True,
      status_code=200, guards=[crew_only])
def push(request: ViewerRequest, data: JSONBody[PushRequest]) -> PushResponse:
    """Apply queued mutations; effects, results and the acknowledged seq commit together."""
    user = current_user(request)
    engine: SyncEngine = request.app.state.sync_engine
    # Its own transaction, committed in this thread (see server.db.write_session).
    with write_session(request.app.state.engine) as session:
        return engine.push(session, user_key=str(user.id), actor=user, request=data)


@post("/pull", operation_id="syncPull", request_max_body_size=16_000, sync_to_thread=True, status_code=200,
      guards=[crew_only])
def pull(request: ViewerRequest, data: JSONBody[PullRequest]) -> PullResponse:
    """Changes in the crew's scope after the cursor (an empty cursor primes a new device)."""
    user = current_user(request)
    engine: SyncEngine = request.app.state.sync_engine
    database = request.app.state.engine
    with read_session(database) as session:  # a pull only reads: it never waits for a writer
        is_new = engine.is_new_client(session, client_id=data.client_id, user_key=str(user.id))
        response = engine.pull(session, user_key=str(user.id), actor=user, scopes=_scopes(user),
                               request=data, bind=False)
    if is_new:
        with write_session(database) as session:
            engine.bind_client(session, client_id=data.client_id, user_key=str(user.id))
    return response


@get("/events", operation_id="syncEvents", guards=[crew_only])
async def events(request: ViewerRequest) -> ServerSentEvent:
    """A stream of "pull now" hints; a comment every 15 s keeps proxies from closing it."""
    user = current_user(request)
    hub = request.app.state.event_hub
    scopes = _scopes(user)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        seen = hub.mark()  # the device pulls after this hint: news from now on is new
        yield ServerSentEventMessage(event="pull", data="pull", retry=5000)
        while True:
            if await hub.wait(scopes, timeout=15.0, since=seen):
                seen = hub.mark()
                yield ServerSentEventMessage(event="pull", data="pull")
            else:
                yield ServerSentEventMessage(comment="still here")

    return ServerSentEvent(stream())


def _check_hash(sha256: str) -> str:
    value = sha256.lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValidationFailed("the path must be a sha256 in hex (64 characters)", field="sha256")
    return value


@put("/blobs/{sha256:str}", operation_id="syncPutBlob", request_max_body_size=MAX_BLOB_BYTES,
     sync_to_thread=True, guards=[crew_only])
def put_blob(
    request: ViewerRequest,
    sha256: FromPath[str],
    body: RawBody,
    content_type: Annotated[str, HeaderParameter(name="Content-Type")],
    database: NamedDependency[Engine],
) -> Response[BlobStored]:
    """Store a photo under its sha256 (decoded, bounded, metadata stripped); the same bytes again change nothing."""
    expected = _check_hash(sha256)
    media = content_type.split(";")[0].strip().lower()
    if media not in BLOB_TYPES:
        raise ValidationFailed(f"photos must be one of {', '.join(sorted(BLOB_TYPES))}", field="Content-Type")
    data = bytes(body)
    if not data:
        raise ValidationFailed("the body is empty", field="body")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValidationFailed(f"the body's sha256 is {actual}, not the one in the path", field="sha256")
    with write_session(database) as db:
        existing = db.get(Blob, expected)
        if existing is not None:
            return Response(BlobStored(expected, existing.size, existing.content_type, False), status_code=200)
        photo = clean_photo(data, media)
        db.add(Blob(sha256=expected, content_type=photo.content_type, size=len(photo.data), data=photo.data,
                    uploaded_by=current_user(request).id))
    return Response(BlobStored(expected, len(photo.data), media, True), status_code=201)


def _visible_blob(session: Session, user: AuthUser, sha256: str) -> Blob | None:
    """The photo, if `user` may see it: its uploader, or whoever can see a work order that
    refers to it (dispatchers and admins: any live one; a crew: its own)."""
    blob = session.get(Blob, sha256)
    if blob is None or blob.uploaded_by == user.id:
        return blob
    query = (select(BlobRef.sha256).join(WorkOrder, WorkOrder.id == BlobRef.work_order_id)  # type: ignore[arg-type]
             .where(BlobRef.sha256 == sha256, WorkOrder.deleted_at.is_(None)))  # type: ignore[union-attr]
    if user.role == "crew":
        if user.crew_id is None:
            return None
        query = query.where(WorkOrder.crew_id == user.crew_id)
    return blob if session.exec(query.limit(1)).first() is not None else None


@head("/blobs/{sha256:str}", operation_id="syncHeadBlob", sync_to_thread=True)
def head_blob(request: ViewerRequest, sha256: FromPath[str], database: NamedDependency[Engine]) -> Response[None]:
    """200 if the photo is stored and yours to see, else 404."""
    with read_session(database) as db:
        blob = _visible_blob(db, current_user(request), _check_hash(sha256))
    if blob is None:
        return Response(None, status_code=404)
    return Response(None, status_code=200, headers={"X-Blob-Size": str(blob.size), "X-Blob-Type": blob.content_type})


@get("/blobs/{sha256:str}", operation_id="syncGetBlob", sync_to_thread=True)
def get_blob(request: ViewerRequest, sha256: FromPath[str], database: NamedDependency[Engine]) -> Response[bytes]:
    """The photo's bytes, for users who can see a work order that refers to it."""
    with read_session(database) as db:
        blob = _visible_blob(db, current_user(request), _check_hash(sha256))
    if blob is None:
        raise NotFound("no photo with that sha256", field="sha256")
    return Response(blob.data, media_type=blob.content_type,
                    headers={"Cache-Control": "private, max-age=31536000, immutable"})


sync_router = Router(
    path="/sync/v1",
    route_handlers=[push, pull, events, put_blob, head_blob, get_blob],
    guards=[requires_role("crew", "dispatcher", "admin")],
    tags=["sync"],
)

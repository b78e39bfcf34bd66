"""The dispatcher console's API (dispatcher or admin), under /api/dispatch:

    GET    /board                       filtered list, keyset pages (cursor)
    GET    /map                         a city's matching work as arrays (ETag: feed position)
    GET    /export.csv, /export.geojson every matching row, streamed page by page
    GET    /stats                       open/closed by district and type, SLA, median time to close
    GET    /live                        Server-Sent Events from the change feed
    GET    /alerts                      emergency alerts, with the words that raised them
    GET    /workorders/{id}             detail: cases with contacts, timeline, facts, conflicts
    GET    /workorders/{id}/suggest     crews best first, each with its reason
    POST   /workorders/{id}/split       a wrongly merged case becomes a job of its own
    POST   /merge                       fold one work order into another
    GET    /crews                       each crew's load against its capacity
    POST   /crews/{id}/check            the load after a bulk assign (the overload warning)
    GET    /crews/{id}/route            the crew's open jobs in route order
    PUT    /crews/{id}/route            drag-and-drop order
    POST   /crews/{id}/route/optimise   nearest neighbour + 2-opt, saved
    GET    /unlocated                   open cases with no point, with a suggested position
    POST   /unlocated/{case_id}/place   put a case on the map: the rest of intake runs
    GET    /queue/conflicts             conflicts naming the crew, the user and the job number
    PATCH  /api/dispatch/workorders/{id}                 crew, status, priority, due, notes (version: 409 if stale)
    POST   /api/dispatch/assign                          assign many at once (versions, force)
    DELETE /api/dispatch/workorders/{id}                 remove a job (its history stays)
    GET    /api/dispatch/conflicts                       crews' edits that lost, kept for review
    POST   /api/dispatch/conflicts/{id}/resolve          keep_server | take_client
    GET    /api/dispatch/rejections                      crews' edits that could not apply
    POST   /api/dispatch/rejections/{id}/resolve
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.security.jwt import Token
from sqlalchemy import Engine

from server.auth.guards import current_user, dispatcher_or_admin
from server.auth.tokens import AuthUser
from server.db import read_session, write_session
from server.dispatch.console_api import CONSOLE_HANDLERS
from server.dispatch.service import (
    assign_many,
    remove_work_order,
    resolve_conflict,
    resolve_rejection,
    update_work_order,
)
from server.params import AfterIdQuery, Count, Id, IdPath
from server.workorders.schemas import WorkOrderPublic
from server.workorders.service import get_work_order
from sync import review

__all__ = ["dispatch_router"]

ViewerRequest = Request[AuthUser, Token, State]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]


class WorkOrderPatch(msgspec.Struct, forbid_unknown_fields=True):
    crew_id: Id | msgspec.UnsetType | None = msgspec.UNSET
    status: str | None = None
    priority: Annotated[int, msgspec.Meta(ge=1, le=4)] | None = None
    notes: Annotated[str, msgspec.Meta(max_length=4000)] | msgspec.UnsetType = msgspec.UNSET
    notes_base_version: Count | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    version: Id | None = None  # the version the dispatcher saw: 409 if it is no longer current
    sla_due_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class AssignMany(msgspec.Struct, forbid_unknown_fields=True):
    work_order_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=500)]
    crew_id: Id | None
    versions: dict[Id, Id] | None = None  # work order id -> the version seen
    force: bool = True  # False: 409 with a warning if the crew would be overloaded
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class Resolution(msgspec.Struct, forbid_unknown_fields=True):
    resolution: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class ConflictPublic(msgspec.Struct):
    id: int
    kind: str
    client_id: str
    seq: int
    mutation: str
    entity: str
    entity_id: str
    field: str
    base_version: int | None
    server_value: Any
    client_value: Any
    status: str
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    created_at: datetime


class RejectionPublic(msgspec.Struct):
    id: int
    client_id: str
    user_key: str
    seq: int
    mid: str
    name: str
    args: Any
    device_ts: datetime | None
    reason: str
    status: str
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    created_at: datetime


def _conflict(row: Any) -> ConflictPublic:
    return ConflictPublic(
        id=row.id, kind=row.kind, client_id=row.client_id, seq=row.seq, mutation=row.name, entity=row.entity,
        entity_id=row.entity_id, field=row.field, base_version=row.base_version,
        server_value=row.server_value, client_value=row.client_value, status=row.status,
        resolution=row.resolution, resolved_by=row.resolved_by, resolved_at=row.resolved_at,
        created_at=row.created_at,
    )


def _rejection(row: Any) -> RejectionPublic:
    return RejectionPublic(
        id=row.id, client_id=row.client_id, user_key=row.user_key, seq=row.seq, mid=row.mid,
        name=row.name, args=row.args, device_ts=row.device_ts, reason=row.reason, status=row.status,
        resolution=row.resolution, resolved_by=row.resolved_by, resolved_at=row.resolved_at,
        created_at=row.created_at,
    )


@patch("/workorders/{work_order_id:int}", operation_id="updateWorkOrder", sync_to_thread=True)
def update(
    request: ViewerRequest, work_order_id: IdPath, data: JSONBody[WorkOrderPatch], database: NamedDependency[Engine]
) -> WorkOrderPublic:
    """Change a work order's crew, status, priority or shared notes."""
    user = current_user(request)
    change = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET and v is not None}
    if data.crew_id is None:
        change["crew_id"] = None
    with write_session(database) as db:
        update_work_order(db, user=user, work_order_id=work_order_id, change=change)
        return get_work_order(db, viewer=user, work_order_id=work_order_id)


@post("/assign", operation_id="assignWorkOrders", sync_to_thread=True, status_code=200)
def assign(request: ViewerRequest, data: JSONBody[AssignMany], database: NamedDependency[Engine]) -> list[WorkOrderPublic]:
    """Assign (or unassign, with crew_id null) several work orders at once."""
    user = current_user(request)
    with write_session(database) as db:
        orders = assign_many(db, user=user, work_order_ids=data.work_order_ids, crew_id=data.crew_id,
                             versions=data.versions, force=data.force, reason=data.reason)
        return [get_work_order(db, viewer=user, work_order_id=o.id) for o in orders]  # type: ignore[arg-type]


@delete("/workorders/{work_order_id:int}", operation_id="removeWorkOrder", sync_to_thread=True)
def remove(
    request: ViewerRequest, work_order_id: IdPath, database: NamedDependency[Engine],
    reason: FromQuery[str | None] = None,
) -> None:
    """Remove a job from every list and device; its history stays."""
    with write_session(database) as db:
        remove_work_order(db, user=current_user(request), work_order_id=work_order_id, reason=reason)


@get("/conflicts", operation_id="listSyncConflicts", sync_to_thread=True)
def conflicts(
    database: NamedDependency[Engine], status: FromQuery[str | None] = "open", limit: Limit = 100,
    after_id: AfterIdQuery = None,
) -> list[ConflictPublic]:
    """Crews' offline edits that lost against the server, with both values."""
    with read_session(database) as db:
        return [_conflict(r) for r in review.list_conflicts(db, status=status, limit=limit, after_id=after_id)]


@post("/conflicts/{conflict_id:int}/resolve", operation_id="resolveSyncConflict", sync_to_thread=True,
      status_code=200)
def resolve_one_conflict(
    request: ViewerRequest, conflict_id: IdPath, data: JSONBody[Resolution], database: NamedDependency[Engine]
) -> ConflictPublic:
    """keep_server, or take_client (applies the crew's value)."""
    with write_session(database) as db:
        row = resolve_conflict(db, user=current_user(request), conflict_id=conflict_id, resolution=data.resolution)
        return _conflict(row)


@get("/rejections", operation_id="listSyncRejections", sync_to_thread=True)
def rejections(
    database: NamedDependency[Engine], status: FromQuery[str | None] = "open", limit: Limit = 100,
    after_id: AfterIdQuery = None,
) -> list[RejectionPublic]:
    """Crews' offline edits that could not apply, with their whole payload."""
    with read_session(database) as db:
        return [_rejection(r) for r in review.list_rejections(db, status=status, limit=limit, after_id=after_id)]


@post("/rejections/{rejection_id:int}/resolve", operation_id="resolveSyncRejection", sync_to_thread=True,
      status_code=200)
def resolve_one_rejection(
    request: ViewerRequest, rejection_id: IdPath, data: JSONBody[Resolution], database: NamedDependency[Engine]
) -> RejectionPublic:
    """Record how a rejected edit was dealt with."""
    with write_session(database) as db:
        row = resolve_rejection(db, user=current_user(request), rejection_id=rejection_id,
                                resolution=data.resolution)
        return _rejection(row)


dispatch_router = Router(
    path="/api/dispatch",
    route_handlers=[update, assign, remove, conflicts, resolve_one_conflict, rejections, resolve_one_rejection,
                    *CONSOLE_HANDLERS],
    guards=[dispatcher_or_admin],
    tags=["dispatch"],
)

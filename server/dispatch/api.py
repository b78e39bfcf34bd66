"""Dispatchers' write routes (dispatcher or admin):

    PATCH  /api/dispatch/workorders/{id}                 crew, status, priority, shared notes
    POST   /api/dispatch/assign                          assign many at once
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
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.security.jwt import Token
from sqlmodel import Session

from server.auth.guards import current_user, dispatcher_or_admin
from server.auth.tokens import AuthUser
from server.dispatch.service import (
    assign_many,
    remove_work_order,
    resolve_conflict,
    resolve_rejection,
    update_work_order,
)
from server.workorders.schemas import WorkOrderPublic
from server.workorders.service import get_work_order
from sync import review

__all__ = ["dispatch_router"]

ViewerRequest = Request[AuthUser, Token, State]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]


class WorkOrderPatch(msgspec.Struct, forbid_unknown_fields=True):
    crew_id: int | None | msgspec.UnsetType = msgspec.UNSET
    status: str | None = None
    priority: Annotated[int, msgspec.Meta(ge=1, le=4)] | None = None
    notes: Annotated[str, msgspec.Meta(max_length=4000)] | msgspec.UnsetType = msgspec.UNSET
    notes_base_version: int | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class AssignMany(msgspec.Struct, forbid_unknown_fields=True):
    work_order_ids: Annotated[list[int], msgspec.Meta(min_length=1, max_length=500)]
    crew_id: int | None


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
    request: ViewerRequest, work_order_id: FromPath[int], data: JSONBody[WorkOrderPatch], db_write: NamedDependency[Session]
) -> WorkOrderPublic:
    """Change a work order's crew, status, priority or shared notes."""
    user = current_user(request)
    change = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET and v is not None}
    if data.crew_id is None:
        change["crew_id"] = None
    update_work_order(db_write, user=user, work_order_id=work_order_id, change=change)
    return get_work_order(db_write, viewer=user, work_order_id=work_order_id)


@post("/assign", operation_id="assignWorkOrders", sync_to_thread=True, status_code=200)
def assign(request: ViewerRequest, data: JSONBody[AssignMany], db_write: NamedDependency[Session]) -> list[WorkOrderPublic]:
    """Assign (or unassign, with crew_id null) several work orders at once."""
    user = current_user(request)
    orders = assign_many(db_write, user=user, work_order_ids=data.work_order_ids, crew_id=data.crew_id)
    return [get_work_order(db_write, viewer=user, work_order_id=o.id) for o in orders]  # type: ignore[arg-type]


@delete("/workorders/{work_order_id:int}", operation_id="removeWorkOrder", sync_to_thread=True)
def remove(
    request: ViewerRequest, work_order_id: FromPath[int], db_write: NamedDependency[Session],
    reason: FromQuery[str | None] = None,
) -> None:
    """Remove a job from every list and device; its history stays."""
    remove_work_order(db_write, user=current_user(request), work_order_id=work_order_id, reason=reason)


@get("/conflicts", operation_id="listSyncConflicts", sync_to_thread=True)
def conflicts(
    db: NamedDependency[Session], status: FromQuery[str | None] = "open", limit: Limit = 100,
    after_id: FromQuery[int | None] = None,
) -> list[ConflictPublic]:
    """Crews' offline edits that lost against the server, with both values."""
    return [_conflict(r) for r in review.list_conflicts(db, status=status, limit=limit, after_id=after_id)]


@post("/conflicts/{conflict_id:int}/resolve", operation_id="resolveSyncConflict", sync_to_thread=True,
      status_code=200)
def resolve_one_conflict(
    request: ViewerRequest, conflict_id: FromPath[int], data: JSONBody[Resolution], db_write: NamedDependency[Session]
) -> ConflictPublic:
    """keep_server, or take_client (applies the crew's value)."""
    row = resolve_conflict(db_write, user=current_user(request), conflict_id=conflict_id, resolution=data.resolution)
    return _conflict(row)


@get("/rejections", operation_id="listSyncRejections", sync_to_thread=True)
def rejections(
    db: NamedDependency[Session], status: FromQuery[str | None] = "open", limit: Limit = 100,
    after_id: FromQuery[int | None] = None,
) -> list[RejectionPublic]:
    """Crews' offline edits that could not apply, with their whole payload."""
    return [_rejection(r) for r in review.list_rejections(db, status=status, limit=limit, after_id=after_id)]


@post("/rejections/{rejection_id:int}/resolve", operation_id="resolveSyncRejection", sync_to_thread=True,
      status_code=200)
def resolve_one_rejection(
    request: ViewerRequest, rejection_id: FromPath[int], data: JSONBody[Resolution], db_write: NamedDependency[Session]
) -> RejectionPublic:
    """Record how a rejected edit was dealt with."""
    row = resolve_rejection(db_write, user=current_user(request), rejection_id=rejection_id,
                            resolution=data.resolution)
    return _rejection(row)


dispatch_router = Router(
    path="/api/dispatch",
    route_handlers=[update, assign, remove, conflicts, resolve_one_conflict, rejections, resolve_one_rejection],
    guards=[dispatcher_or_admin],
    tags=["dispatch"],
)

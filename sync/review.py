"""What dispatchers review: conflicts (a crew value that lost) and rejections (a mutation
that could not apply, with its whole payload). Resolving records who, when and how;
applying a chosen value is the server's job, through its own services."""

from __future__ import annotations

from typing import TypeVar

from sqlmodel import Session, select

from sync.errors import InvalidRequest
from sync.models import SyncConflict, SyncRejection, utcnow

__all__ = ["list_conflicts", "list_rejections", "resolve_conflict", "resolve_rejection"]

_R = TypeVar("_R", SyncConflict, SyncRejection)


def list_conflicts(session: Session, *, status: str | None = "open", limit: int = 100,
                   after_id: int | None = None) -> list[SyncConflict]:
    """Conflicts in id order (`status=None`: all), a page of `limit` after `after_id`."""
    return _list(session, SyncConflict, status, limit, after_id)


def list_rejections(session: Session, *, status: str | None = "open", limit: int = 100,
                    after_id: int | None = None) -> list[SyncRejection]:
    return _list(session, SyncRejection, status, limit, after_id)


def resolve_conflict(session: Session, conflict_id: int, *, resolution: str, resolved_by: str) -> SyncConflict:
    """Mark a conflict resolved. KeyError if there is none; InvalidRequest if already resolved."""
    return _resolve(session, SyncConflict, conflict_id, resolution, resolved_by)


def resolve_rejection(session: Session, rejection_id: int, *, resolution: str, resolved_by: str) -> SyncRejection:
    return _resolve(session, SyncRejection, rejection_id, resolution, resolved_by)


def _list(session: Session, model: type[_R], status: str | None, limit: int, after_id: int | None) -> list[_R]:
    query = select(model).order_by(model.id).limit(max(1, min(limit, 1000)))  # type: ignore[arg-type]
    if status is not None:
        query = query.where(model.status == status)
    if after_id is not None:
        query = query.where(model.id > after_id)  # type: ignore[operator]
    return list(session.exec(query))


def _resolve(session: Session, model: type[_R], row_id: int, resolution: str, resolved_by: str) -> _R:
    if not resolution.strip() or len(resolution) > 2000:
        raise InvalidRequest("resolution must be 1..2000 characters", field="resolution")
    row = session.exec(select(model).where(model.id == row_id).with_for_update()).first()
    if row is None:
        raise KeyError(f"no {model.__tablename__} {row_id}")
    if row.status == "resolved":
        raise InvalidRequest(f"{model.__tablename__} {row_id} is already resolved (by "
                             f"{row.resolved_by})", field="status")
    row.status, row.resolution, row.resolved_by, row.resolved_at = "resolved", resolution, resolved_by, utcnow()
    session.add(row)
    session.flush()
    return row

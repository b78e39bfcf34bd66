"""The console's routes beyond single changes (see the table in server.dispatch.api).

Thin handlers: parse, call a function of board / crews / queues / service, answer.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import anyio
import msgspec
from litestar import MediaType, Request, Response, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream
from litestar.security.jwt import Token
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from server.auth.guards import current_user
from server.auth.tokens import AuthUser
from server.db import read_session, write_session
from server.dispatch import board
from server.dispatch.board import BoardFilters, BoardItem, BoardPage, MapCache, Stats
from server.dispatch.crews import CrewLoad, LoadCheck, Suggestion, crew_loads, load_after, route_start, suggest_crews
from server.dispatch.queues import (
    Alert,
    RejectionItem,
    UnlocatedQueue,
    alerts,
    conflict_queue,
    detail,
    rejection_queue,
    unlocated_queue,
)
from server.dispatch.route import optimise, route_length
from server.dispatch.service import dispatcher_actor, merge, reorder_route, split
from server.errors import NotFound
from server.intake.pipeline import Pipeline
from server.models import Crew, WorkOrder, WorkOrderEvent
from server.params import AfterIdQuery, Id, IdPath
from server.readcache import answer_key, cached_json, request_position, viewer_scope
from server.workorders.api import provide_filters
from server.workorders.service import WorkOrderFilters
from sync import UnknownCursor, current_cursor, read_feed

__all__ = ["CONSOLE_HANDLERS"]

ViewerRequest = Request[AuthUser, Token, State]
_MAP_CACHE = MapCache()


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def provide_board_filters(
    filters: NamedDependency[WorkOrderFilters],
    since: Annotated[datetime | None, QueryParameter(description="first reported at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, QueryParameter(description="first reported before (ISO 8601)")] = None,
) -> BoardFilters:
    """The work-order filters, a date range, and a search that also finds the city's request number."""
    return BoardFilters(base=filters, since=_utc(since), until=_utc(until), q=filters.q)


_FILTERS = {
    "filters": Provide(provide_filters, sync_to_thread=False),
    "board_filters": Provide(provide_board_filters, sync_to_thread=False),
}


@get("/board", operation_id="dispatchBoard", dependencies=_FILTERS)
async def board_list(
    request: ViewerRequest, board_filters: NamedDependency[BoardFilters],
    limit: Annotated[int, QueryParameter(ge=1, le=board.BOARD_MAX)] = 100,
    cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Response[BoardPage]:
    """A page of matching work orders, newest first."""
    # The engine from the app's state, not as a dependency: with two dependencies Litestar
    # resolves them in a task group, a tenth of a cached answer's cost.
    database: Engine = request.app.state.engine
    viewer = current_user(request)
    position = request_position(request.scope["state"])
    # Dispatchers and admins only (the router's guard); the viewer's scope keeps it so anyway.
    key = answer_key("board", position, viewer_scope(viewer.role, viewer.crew_id), board_filters.key(), limit, cursor)

    def read(db: Session) -> BoardPage:
        return board.board_page(db, filters=board_filters, limit=limit, cursor=cursor)

    body = await cached_json(request.app.state, database, key, position, read)
    # The bytes are an encoded BoardPage: the annotation documents the schema.
    return cast("Response[BoardPage]", Response(body, media_type=MediaType.JSON))


@get("/map", operation_id="dispatchMap", dependencies=_FILTERS, sync_to_thread=True)
def map_points(
    request: ViewerRequest, database: NamedDependency[Engine], board_filters: NamedDependency[BoardFilters],
) -> Response[bytes]:
    """Every matching work order as parallel arrays; unchanged since the client's copy → 304."""
    board_filters.clauses(datetime.now(UTC))  # 400 before anything is read
    version, body = _MAP_CACHE.get(database, board_filters)
    headers = {"Cache-Control": "private, no-cache"}
    if version is None:  # read while an older writer ran: nothing to revalidate against
        return Response(body, media_type="application/json", headers=headers)
    # The minute too: overdue flags follow the clock even when nothing changes.
    minute = int(datetime.now(UTC).timestamp() // 60)
    headers["ETag"] = etag = f'"{version}-{zlib.crc32(board_filters.key().encode()):x}-{minute}"'
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _export(board_filters: BoardFilters, database: Engine, kind: str) -> Stream:
    board_filters.clauses(datetime.now(UTC))  # a bad filter is a 400, not a broken download
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    if kind == "csv":
        return Stream(board.export_csv(database, board_filters), media_type="text/csv; charset=utf-8",
                      headers={"Content-Disposition": f'attachment; filename="workorders-{stamp}.csv"'})
    return Stream(board.export_geojson(database, board_filters), media_type="application/geo+json",
                  headers={"Content-Disposition": f'attachment; filename="workorders-{stamp}.geojson"'})


@get("/export.csv", operation_id="dispatchExportCsv", dependencies=_FILTERS, sync_to_thread=False)
def export_csv(database: NamedDependency[Engine], board_filters: NamedDependency[BoardFilters]) -> Stream:
    """Every matching work order as CSV, streamed (never truncated)."""
    return _export(board_filters, database, "csv")


@get("/export.geojson", operation_id="dispatchExportGeoJSON", dependencies=_FILTERS, sync_to_thread=False)
def export_geojson(database: NamedDependency[Engine], board_filters: NamedDependency[BoardFilters]) -> Stream:
    """Every matching work order as a GeoJSON FeatureCollection, streamed (never truncated)."""
    return _export(board_filters, database, "geojson")


@get("/stats", operation_id="dispatchStats", dependencies=_FILTERS, sync_to_thread=True)
def statistics(database: NamedDependency[Engine], board_filters: NamedDependency[BoardFilters]) -> Stats:
    """Open and closed by district and type, SLA compliance, median hours to close."""
    with read_session(database) as db:
        return board.stats(db, filters=board_filters)


# -- detail and changes ---------------------------------------------------------------------


@get("/workorders/{work_order_id:int}", operation_id="dispatchWorkOrder", sync_to_thread=True)
def work_order_detail(request: ViewerRequest, database: NamedDependency[Engine], work_order_id: IdPath) -> dict[str, Any]:
    """Everything about one work order: cases with contacts, timeline, facts, conflicts."""
    with read_session(database) as db:
        return detail(db, viewer=current_user(request), work_order_id=work_order_id)


@get("/workorders/{work_order_id:int}/suggest", operation_id="dispatchSuggestCrew", sync_to_thread=True)
def suggest(database: NamedDependency[Engine], work_order_id: IdPath) -> list[Suggestion]:
    """Crews for this job, best first, each with the reason."""
    with read_session(database) as db:
        return suggest_crews(db, work_order_id=work_order_id)


class MergeRequest(msgspec.Struct, forbid_unknown_fields=True):
    target_id: Id
    source_id: Id
    versions: dict[Id, Id] | None = None


class SplitRequest(msgspec.Struct, forbid_unknown_fields=True):
    case_id: Id
    version: Id | None = None


class Changed(msgspec.Struct, kw_only=True):
    id: int
    number: str
    version: int
    status: str
    case_count: int


def _changed(order: WorkOrder) -> Changed:
    return Changed(id=order.id, number=order.number, version=order.version, status=order.status,  # type: ignore[arg-type]
                   case_count=order.case_count)


@post("/merge", operation_id="dispatchMerge", sync_to_thread=True, status_code=200)
def merge_two(request: ViewerRequest, data: JSONBody[MergeRequest], database: NamedDependency[Engine]) -> Changed:
    """Fold source into target: its cases move, it is cancelled ("merged into …")."""
    with write_session(database) as db:
        return _changed(merge(db, user=current_user(request), target_id=data.target_id, source_id=data.source_id,
                              versions=data.versions))


@post("/workorders/{work_order_id:int}/split", operation_id="dispatchSplit", sync_to_thread=True, status_code=201)
def split_out(request: ViewerRequest, work_order_id: IdPath, data: JSONBody[SplitRequest],
              database: NamedDependency[Engine]) -> Changed:
    """A wrongly merged case becomes a new work order."""
    with write_session(database) as db:
        return _changed(split(db, user=current_user(request), work_order_id=work_order_id, case_id=data.case_id,
                              version=data.version))


# -- crews ----------------------------------------------------------------------------------


@get("/crews", operation_id="dispatchCrews", sync_to_thread=True)
def crews(database: NamedDependency[Engine]) -> list[CrewLoad]:
    """Each active crew: open and overdue jobs, estimated hours against capacity."""
    with read_session(database) as db:
        return crew_loads(db)


class CheckRequest(msgspec.Struct, forbid_unknown_fields=True):
    work_order_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=500)]


@post("/crews/{crew_id:int}/check", operation_id="dispatchCheckLoad", sync_to_thread=True, status_code=200)
def check_load(crew_id: IdPath, data: JSONBody[CheckRequest], database: NamedDependency[Engine]) -> LoadCheck:
    """The crew's load if these jobs were added, with a warning when it passes capacity."""
    with read_session(database) as db:
        return load_after(db, crew_id=crew_id, work_order_ids=data.work_order_ids)


class RouteStop(msgspec.Struct, kw_only=True):
    position: int
    job: BoardItem


class Route(msgspec.Struct, kw_only=True):
    crew_id: int
    crew_name: str
    start_lat: float | None
    start_lon: float | None
    start: str  # "last position" | "yard" | "" (unknown: the route starts at its first job)
    length_km: float
    stops: list[RouteStop]


def _route(database: Engine, crew_id: int) -> Route:
    with read_session(database) as db:
        crew = db.get(Crew, crew_id)
        if crew is None:
            raise NotFound(f"no crew with id {crew_id}", field="crew_id")
        page = board.board_page(db, filters=BoardFilters(base=WorkOrderFilters(crew_id=crew_id, open_only=True)),
                                limit=board.BOARD_MAX)
    jobs = sorted(page.items, key=lambda j: (j.route_position is None, j.route_position or 0, j.id))
    start, where = route_start(crew)
    length = route_length(start, [(j.lat, j.lon) for j in jobs], list(range(len(jobs)))) if jobs else 0.0
    return Route(crew_id=crew_id, crew_name=crew.name, start_lat=start[0] if start else None,
                 start_lon=start[1] if start else None, start=where, length_km=round(length / 1000, 3),
                 stops=[RouteStop(position=n, job=j) for n, j in enumerate(jobs, start=1)])


@get("/crews/{crew_id:int}/route", operation_id="dispatchRoute", sync_to_thread=True)
def crew_route(crew_id: IdPath, database: NamedDependency[Engine]) -> Route:
    """The crew's open jobs in route order (unplanned ones last)."""
    return _route(database, crew_id)


class RouteOrder(msgspec.Struct, forbid_unknown_fields=True):
    work_order_ids: Annotated[list[Id], msgspec.Meta(max_length=500)]


@put("/crews/{crew_id:int}/route", operation_id="dispatchSetRoute", sync_to_thread=True)
def set_route(request: ViewerRequest, crew_id: IdPath, data: JSONBody[RouteOrder],
              database: NamedDependency[Engine]) -> Route:
    """Put the crew's jobs in this order (a drag in the console); crews get it through sync."""
    with write_session(database) as db:
        reorder_route(db, user=current_user(request), crew_id=crew_id, work_order_ids=data.work_order_ids)
    return _route(database, crew_id)


@post("/crews/{crew_id:int}/route/optimise", operation_id="dispatchOptimiseRoute", sync_to_thread=True,
      status_code=200)
def optimise_route(request: ViewerRequest, crew_id: IdPath, database: NamedDependency[Engine]) -> Route:
    """Order the crew's open jobs by nearest neighbour improved by 2-opt, and save it."""
    current = _route(database, crew_id)
    jobs = [stop.job for stop in current.stops]
    start = (current.start_lat, current.start_lon) if current.start_lat is not None else None
    order = optimise(start, [(j.lat, j.lon) for j in jobs])  # type: ignore[arg-type]
    with write_session(database) as db:
        reorder_route(db, user=current_user(request), crew_id=crew_id,
                      work_order_ids=[jobs[i].id for i in order], how="optimised")
    return _route(database, crew_id)


# -- queues -------------------------------------------------------------------------------


@get("/unlocated", operation_id="dispatchUnlocated", sync_to_thread=True)
def unlocated(
    database: NamedDependency[Engine], limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> UnlocatedQueue:
    """Open cases with no usable point, each with a suggested position when there is one."""
    with read_session(database) as db:
        return unlocated_queue(db, limit=limit, cursor=cursor)


class Placement(msgspec.Struct, forbid_unknown_fields=True):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class Placed(msgspec.Struct, kw_only=True):
    case_id: int
    outcome: str  # created | merged
    work_order_id: int | None
    emergency: bool


@post("/unlocated/{case_id:int}/place", operation_id="dispatchPlaceCase", sync_to_thread=True, status_code=200)
def place(request: ViewerRequest, case_id: IdPath, data: JSONBody[Placement], database: NamedDependency[Engine]) -> Placed:
    """Put a case on the map: district, merge or new job, priority and crew follow as at intake."""
    user = current_user(request)
    actor = dispatcher_actor(user)
    with write_session(database) as db:
        outcome = Pipeline().place(db, case_id, lat=data.lat, lon=data.lon, actor=actor.label, actor_user_id=user.id)
    return Placed(case_id=case_id, outcome=outcome.outcome, work_order_id=outcome.work_order_id,
                  emergency=outcome.emergency)


@get("/queue/conflicts", operation_id="dispatchConflictQueue", sync_to_thread=True)
def conflicts_named(
    database: NamedDependency[Engine], status: FromQuery[str | None] = "open",
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Crews' edits that lost, naming the crew, the user and the job, both values side by side."""
    with read_session(database) as db:
        return conflict_queue(db, status=status or None, limit=limit)


@get("/queue/rejections", operation_id="dispatchRejectionQueue", sync_to_thread=True)
def rejections_named(
    database: NamedDependency[Engine], limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> list[RejectionItem]:
    """Crews' edits that could not apply, naming the crew, the user and the job, with the reason."""
    with read_session(database) as db:
        return rejection_queue(db, limit=limit)


@get("/alerts", operation_id="dispatchAlerts", sync_to_thread=True)
def alert_list(database: NamedDependency[Engine], after_id: AfterIdQuery = None) -> list[Alert]:
    """Emergency alerts on open work, newest first, with the words that raised them."""
    with read_session(database) as db:
        return alerts(db, after_id=after_id)


# -- live -----------------------------------------------------------------------------------

_LIVE_BATCH = 500


def _positions(database: Engine) -> tuple[str, int]:
    with read_session(database) as db:
        feed = current_cursor(db, ["dispatch"])
        event = db.connection().execute(select(func.coalesce(func.max(col(WorkOrderEvent.id)), 0))).scalar_one()
    return feed, int(event or 0)


def _news(database: Engine, feed_after: str, event_after: int) -> tuple[str, int, list[int], list[Alert]]:
    """Work orders changed on the dispatch scope since the cursor `feed_after`, and new
    alerts among them. Read like a phone's pull (sync/feed.py), so on PostgreSQL a
    transaction that commits after a later one is still announced, not skipped."""
    with read_session(database) as db:
        try:
            rows, cursor, _ = read_feed(db, scopes=["dispatch"], cursor=feed_after, limit=_LIVE_BATCH)
        except UnknownCursor:  # compacted past a stream open for days: go on from now
            return current_cursor(db, ["dispatch"]), event_after, [], []
        ids = sorted({int(r.entity_id) for r in rows if r.entity == "work_order" and r.entity_id.isdigit()})
        if not ids:
            return cursor, event_after, [], []
        raised = [a for a in alerts(db, after_id=event_after, limit=50) if a.work_order_id in set(ids)]
        newest_event = db.connection().execute(
            select(func.coalesce(func.max(col(WorkOrderEvent.id)), 0)).where(col(WorkOrderEvent.work_order_id).in_(ids))
        ).scalar_one()
    return cursor, max(event_after, int(newest_event or 0)), ids, raised


@get("/live", operation_id="dispatchLive")
async def live(request: ViewerRequest) -> ServerSentEvent:
    """`changed` (work order ids) and `alert` events, read from the database change feed, so a
    change made on any worker or host arrives; a comment every 15 s keeps proxies open."""
    database: Engine = request.app.state.engine
    hub = request.app.state.event_hub

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        seen = hub.mark()  # taken before the feed is read: nothing announced after it is lost
        feed_at, event_at = await anyio.to_thread.run_sync(_positions, database)
        yield ServerSentEventMessage(event="hello", data=feed_at, retry=3000)
        while True:
            woke = await hub.wait(["dispatch"], timeout=15.0, since=seen)
            seen = hub.mark()
            while True:
                before = feed_at
                feed_at, event_at, ids, raised = await anyio.to_thread.run_sync(_news, database, feed_at, event_at)
                if not ids:
                    if feed_at == before:
                        break
                    continue  # a page of other rows of the scope: read on
                yield ServerSentEventMessage(event="changed", data=msgspec.json.encode({"ids": ids, "position": feed_at}).decode())
                for alert in raised:
                    yield ServerSentEventMessage(event="alert", data=msgspec.json.encode(alert).decode())
            if not woke:
                yield ServerSentEventMessage(comment="still here")
            await asyncio.sleep(0)

    return ServerSentEvent(stream())


CONSOLE_HANDLERS = [
    board_list, map_points, export_csv, export_geojson, statistics, work_order_detail, suggest, merge_two, split_out,
    crews, check_load, crew_route, set_route, optimise_route, unlocated, place, conflicts_named, rejections_named,
    alert_list, live,
]

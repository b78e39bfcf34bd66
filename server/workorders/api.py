"""HTTP handlers for reading work orders, cases and reference data (all under /api).

Every route needs a signed-in user (router guard); some are tightened per handler:

    GET /api/workorders                  signed in (a crew: its own crew's only)
    GET /api/workorders/{id}             signed in (a crew: 403 for another crew's)
    GET /api/workorders.geojson          signed in (a crew: its own crew's only)
    GET /api/cases/{id}/contact          dispatcher or admin
    GET /api/unlocated                   dispatcher or admin
    GET /api/service-types               signed in
    GET /api/districts                   signed in
"""

from __future__ import annotations

from typing import Annotated, cast

from litestar import MediaType, Request, Response, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, QueryParameter
from litestar.security.jwt import Token
from sqlalchemy import Engine
from sqlmodel import Session

from server.auth.guards import current_user, dispatcher_or_admin, signed_in
from server.auth.tokens import AuthUser
from server.db import read_session
from server.params import IdPath, IdQuery
from server.readcache import answer_key, cached_json, request_position, viewer_scope
from server.workorders.schemas import (
    ContactPublic,
    DistrictCollection,
    DistrictPublic,
    ServiceTypePublic,
    UnlocatedPage,
    WorkOrderCollection,
    WorkOrderDetail,
    WorkOrderPage,
)
from server.workorders.service import (
    GEOJSON_MAX,
    PAGE_DEFAULT,
    PAGE_MAX,
    WorkOrderFilters,
    districts_geojson,
    get_case_contact,
    get_work_order,
    list_districts,
    list_service_types,
    list_unlocated,
    list_work_orders,
    split_list,
    work_orders_geojson,
)

__all__ = ["workorders_router"]

ViewerRequest = Request[AuthUser, Token, State]
PageLimit = Annotated[int, QueryParameter(ge=1, le=PAGE_MAX, description=f"rows per page, 1 to {PAGE_MAX}")]
Cursor = Annotated[
    str | None, QueryParameter(max_length=200, description="next_cursor of the previous page")
]


def provide_filters(
    status: Annotated[str | None, QueryParameter(description="comma list, e.g. new,assigned")] = None,
    district_id: IdQuery = None,
    service_code: Annotated[str | None, QueryParameter(description="comma list of service codes")] = None,
    priority: Annotated[int | None, QueryParameter(description="1 (most urgent) to 4")] = None,
    emergency: FromQuery[bool | None] = None,
    overdue: FromQuery[bool | None] = None,
    crew_id: IdQuery = None,
    open_only: FromQuery[bool] = False,
    q: Annotated[str | None, QueryParameter(description="part of a work-order number or address")] = None,
    bbox: Annotated[str | None, QueryParameter(description="min_lon,min_lat,max_lon,max_lat")] = None,
) -> WorkOrderFilters:
    """The work-order filters of a list or map request (validated by the service)."""
    return WorkOrderFilters(
        status=split_list(status),
        district_id=district_id,
        service_code=split_list(service_code),
        priority=priority,
        emergency=emergency,
        overdue=overdue,
        crew_id=crew_id,
        open_only=open_only,
        q=q,
        bbox=bbox,
    )


@get(
    "/workorders",
    operation_id="listWorkOrders",
    dependencies={"filters": Provide(provide_filters, sync_to_thread=False)},
)
async def work_orders(
    request: ViewerRequest,
    filters: NamedDependency[WorkOrderFilters],
    limit: PageLimit = PAGE_DEFAULT,
    cursor: Cursor = None,
) -> Response[WorkOrderPage]:
    """A page of work orders, newest first (a crew sees only its own)."""
    # The engine from the app's state, not as a dependency: with two dependencies Litestar
    # resolves them in a task group, a tenth of a cached answer's cost.
    database: Engine = request.app.state.engine
    viewer = current_user(request)
    position = request_position(request.scope["state"])
    # A crew's answer is kept apart from everybody else's (server/readcache.py).
    key = answer_key("workorders", position, viewer_scope(viewer.role, viewer.crew_id), repr(filters), limit, cursor)

    def read(db: Session) -> WorkOrderPage:
        return list_work_orders(db, viewer=viewer, filters=filters, limit=limit, cursor=cursor)

    body = await cached_json(request.app.state, database, key, position, read)
    # The bytes are an encoded WorkOrderPage: the annotation documents the schema.
    return cast("Response[WorkOrderPage]", Response(body, media_type=MediaType.JSON))


@get(
    "/workorders.geojson",
    operation_id="workOrdersGeoJSON",
    media_type="application/geo+json",
    dependencies={"filters": Provide(provide_filters, sync_to_thread=False)},
    sync_to_thread=True,
)
def work_orders_map(
    request: ViewerRequest,
    database: NamedDependency[Engine],
    filters: NamedDependency[WorkOrderFilters],
    limit: Annotated[int, QueryParameter(ge=1, le=GEOJSON_MAX)] = GEOJSON_MAX,
    cursor: Cursor = None,
) -> WorkOrderCollection:
    """The matching work orders as a GeoJSON FeatureCollection (RFC 7946), a page at a time (next_cursor)."""
    with read_session(database) as db:
        return work_orders_geojson(db, viewer=current_user(request), filters=filters, limit=limit, cursor=cursor)


@get("/workorders/{work_order_id:int}", operation_id="getWorkOrder", sync_to_thread=True)
def work_order(request: ViewerRequest, database: NamedDependency[Engine], work_order_id: IdPath) -> WorkOrderDetail:
    """One work order with its cases and history."""
    with read_session(database) as db:
        return get_work_order(db, viewer=current_user(request), work_order_id=work_order_id)


@get(
    "/cases/{case_id:int}/contact",
    operation_id="getCaseContact",
    guards=[dispatcher_or_admin],
    sync_to_thread=True,
)
def case_contact(request: ViewerRequest, database: NamedDependency[Engine], case_id: IdPath) -> ContactPublic:
    """A reporter's contact details (dispatcher or admin)."""
    with read_session(database) as db:
        return get_case_contact(db, viewer=current_user(request), case_id=case_id)


@get("/unlocated", operation_id="listUnlocatedCases", guards=[dispatcher_or_admin], sync_to_thread=True)
def unlocated(
    request: ViewerRequest, database: NamedDependency[Engine], limit: PageLimit = PAGE_DEFAULT, cursor: Cursor = None
) -> UnlocatedPage:
    """Cases without a usable location, waiting to be placed (dispatcher or admin)."""
    with read_session(database) as db:
        return list_unlocated(db, viewer=current_user(request), limit=limit, cursor=cursor)


@get("/service-types", operation_id="listServiceTypes", sync_to_thread=True)
def service_types(database: NamedDependency[Engine]) -> list[ServiceTypePublic]:
    """Every service type, by name."""
    with read_session(database) as db:
        return list_service_types(db)


@get("/districts", operation_id="listDistricts", sync_to_thread=True)
def districts(
    database: NamedDependency[Engine],
    layer: FromQuery[str | None] = None,
    geometry: Annotated[bool, QueryParameter(description="true: a GeoJSON FeatureCollection")] = False,
) -> list[DistrictPublic] | DistrictCollection:
    """The service areas; with geometry=true as GeoJSON."""
    with read_session(database) as db:
        if geometry:
            return districts_geojson(db, layer=layer)
        return list_districts(db, layer=layer)


workorders_router = Router(
    path="/api",
    guards=[signed_in],
    tags=["work orders"],
    route_handlers=[work_orders, work_orders_map, work_order, case_contact, unlocated, service_types, districts],
)

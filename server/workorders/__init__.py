"""Work orders as dispatchers and crews read them: lists, detail, map (GeoJSON), cases.

    workorders_router   the /api routes
    service             plain functions over a session, with the viewer's role applied
"""

from server.workorders.api import workorders_router
from server.workorders.service import (
    WorkOrderFilters,
    get_case_contact,
    get_work_order,
    list_unlocated,
    list_work_orders,
    work_orders_geojson,
)

__all__ = [
    "WorkOrderFilters",
    "get_case_contact",
    "get_work_order",
    "list_unlocated",
    "list_work_orders",
    "work_orders_geojson",
    "workorders_router",
]

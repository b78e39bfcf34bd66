"""Bounds on numbers that come in over HTTP, shared by every route.

Python's int has no limit; the database's do. Our ids and counters are `integer` columns:
32 bits on PostgreSQL (SQLAlchemy casts a bound parameter to the column's type, so
2**31 is "integer out of range" there), 64 on SQLite (whose driver refuses anything past
2**63 - 1 with OverflowError). So every id or counter that reaches a query is bounded
where it enters, to what every database holds, in the handler's parameters or the body's
model, and an out-of-range value is a 400 that names the parameter.

    work_order_id: IdPath           /api/workorders/{work_order_id}
    district_id: IdQuery = None     ?district_id=
    after_id: AfterIdQuery = None   ?after_id= (0: from the start)
    crew_id: Id | None              a JSON body field (msgspec Struct)
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.params import PathParameter, QueryParameter

__all__ = ["DB_INT_MAX", "AfterIdQuery", "Count", "Id", "IdPath", "IdQuery"]

DB_INT_MAX = 2**31 - 1  # PostgreSQL `integer`, the type of our ids and counters
_ID = f"a positive whole number up to {DB_INT_MAX}"

Id = Annotated[int, msgspec.Meta(ge=1, le=DB_INT_MAX, description=_ID)]
Count = Annotated[int, msgspec.Meta(ge=0, le=DB_INT_MAX)]
IdPath = Annotated[int, PathParameter(ge=1, le=DB_INT_MAX, description=_ID)]
IdQuery = Annotated[int | None, QueryParameter(ge=1, le=DB_INT_MAX, description=_ID)]
AfterIdQuery = Annotated[
    int | None, QueryParameter(ge=0, le=DB_INT_MAX, description="the last id of the previous page (0: the first)")
]

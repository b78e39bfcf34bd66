"""Honest expected dates, from this city's own history of time-to-close.

For an open work order we promise a range: the median and the 80th percentile of how long
closed work orders of the same service type took, from first report to fix. The sample is
the most recent closes (up to `PER_KEY_LIMIT`), chosen by this fallback chain:

    1. the same type in the same district, if at least `MIN_SAMPLE` closes;
    2. the same type anywhere in the city, if at least `MIN_SAMPLE` closes;
    3. the type's SLA (our target; then there is no "usually" to quote).

Emergencies are a history of their own: an emergency is compared only with closed
emergencies, and without enough of them gets the emergency SLA (at most 4 hours), never
the routine figure. The same range feeds the tracking page, Open311 `expected_datetime`
(the upper end) and `service_notice`.

`evaluate_promises` replays this on held-back weeks: what would have been promised at a
cutoff, and whether the real close came inside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import sqlalchemy as sa
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from server.models import WorkOrder, utcnow

__all__ = [
    "MIN_SAMPLE",
    "CloseTimes",
    "Expectation",
    "PromiseCheck",
    "close_times",
    "evaluate_promises",
]

MIN_SAMPLE = 20
PER_KEY_LIMIT = 400
CACHE_SECONDS = 600.0

Basis = Literal["district", "citywide", "sla"]
_Key = tuple[str, int | None, bool]  # (service code, district id or None for citywide, emergency)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What we promise for one open work order."""

    basis: Basis
    emergency: bool
    sample_size: int  # closes the figures come from (0 for the SLA)
    median_hours: float | None
    p80_hours: float
    low_at: datetime | None  # usually fixed by (median); None when only the SLA is known
    high_at: datetime  # 4 in 5 fixed by (80th percentile), or the SLA due time

    def overdue(self, now: datetime) -> bool:
        return now > self.high_at


@dataclass(frozen=True, slots=True)
class _Figures:
    median_hours: float
    p80_hours: float
    count: int


class CloseTimes:
    """Quantiles of time-to-close per (type, district, emergency) and per (type, emergency)."""

    def __init__(self, figures: dict[_Key, _Figures], *, as_of: datetime) -> None:
        self.figures = figures
        self.as_of = as_of

    @classmethod
    def from_durations(cls, rows: Iterable[tuple[str, int | None, bool, float]], *, as_of: datetime) -> CloseTimes:
        """Rows of (type, district, emergency, hours to close), most recent close first."""
        samples: dict[_Key, list[float]] = {}
        for code, district_id, emergency, hours in rows:
            keys: list[_Key] = [(code, None, bool(emergency))]
            if district_id is not None:
                keys.append((code, district_id, bool(emergency)))
            for key in keys:
                bucket = samples.setdefault(key, [])
                if len(bucket) < PER_KEY_LIMIT:
                    bucket.append(hours)
        figures = {}
        for key, values in samples.items():
            median, p80 = np.quantile(np.asarray(values), [0.5, 0.8]).tolist()
            figures[key] = _Figures(float(median), float(p80), len(values))
        return cls(figures, as_of=as_of)

    @classmethod
    def build(cls, session: Session, *, as_of: datetime | None = None) -> CloseTimes:
        """From the completed work orders closed at or before `as_of` (default now)."""
        as_of = as_of or utcnow()
        table = WorkOrder.__table__  # type: ignore[attr-defined]
        statement = (
            sa.select(table.c.service_code, table.c.district_id, table.c.emergency, table.c.first_reported_at,
                      table.c.closed_at)
            .where(table.c.status == "completed", table.c.closed_at.is_not(None), table.c.closed_at <= as_of,
                   table.c.deleted_at.is_(None))
            .order_by(table.c.closed_at.desc())
        )
        rows = session.connection().execute(statement).all()  # Core rows: no ORM objects for 100k closes
        durations = (
            (code, district_id, emergency, hours)
            for code, district_id, emergency, first, closed in rows
            if (hours := (closed - first).total_seconds() / 3600.0) >= 0  # a close before its report is bad data
        )
        return cls.from_durations(durations, as_of=as_of)

    def expect(
        self,
        *,
        service_code: str,
        district_id: int | None,
        emergency: bool,
        reported_at: datetime,
        sla_due_at: datetime,
    ) -> Expectation:
        """The range for an order first reported at `reported_at` (the fallback chain above)."""
        chain: list[tuple[Basis, _Key]] = [("citywide", (service_code, None, emergency))]
        if district_id is not None:
            chain.insert(0, ("district", (service_code, district_id, emergency)))
        for basis, key in chain:
            found = self.figures.get(key)
            if found is not None and found.count >= MIN_SAMPLE:
                return Expectation(
                    basis=basis,
                    emergency=emergency,
                    sample_size=found.count,
                    median_hours=found.median_hours,
                    p80_hours=found.p80_hours,
                    low_at=reported_at + timedelta(hours=found.median_hours),
                    high_at=reported_at + timedelta(hours=found.p80_hours),
                )
        hours = max((sla_due_at - reported_at).total_seconds() / 3600.0, 0.0)
        return Expectation(basis="sla", emergency=emergency, sample_size=0, median_hours=None,
                           p80_hours=hours, low_at=None, high_at=sla_due_at)

    def expect_order(self, order: WorkOrder) -> Expectation:
        due = order.sla_due_at or order.first_reported_at + timedelta(hours=72)
        return self.expect(service_code=order.service_code, district_id=order.district_id,
                           emergency=order.emergency, reported_at=order.first_reported_at, sla_due_at=due)


_CACHE: dict[str, tuple[float, CloseTimes]] = {}
_CACHE_LOCK = threading.Lock()


def close_times(session: Session, *, max_age: float = CACHE_SECONDS) -> CloseTimes:
    """This process's figures for the session's database, rebuilt every `max_age` seconds."""
    bind = session.get_bind()
    key = str(bind.url) if isinstance(bind, Engine) else str(bind.engine.url)
    now = time.monotonic()
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and now - cached[0] < max_age:
            return cached[1]
    built = CloseTimes.build(session)
    with _CACHE_LOCK:
        _CACHE[key] = (now, built)
    return built


def forget_close_times() -> None:
    """Drop every cached figure (tests that change history use it)."""
    with _CACHE_LOCK:
        _CACHE.clear()


@dataclass(frozen=True, slots=True)
class PromiseCheck:
    """How promises made at `cutoff` held for the work orders first reported after it.

    `closed` counts those that closed (what the share is of); `open_late` those still open
    at the end of the data and already past their upper end, which the strict share counts
    as misses (a city export taken on one day leaves many open that closed later, so this
    undercounts); `open_not_due` those still open and not yet past it (not judged).
    """

    cutoff: datetime
    data_end: datetime
    closed: int
    by_median: int  # closed no later than the promised median
    by_p80: int  # closed no later than the promised upper end (the 80th percentile or the SLA)
    open_late: int
    open_not_due: int
    by_basis: dict[str, tuple[int, int]]  # basis → (closed, closed by the upper end)

    @property
    def share_by_p80(self) -> float:
        """Of the work orders that closed, the share closed by the promised upper end."""
        return self.by_p80 / self.closed if self.closed else float("nan")

    @property
    def share_by_median(self) -> float:
        return self.by_median / self.closed if self.closed else float("nan")

    @property
    def strict_share_by_p80(self) -> float:
        """The same, counting work orders still open past their upper end as misses."""
        judged = self.closed + self.open_late
        return self.by_p80 / judged if judged else float("nan")


def evaluate_promises(session: Session, *, cutoff: datetime, data_end: datetime | None = None) -> PromiseCheck:
    """Replay the promise for every work order first reported after `cutoff`, with only
    the history known at the cutoff, and check it against what really happened.

    `data_end` is when the data stops (default: its last close).
    """
    figures = CloseTimes.build(session, as_of=cutoff)
    orders = list(session.exec(
        select(WorkOrder).where(col(WorkOrder.first_reported_at) > cutoff, col(WorkOrder.deleted_at).is_(None),
                                col(WorkOrder.status).in_(["completed", "new", "assigned", "en_route", "on_site",
                                                           "on_hold"]))
    ).all())
    end = data_end or session.exec(select(func.max(WorkOrder.closed_at))).one() or cutoff
    closed = by_median = by_p80 = late = not_due = 0
    by_basis: dict[str, list[int]] = {}
    for order in orders:
        expected = figures.expect_order(order)
        if order.status != "completed" or order.closed_at is None:
            if end > expected.high_at:
                late += 1
            else:
                not_due += 1
            continue
        if order.closed_at < order.first_reported_at:
            continue  # bad data: a close before the report
        closed += 1
        tally = by_basis.setdefault(expected.basis, [0, 0])
        tally[0] += 1
        if order.closed_at <= expected.high_at:
            by_p80 += 1
            tally[1] += 1
        if expected.low_at is not None and order.closed_at <= expected.low_at:
            by_median += 1
    return PromiseCheck(cutoff=cutoff, data_end=end, closed=closed, by_median=by_median, by_p80=by_p80,
                        open_late=late, open_not_due=not_due,
                        by_basis={k: (v[0], v[1]) for k, v in by_basis.items()})

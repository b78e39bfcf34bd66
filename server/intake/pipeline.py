"""The intake pipeline: one code path from `IncomingCase` values to work orders.

Every channel (bulk import, Open311 POST, JSON API) hands a batch to `Pipeline.ingest`
inside its own write transaction. Steps, in order:

1. already present? (source, external id) seen before → nothing is written;
2. locate: a usable WGS84 point inside (or within tolerance of) the service areas, else the
   case is stored in the *unlocated* queue for a dispatcher;
3. district: point-in-polygon, vectorised over the batch (`server.geo.DistrictIndex`);
4. merge: an open work order of the same type within the type's radius and time window
   absorbs the case (one pothole reported five times is one job with five cases);
5. prioritise: the type's priority and SLA; an emergency keyword raises the flag;
6. route: (district, type) rules pick the crew.

Rows are written with bulk Core inserts, not one ORM object per row: a city export is
tens of thousands of rows.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec
from sqlalchemy import Text, cast, func, text
from sqlmodel import Session, col, select

from server.db import bulk_insert
from server.errors import Conflict, NotFound, ValidationFailed
from server.geo import DistrictIndex, PointGrid, valid_wgs84
from server.intake.numbers import format_number
from server.intake.records import BAD_CLOSE_TIME, IncomingCase
from server.intake.servicetypes import (
    EmergencyMatcher,
    apply_overrides,
    service_type_defaults,
)
from server.models import (
    Case,
    CaseContact,
    District,
    RoutingRule,
    ServiceType,
    WorkOrder,
    utcnow,
)
from server.status import Status
from server.workorders.changes import (
    EVENT_COLUMNS,
    Actor,
    IntakeMerge,
    IntakePlan,
    add_fact,
    apply_intake,
    load_for_update,
    new_event_uid,
    publish_reference,
)

__all__ = ["BAD_CLOSE_TIME", "NO_AREAS", "CaseOutcome", "IngestResult", "Pipeline", "ReferenceData",
           "load_district_index"]

Outcome = Literal["created", "merged", "already_present", "unlocated"]
NO_AREAS = "no service areas were loaded"


@dataclass(slots=True)
class CaseOutcome:
    outcome: Outcome
    case_id: int
    work_order_id: int | None
    tracking_token: str | None
    emergency: bool = False


@dataclass(slots=True)
class IngestResult:
    outcomes: list[CaseOutcome] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _OpenOrder:
    """What merging needs to know of an open work order (kept in a grid per type)."""

    id: int
    x: float
    y: float
    first_reported_at: datetime
    last_reported_at: datetime
    case_count: int
    version: int
    emergency: bool
    priority: int
    crew_id: int | None


_INDEX_CACHE: dict[tuple[str, float], tuple[tuple[int, int], DistrictIndex]] = {}


def load_district_index(session: Session, *, tolerance_m: float) -> DistrictIndex:
    """The primary layer's index, rebuilt only when the set of districts changes.

    Building it for the NYC community districts takes ~0.3 s, too slow for every Open311
    POST; a server keeps one per database and re-reads when districts are added or removed.
    """
    signature = tuple(
        session.exec(select(func.count(col(District.id)), func.coalesce(func.max(District.id), 0)).where(col(District.primary))).one()
    )
    key = (str(session.get_bind().engine.url), tolerance_m)
    cached = _INDEX_CACHE.get(key)
    if cached and cached[0] == signature:
        return cached[1]
    # The GeoJSON as text, decoded by msgspec: json.loads of the NYC polygons takes ~0.15 s.
    rows = session.exec(select(District.id, cast(District.geometry, Text)).where(District.primary)).all()
    index = DistrictIndex([r[0] for r in rows], [_geojson(r[1]) for r in rows], tolerance_m=tolerance_m)  # type: ignore[misc]  # NOT NULL columns
    _INDEX_CACHE[key] = (signature, index)  # type: ignore[assignment]
    return index


def _geojson(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:  # NaN or Infinity, which json.dumps writes and msgspec refuses
        return json.loads(text)


@dataclass
class ReferenceData:
    """Districts, service types and routing rules, loaded once per pipeline."""

    districts: DistrictIndex
    service_types: dict[str, dict[str, Any]]
    routing: dict[tuple[int | None, str | None], int]
    matchers: dict[str, EmergencyMatcher] = field(default_factory=dict)

    def matcher(self, code: str) -> EmergencyMatcher:
        if code not in self.matchers:
            self.matchers[code] = EmergencyMatcher(self.service_types[code]["emergency_keywords"] or [])
        return self.matchers[code]

    def crew_for(self, district_id: int | None, code: str) -> int | None:
        if not self.routing:  # no rules: skip building four keys for every order
            return None
        for key in ((district_id, code), (district_id, None), (None, code), (None, None)):
            if key in self.routing:
                return self.routing[key]
        return None


class Pipeline:
    """Runs batches through the intake steps. One instance per import run or request.

    In bulk mode the open work orders of each service type are loaded once and kept in a
    grid for the whole run; otherwise only those near the batch are read from the database.
    """

    def __init__(
        self,
        *,
        overrides: dict[str, dict[str, Any]] | None = None,
        tolerance_m: float = 50.0,
        bulk: bool = False,
        districts: DistrictIndex | None = None,
        queue_without_areas: bool = False,
    ) -> None:
        self.overrides = overrides or {}
        # No service areas loaded: queue every case unlocated (an import told to go ahead
        # without them) rather than place it nowhere in particular.
        self.queue_without_areas = queue_without_areas
        self.tolerance_m = tolerance_m
        self.bulk = bulk
        self._districts = districts
        self._ref: ReferenceData | None = None
        self._grids: dict[str, PointGrid] = {}
        self._loaded_types: set[str] = set()

    def reset(self) -> None:
        """Forget what was read or decided (after a rolled-back batch): it is read again."""
        self._ref = None
        self._grids.clear()
        self._loaded_types.clear()

    # -- reference data -------------------------------------------------------------------

    def reference(self, session: Session) -> ReferenceData:
        if self._ref is None:
            districts = self._districts or load_district_index(session, tolerance_m=self.tolerance_m)
            types = _service_types(session)
            routing = {
                (r.district_id, r.service_code): r.crew_id
                for r in session.exec(select(RoutingRule)).all()
            }
            self._ref = ReferenceData(districts, types, routing)
        return self._ref

    def _ensure_service_types(self, session: Session, cases: list[IncomingCase]) -> None:
        ref = self.reference(session)
        unknown = [case for case in cases if case.service_code not in ref.service_types]
        if not unknown:
            return
        # What the batch's records say a new type covers (NYC's descriptors) describes it.
        kinds: dict[str, Counter[str]] = {}
        for case in unknown:
            counts = kinds.setdefault(case.service_code, Counter())
            if case.subtype:
                counts[case.subtype] += 1
        new: dict[str, dict[str, Any]] = {}
        for case in unknown:
            if case.service_code not in new:
                values = service_type_defaults(case.service_code, case.service_name,
                                               kinds[case.service_code].items())
                new[case.service_code] = apply_overrides(values, self.overrides)
        if new:
            # Another writer may have created the same type meanwhile: re-read, then insert.
            present = set(
                session.exec(select(ServiceType.code).where(col(ServiceType.code).in_(list(new)))).all()
            )
            rows = [v for k, v in new.items() if k not in present]
            if rows:
                columns = tuple(rows[0])
                _bulk_insert(session, ServiceType, columns, [tuple(row[c] for c in columns) for row in rows])
                publish_reference(session, "service_type", [row["code"] for row in rows])
            ref.service_types.update(_service_types(session, codes=list(new)))

    # -- the steps ----------------------------------------------------------------------

    def ingest(
        self,
        session: Session,
        cases: list[IncomingCase],
        *,
        channel: str,
        actor: str = "system",
        actor_user_id: int | None = None,
        import_run_id: int | None = None,
        time_shift: timedelta | None = None,
        shift_until: datetime | None = None,
        now: datetime | None = None,
    ) -> IngestResult:
        now = now or utcnow()
        result = IngestResult()
        if not cases:
            return result
        if time_shift:
            cases = [_shifted(c, time_shift, min(shift_until or now, now)) for c in cases]
        fresh, present = self._split_present(session, cases)
        for _case, case_id in present:
            result.outcomes.append(CaseOutcome("already_present", case_id, None, None))
            result.counts["already_present"] += 1
        if not fresh:
            self._keep_outcomes(session, present, {}, channel, actor, actor_user_id, result)
            return result
        self._ensure_service_types(session, fresh)
        ref = self.reference(session)

        located = self._locate(fresh, ref)
        case_ids = _allocate_ids(session, Case, len(fresh))
        tokens = _tracking_tokens(len(fresh))
        keywords = [ref.matcher(c.service_code).find(f"{c.service_name} {c.description}") for c in fresh]
        pending: list[int] = []  # indexes of the located cases, which go on to merge or a new order
        for index, (_, problem) in enumerate(located):
            if problem:
                emergency = keywords[index] is not None
                result.outcomes.append(CaseOutcome("unlocated", case_ids[index], None, tokens[index], emergency))
                result.counts["unlocated"] += 1
            else:
                pending.append(index)

        if self.bulk:
            self._preload_open_orders(session, {fresh[i].service_code for i in pending if not fresh[i].is_closed}, ref)
        # Grid positions of the whole batch in one numpy call rather than one call per case.
        lons, lats = [fresh[i].lon for i in pending], [fresh[i].lat for i in pending]
        xs, ys = (a.tolist() for a in ref.districts.projection.to_xy(lons, lats))
        positions = dict(zip(pending, zip(xs, ys, strict=True), strict=True))
        events = _Events(channel, actor, actor_user_id, now)
        writer_actor = Actor(actor_user_id, actor, channel)
        memo: dict[datetime, str] = {}  # the same instants recur in cases, orders and events
        work_order_of: list[int | None] = [None] * len(fresh)
        merged_into: dict[int, int] = {}  # case index -> target order id
        todo = pending
        while todo:
            # The pipeline decides (a plan); changes.apply_intake writes it under row locks.
            # A merge target closed or removed since it was read sends its cases round again.
            plan = IntakePlan(writer_actor, now, _ORDER_COLUMNS)
            order_ids = iter(_allocate_ids(session, WorkOrder, len(todo)))
            decided: dict[int, tuple[str, int, _OpenOrder | None, float, float]] = {}
            for index in todo:
                x, y = positions[index]
                case = fresh[index]
                stype = ref.service_types[case.service_code]
                keyword = keywords[index]
                target = None if case.is_closed else self._find_duplicate(session, case, x, y, stype, ref)
                if target is not None:
                    _merge_into(target, case)
                    merge = plan.merges.get(target.id) or plan.merges.setdefault(target.id, IntakeMerge(target.id))
                    merge.case_ids.append(case_ids[index])
                    merge.reported_at.append(case.requested_at)
                    merge.keywords.append(keyword)
                    decided[index] = ("merged", target.id, target, x, y)
                    continue
                order_id = next(order_ids)
                district_id = located[index][0]
                row, order = _new_order(
                    order_id, case, stype, district_id, keyword, ref.crew_for(district_id, case.service_code),
                    case_ids[index], x, y, events,
                )
                plan.new_orders.append(row)
                decided[index] = ("created", order_id, order, x, y)
                if order is not None:  # open: later cases may merge into it
                    self._grid(case.service_code, float(stype["duplicate_radius_m"])).add(x, y, order)
                    plan.published.append((order.id, order.crew_id, order.version))
            plan.new_order_events = events.rows
            stale = apply_intake(session, plan, memo=memo)
            events.rows = []
            if not stale:
                for index, (outcome, order_id, _, _, _) in decided.items():
                    work_order_of[index] = order_id
                    if outcome == "merged":
                        merged_into[index] = order_id
                break
            # Forget the stale targets and the orders this round would have created (their
            # ids are simply not used), then decide again for this batch's cases.
            for index, (outcome, order_id, order, x, y) in decided.items():
                if order is not None and (outcome == "created" or order_id in stale):
                    stype = ref.service_types[fresh[index].service_code]
                    self._grid(fresh[index].service_code, float(stype["duplicate_radius_m"])).remove(x, y, order)

        for index in pending:
            case = fresh[index]
            keyword = keywords[index]
            if index in merged_into:
                result.outcomes.append(CaseOutcome("merged", case_ids[index], merged_into[index], tokens[index], bool(keyword)))
                result.counts["merged"] += 1
            else:
                result.outcomes.append(CaseOutcome("created", case_ids[index], work_order_of[index], tokens[index], bool(keyword)))
                result.counts["created"] += 1

        case_rows = [
            _case_row(case, case_ids[index], tokens[index], located[index], keywords[index] is not None,
                      work_order_of[index], now, import_run_id, time_shift)
            for index, case in enumerate(fresh)
        ]
        contact_rows = [
            (case_ids[index], c.first_name, c.last_name, c.email, c.phone, c.device_id)
            for index, case in enumerate(fresh)
            if (c := case.contact) is not None and not c.is_empty()
        ]
        _bulk_insert(session, Case, _CASE_COLUMNS, case_rows, memo)
        _bulk_insert(session, CaseContact, _CONTACT_COLUMNS, contact_rows, memo)
        for index, case in enumerate(fresh):
            if case.closed_at is not None and case.attributes.get(BAD_CLOSE_TIME):
                result.counts["bad_close_time"] += 1
            if case.closed_at is not None and located[index][1]:
                result.counts["unlocated_closed"] += 1
        batch_ids = {(c.source, c.external_id): case_ids[i] for i, c in enumerate(fresh)}
        self._keep_outcomes(session, present, batch_ids, channel, actor, actor_user_id, result)
        return result

    def place(
        self, session: Session, case_id: int, *, lat: float, lon: float, actor: str, actor_user_id: int | None,
        now: datetime | None = None,
    ) -> CaseOutcome:
        """A dispatcher put an unlocated case on the map: the rest of intake runs for it as for
        a new case (district, merge into a duplicate or a new work order, priority, emergency,
        routing) through the same writer, and the case row becomes located."""
        now = now or utcnow()
        stored = session.exec(select(Case).where(Case.id == case_id).with_for_update()).first()
        if stored is None:
            raise NotFound(f"there is no case {case_id}", field="case_id")
        if stored.location_state != "unlocated":
            raise ValidationFailed(f"case {case_id} is already on the map", field="case_id")
        problem = valid_wgs84(lat, lon)
        if problem:
            raise ValidationFailed(f"that point has {problem}", field="lat")
        incoming = IncomingCase(
            source=stored.source, external_id=stored.external_id, service_code=stored.service_code,
            service_name=stored.service_name, requested_at=stored.requested_at, lat=lat, lon=lon,
            description=stored.description, address=stored.address, closed_at=stored.closed_at,
            resolution=stored.resolution,
        )
        ref = self.reference(session)
        ((district_id, outside),) = self._locate([incoming], ref)
        if outside:
            raise ValidationFailed(f"that point is {outside}", field="lat")
        keyword = ref.matcher(incoming.service_code).find(f"{incoming.service_name} {incoming.description}")
        x, y = ref.districts.projection.point_xy(lon, lat)
        stype = ref.service_types[incoming.service_code]
        events = _Events("api", actor, actor_user_id, now)
        plan = IntakePlan(Actor(actor_user_id, actor, "api"), now, _ORDER_COLUMNS)
        target = None if incoming.is_closed else self._find_duplicate(session, incoming, x, y, stype, ref)
        if target is not None:
            merge = plan.merges.setdefault(target.id, IntakeMerge(target.id))
            merge.case_ids.append(case_id)
            merge.reported_at.append(incoming.requested_at)
            merge.keywords.append(keyword)
            outcome: Outcome = "merged"
            order_id = target.id
        else:
            order_id = _allocate_ids(session, WorkOrder, 1)[0]
            row, order = _new_order(order_id, incoming, stype, district_id, keyword,
                                    ref.crew_for(district_id, incoming.service_code), case_id, x, y, events)
            plan.new_orders.append(row)
            if order is not None:
                plan.published.append((order.id, order.crew_id, order.version))
            outcome = "created"
        plan.new_order_events = events.rows
        if apply_intake(session, plan):
            self.reset()
            raise Conflict("the work order it would join closed just now; place it again", field="case_id")
        stored.lat, stored.lon, stored.district_id = lat, lon, district_id
        stored.location_state, stored.location_problem = "located", None
        stored.work_order_id, stored.updated_at = order_id, now
        stored.emergency = stored.emergency or keyword is not None
        session.add(stored)
        session.flush()
        return CaseOutcome(outcome, case_id, order_id, stored.tracking_token, keyword is not None)

    def _keep_outcomes(
        self,
        session: Session,
        present: list[tuple[IncomingCase, int]],
        batch_ids: dict[tuple[str, str], int],
        channel: str,
        actor: str,
        actor_user_id: int | None,
        result: IngestResult,
    ) -> None:
        """A request number seen again with another outcome (Chicago lists an SR once per
        crew outcome) is an update of the same request: a note on its work order, through
        the writer. Keyed by its content, so importing the file again adds nothing."""
        writer_actor = Actor(actor_user_id, actor, channel)
        for case, case_id in present:
            if not case.resolution and case.closed_at is None:
                continue
            stored_id = batch_ids.get((case.source, case.external_id)) if case_id < 0 else case_id
            stored = session.get(Case, stored_id) if stored_id is not None else None
            if stored is None or stored.work_order_id is None:
                continue
            if case.resolution == stored.resolution and case.closed_at == stored.closed_at:
                continue  # the same row again (a re-import)
            key = f"{case.source}\x00{case.external_id}\x00{case.resolution}\x00{case.closed_at}"
            uid = "import-update-" + hashlib.sha256(key.encode()).hexdigest()[:40]
            text = f"{case.status_received or 'Update'} from the city: {case.resolution or 'closed'}"
            data = {"text": text, "source": case.source, "external_id": case.external_id}
            order = load_for_update(session, stored.work_order_id)
            _, added = add_fact(session, order, kind="note", uid=uid, data=data, actor=writer_actor,
                                occurred_at=case.closed_at or case.requested_at)
            if added:
                result.counts["updates_kept"] += 1
                # Its version moved: what this pipeline remembers of open orders is re-read.
                self._grids.clear()
                self._loaded_types.clear()

    def _split_present(
        self, session: Session, cases: list[IncomingCase]
    ) -> tuple[list[IncomingCase], list[tuple[IncomingCase, int]]]:
        by_source: dict[str, set[str]] = {}
        for case in cases:
            by_source.setdefault(case.source, set()).add(case.external_id)
        known: dict[tuple[str, str], int] = {}
        for source, ids in by_source.items():
            known.update({(source, ext): cid for ext, cid in _stored_ids(session, source, ids)})
        fresh: list[IncomingCase] = []
        present: list[tuple[IncomingCase, int]] = []
        seen: dict[tuple[str, str], int] = {}
        for case in cases:
            key = (case.source, case.external_id)
            if key in known:
                present.append((case, known[key]))
            elif key in seen:
                # The same id twice in one batch (Chicago lists an SR once per crew outcome):
                # -1 until the first one has its id (see _keep_outcomes).
                present.append((case, -1))
            else:
                seen[key] = len(fresh)
                fresh.append(case)
        return fresh, present

    def _locate(self, cases: list[IncomingCase], ref: ReferenceData) -> list[tuple[int | None, str | None]]:
        """(district id, problem) per case; a problem sends the case to the unlocated queue."""
        located: list[tuple[int | None, str | None]] = [
            (None, valid_wgs84(c.lat, c.lon)) for c in cases
        ]
        usable = [i for i, (_, problem) in enumerate(located) if problem is None]
        if not usable:
            return located
        if not len(ref.districts):
            if self.queue_without_areas:
                return [(None, p or NO_AREAS) for _, p in located]
            return [(None, p) for _, p in located]
        points = [(cases[i].lon, cases[i].lat) for i in usable]
        ids = ref.districts.assign([lon for lon, _ in points], [lat for _, lat in points])  # type: ignore[misc]  # usable: both set
        for i, district_id in zip(usable, ids.tolist(), strict=True):  # ints, not numpy scalars
            if district_id < 0:
                located[i] = (None, "outside the service areas")
            else:
                located[i] = (district_id, None)
        return located

    # -- merging -------------------------------------------------------------------------

    def _grid(self, code: str, radius: float) -> PointGrid:
        if code not in self._grids:
            self._grids[code] = PointGrid(radius)
        return self._grids[code]

    def _find_duplicate(
        self, session: Session, case: IncomingCase, x: float, y: float, stype: dict[str, Any], ref: ReferenceData
    ) -> _OpenOrder | None:
        """An open order of the case's type within the type's radius and window, or None."""
        radius = float(stype["duplicate_radius_m"])
        if radius <= 0:
            return None
        window = timedelta(hours=float(stype["duplicate_window_hours"]))
        grid = self._grid(case.service_code, radius)
        self._load_open_orders(session, case, radius, window, grid, ref)
        for _, order in grid.near(x, y, radius):
            if (order.first_reported_at - window) <= case.requested_at <= (order.last_reported_at + window):
                return order
        return None

    def _load_open_orders(
        self,
        session: Session,
        case: IncomingCase,
        radius: float,
        window: timedelta,
        grid: PointGrid,
        ref: ReferenceData,
    ) -> None:
        code = case.service_code
        if self.bulk:
            if code in self._loaded_types:
                return
            self._loaded_types.add(code)
            where = [col(WorkOrder.service_code) == code, col(WorkOrder.is_open)]
        else:
            dlat, dlon = ref.districts.projection.degrees_for(radius)
            assert case.lat is not None and case.lon is not None  # only located cases merge
            where = [
                col(WorkOrder.service_code) == code,
                col(WorkOrder.is_open),
                col(WorkOrder.lat).between(case.lat - dlat, case.lat + dlat),
                col(WorkOrder.lon).between(case.lon - dlon, case.lon + dlon),
                col(WorkOrder.last_reported_at) >= case.requested_at - window,
                col(WorkOrder.first_reported_at) <= case.requested_at + window,
            ]
            grid.cells.clear()
        rows = session.exec(
            select(  # type: ignore[call-overload]  # SQLModel's select is typed for up to four columns
                WorkOrder.id, WorkOrder.lon, WorkOrder.lat, WorkOrder.first_reported_at,
                WorkOrder.last_reported_at, WorkOrder.case_count, WorkOrder.version, WorkOrder.emergency,
                WorkOrder.priority, WorkOrder.crew_id,
            ).where(*where)
        ).all()
        for wid, lon, lat, first, last, count, version, emergency, priority, crew_id in rows:
            x, y = ref.districts.projection.point_xy(lon, lat)
            grid.add(x, y, _OpenOrder(wid, x, y, first, last, count, version, emergency, priority, crew_id))

    def _preload_open_orders(self, session: Session, codes: set[str], ref: ReferenceData) -> None:
        """Bulk mode: the open orders of every type first seen in this batch, in one query."""
        missing = sorted(codes - self._loaded_types)
        if not missing:
            return
        self._loaded_types.update(missing)
        for code in missing:
            self._grid(code, float(ref.service_types[code]["duplicate_radius_m"]))
        rows = session.exec(
            select(  # type: ignore[call-overload]  # SQLModel's select is typed for up to four columns
                WorkOrder.id, WorkOrder.service_code, WorkOrder.lon, WorkOrder.lat, WorkOrder.first_reported_at,
                WorkOrder.last_reported_at, WorkOrder.case_count, WorkOrder.version, WorkOrder.emergency,
                WorkOrder.priority, WorkOrder.crew_id,
            ).where(WorkOrder.service_code.in_(missing), WorkOrder.is_open)  # type: ignore[attr-defined]
        ).all()
        for wid, code, lon, lat, first, last, count, version, emergency, priority, crew_id in rows:
            x, y = ref.districts.projection.point_xy(lon, lat)
            self._grids[code].add(x, y, _OpenOrder(wid, x, y, first, last, count, version, emergency, priority, crew_id))


# -- row builders ------------------------------------------------------------------------


def _shifted(case: IncomingCase, shift: timedelta, now: datetime) -> IncomingCase:
    closed = min(case.closed_at + shift, now) if case.closed_at else None
    return replace(case, requested_at=min(case.requested_at + shift, now), closed_at=closed)


# Columns in the order the row builders fill them: tuples, not dicts, because a city export
# is tens of thousands of rows and a dict per row costs more than its insert.
_CASE_COLUMNS = (
    "id", "source", "external_id", "service_code", "service_name", "description", "address", "lat", "lon",
    "location_state", "location_problem", "emergency", "district_id", "reported_district", "requested_at",
    "original_requested_at", "closed_at", "status_received", "resolution", "agency", "media_url", "attributes",
    "work_order_id", "tracking_token", "import_run_id", "received_at", "updated_at",
)
_ORDER_COLUMNS = (
    "id", "number", "service_code", "lat", "lon", "address", "description", "district_id", "priority", "emergency",
    "sla_due_at", "crew_id", "status", "is_open", "resolution", "notes", "notes_version", "deleted_at",
    "first_reported_at", "last_reported_at", "closed_at", "case_count", "version", "created_at", "updated_at",
)
_EVENT_COLUMNS = EVENT_COLUMNS
_CONTACT_COLUMNS = ("case_id", "first_name", "last_name", "email", "phone", "device_id")


def _case_row(
    case: IncomingCase,
    case_id: int,
    token: str,
    located: tuple[int | None, str | None],
    emergency: bool,
    work_order_id: int | None,
    now: datetime,
    import_run_id: int | None,
    time_shift: timedelta | None,
) -> tuple[Any, ...]:
    district_id, problem = located
    return (
        case_id,
        case.source,
        case.external_id,
        case.service_code,
        case.service_name,
        case.description or "",
        case.address,
        case.lat,
        case.lon,
        "unlocated" if problem else "located",
        problem or None,
        emergency,
        district_id,
        case.reported_district,
        case.requested_at,
        case.requested_at - time_shift if time_shift else None,
        case.closed_at,
        case.status_received,
        case.resolution,
        case.agency,
        case.media_url,
        case.attributes or None,
        work_order_id,
        token,
        import_run_id,
        now,
        now,
    )


def _tracking_tokens(count: int) -> list[str]:
    """Unguessable tokens (128 random bits each), drawn from the OS in one call per batch."""
    pool = secrets.token_bytes(16 * count)
    return [base64.urlsafe_b64encode(pool[i : i + 16]).rstrip(b"=").decode() for i in range(0, 16 * count, 16)]



@dataclass(slots=True)
class _Events:
    """The event rows of one batch, all written by the same actor, channel and moment."""

    channel: str
    actor: str
    actor_user_id: int | None
    now: datetime
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def add(
        self,
        work_order_id: int,
        version: int,
        kind: str,
        occurred_at: datetime,
        *,
        from_status: str | None = None,
        to_status: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.rows.append((
            new_event_uid(), work_order_id, version, kind, from_status, to_status, data, self.channel,
            self.actor_user_id, self.actor, occurred_at, self.now,
        ))


def _merge_into(target: _OpenOrder, case: IncomingCase) -> None:
    """Widen the target's reporting window (later cases of the batch compare against it).
    The writer bumps its version and case count under a row lock."""
    target.last_reported_at = max(target.last_reported_at, case.requested_at)
    target.first_reported_at = min(target.first_reported_at, case.requested_at)


@functools.lru_cache(maxsize=256)
def _hours(hours: float) -> timedelta:
    # timedelta(hours=<float>) costs a microsecond per order; there are only a few SLAs.
    return timedelta(hours=hours)


# The statuses a new order can take, as stored (an enum's .value is a property lookup per row).
_NEW, _ASSIGNED, _COMPLETED = Status.NEW.value, Status.ASSIGNED.value, Status.COMPLETED.value


def _new_order(
    order_id: int,
    case: IncomingCase,
    stype: dict[str, Any],
    district_id: int | None,
    keyword: str | None,
    crew_id: int | None,
    case_id: int,
    x: float,
    y: float,
    events: _Events,
) -> tuple[tuple[Any, ...], _OpenOrder | None]:
    """The new order's row (its events go to `events`) and, if it is open, what merging needs to know of it."""
    sla_hours = float(stype["sla_hours"])
    priority = int(stype["default_priority"])
    if keyword:
        priority, sla_hours = 1, min(sla_hours, 4.0)
    closed = case.is_closed
    if closed:
        status = _COMPLETED
    elif crew_id is not None:
        status = _ASSIGNED
    else:
        status = _NEW
    created_data: dict[str, Any] = {"case_id": case_id, "priority": priority}
    if crew_id is not None:
        created_data["crew_id"] = crew_id
        created_data["routed_by"] = "routing rule"
    version = 1
    events.add(order_id, version, "created", case.requested_at,
               to_status=_ASSIGNED if crew_id is not None and not closed else _NEW,
               data=created_data)
    if keyword:
        version += 1
        events.add(order_id, version, "alert", case.requested_at,
                   data={"reason": "emergency keyword", "keyword": keyword})
    if closed:
        version += 1
        events.add(order_id, version, "status", case.closed_at or case.requested_at,
                   from_status=_NEW, to_status=_COMPLETED,
                   data={"resolution": case.resolution})
    now = events.now
    row = (
        order_id,
        format_number(order_id),
        case.service_code,
        case.lat,
        case.lon,
        case.address,
        case.description or "",
        district_id,
        priority,
        bool(keyword),
        case.requested_at + _hours(sla_hours),
        crew_id,
        status,
        not closed,
        case.resolution if closed else None,
        "",  # notes
        0,  # notes_version
        None,  # deleted_at
        case.requested_at,  # first_reported_at
        case.requested_at,  # last_reported_at
        case.closed_at,
        1,  # case_count
        version,
        now,  # created_at
        now,  # updated_at
    )
    if closed:
        return row, None
    return row, _OpenOrder(order_id, x, y, case.requested_at, case.requested_at, 1, version, bool(keyword), priority, crew_id)


def _service_types(session: Session, codes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Service types as plain dicts (a Core read: ORM objects cost more than the rows)."""
    table = ServiceType.__table__  # type: ignore[attr-defined]
    query = table.select() if codes is None else table.select().where(table.c.code.in_(codes))
    return {row["code"]: dict(row) for row in session.connection().execute(query).mappings()}


def _bulk_insert(
    session: Session,
    model: type,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    memo: dict[datetime, str] | None = None,
) -> None:
    """One driver-level executemany: several times faster than ORM objects for an export."""
    bulk_insert(session.connection(), model.__table__, columns, rows, memo=memo)  # type: ignore[attr-defined]


def _stored_ids(session: Session, source: str, external_ids: set[str]) -> list[tuple[str, int]]:
    """(external id, case id) of those of `external_ids` already stored for `source`.

    One driver-level query: SQLAlchemy's expanding IN costs more per id than the lookup.
    """
    connection = session.connection()
    table = Case.__table__.name  # type: ignore[attr-defined]
    mark = "?" if connection.dialect.name == "sqlite" else "%s"
    marks = ", ".join([mark] * len(external_ids))
    sql = f"SELECT external_id, id FROM {table} WHERE source = {mark} AND external_id IN ({marks})"  # noqa: S608
    return [(ext, cid) for ext, cid in connection.exec_driver_sql(sql, (source, *external_ids))]


def _allocate_ids(session: Session, model: type, count: int) -> list[int]:
    """Reserve `count` primary keys up front so related rows can be written in bulk.

    SQLite: the caller holds the writer lock (BEGIN IMMEDIATE), so max(id) is stable.
    PostgreSQL: draw from the table's own sequence.
    """
    if count == 0:
        return []
    table = model.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        rows = session.connection().execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
            {"table": table.name, "n": count},
        ).scalars()
        return list(rows)
    start = session.exec(select(func.coalesce(func.max(table.c.id), 0))).one()
    return list(range(start + 1, start + 1 + count))

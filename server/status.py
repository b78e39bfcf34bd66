"""The work-order state machine, held as data.

Each status has a kind (open, fixed, closed) that decides everything else: whether the job
is still work, what Open311 reports (`open`/`closed`) and which mySociety extended status
a FixMyStreet-style front end sees. Code asks the table, never compares strings ad hoc.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Kind",
    "Status",
    "StatusInfo",
    "STATUSES",
    "TRANSITIONS",
    "CREW_TARGETS",
    "RESOLUTION_CODES",
    "CANNOT_COMPLETE_REASONS",
    "HOLD_REASONS",
    "InvalidTransition",
    "can_transition",
    "check_transition",
    "info",
]


class Kind(StrEnum):
    OPEN = "open"
    FIXED = "fixed"
    CLOSED = "closed"


class Status(StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ON_SITE = "on_site"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    CANNOT_COMPLETE = "cannot_complete"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class StatusInfo:
    status: Status
    label: str
    kind: Kind
    open311: str  # GeoReport v2: "open" | "closed"
    extended: str  # mySociety servicerequestupdates extended status
    resident_cares: bool  # a change into it is worth telling the reporter about


STATUSES: dict[Status, StatusInfo] = {
    s.status: s
    for s in (
        StatusInfo(Status.NEW, "New", Kind.OPEN, "open", "open", False),
        StatusInfo(Status.ASSIGNED, "Assigned", Kind.OPEN, "open", "action_scheduled", True),
        StatusInfo(Status.EN_ROUTE, "Crew en route", Kind.OPEN, "open", "in_progress", False),
        StatusInfo(Status.ON_SITE, "Crew on site", Kind.OPEN, "open", "in_progress", True),
        StatusInfo(Status.ON_HOLD, "On hold", Kind.OPEN, "open", "investigating", False),
        StatusInfo(Status.COMPLETED, "Completed", Kind.FIXED, "closed", "fixed", True),
        StatusInfo(Status.CANNOT_COMPLETE, "Cannot complete", Kind.CLOSED, "closed", "unable_to_fix", True),
        StatusInfo(Status.CANCELLED, "Cancelled", Kind.CLOSED, "closed", "no_further_action", True),
    )
}

_WORKING = {Status.EN_ROUTE, Status.ON_SITE}

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.ASSIGNED, Status.ON_HOLD, Status.CANCELLED}),
    Status.ASSIGNED: frozenset(
        {Status.NEW, Status.EN_ROUTE, Status.ON_SITE, Status.ON_HOLD, Status.COMPLETED,
         Status.CANNOT_COMPLETE, Status.CANCELLED}
    ),
    Status.EN_ROUTE: frozenset(
        {Status.ASSIGNED, Status.ON_SITE, Status.ON_HOLD, Status.COMPLETED,
         Status.CANNOT_COMPLETE, Status.CANCELLED}
    ),
    Status.ON_SITE: frozenset(
        {Status.ASSIGNED, Status.EN_ROUTE, Status.ON_HOLD, Status.COMPLETED,
         Status.CANNOT_COMPLETE, Status.CANCELLED}
    ),
    Status.ON_HOLD: frozenset({Status.NEW, Status.ASSIGNED, Status.CANCELLED} | _WORKING),
    # Closed states reopen only to the queue, by a dispatcher: the old facts stay.
    Status.COMPLETED: frozenset({Status.NEW, Status.ASSIGNED}),
    Status.CANNOT_COMPLETE: frozenset({Status.NEW, Status.ASSIGNED, Status.CANCELLED}),
    Status.CANCELLED: frozenset({Status.NEW, Status.ASSIGNED}),
}


# The statuses a crew may move its own job to from the phone (the sync `status` mutation
# accepts these and no others); the rest are a dispatcher's.
CREW_TARGETS: frozenset[Status] = frozenset(
    {Status.ASSIGNED, Status.EN_ROUTE, Status.ON_SITE, Status.ON_HOLD, Status.COMPLETED, Status.CANNOT_COMPLETE}
)

# What a crew picks when it closes a job: a code (kept in the event, and in the resolution
# residents read as its label) and a free note. Held here, as data, so that the phone shows
# exactly these (GET /api/workflow) and never hard-codes them.
RESOLUTION_CODES: dict[str, str] = {
    "repaired": "Repaired",
    "replaced": "Replaced",
    "cleared": "Cleared or removed",
    "temporary_fix": "Made safe, temporary fix",
    "no_problem_found": "No problem found",
    "already_fixed": "Already fixed",
}
CANNOT_COMPLETE_REASONS: dict[str, str] = {
    "no_access": "No access to the site",
    "needs_equipment": "Needs other equipment",
    "needs_other_crew": "Needs another crew or agency",
    "unsafe": "Unsafe to work",
    "not_found": "Could not find the problem",
    "private_property": "On private property",
}
HOLD_REASONS: dict[str, str] = {
    "waiting_parts": "Waiting for parts",
    "weather": "Weather",
    "called_away": "Called away to another job",
    "resident_request": "Resident asked to come back",
}


class InvalidTransition(ValueError):
    def __init__(self, current: Status, target: Status) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        super().__init__(f"status cannot go from {current} to {target} (allowed: {allowed})")
        self.current = current
        self.target = target


def info(status: str | Status) -> StatusInfo:
    return STATUSES[Status(status)]


def can_transition(current: str | Status, target: str | Status) -> bool:
    return Status(target) in TRANSITIONS[Status(current)]


def check_transition(current: str | Status, target: str | Status) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(Status(current), Status(target))

"""What the crew app needs to know to offer the right buttons, read from the server's data:

    GET /api/workflow    statuses (label, kind), the moves a crew may make from each,
                         resolution codes, cannot-complete and on-hold reasons, the map tiles

Public (no sign-in): it holds no one's data, and the app's service worker keeps a copy so
that a phone that starts offline still shows the right buttons.
"""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency

from server.settings import Settings
from server.status import (
    CANNOT_COMPLETE_REASONS,
    CREW_TARGETS,
    HOLD_REASONS,
    RESOLUTION_CODES,
    STATUSES,
    TRANSITIONS,
    Kind,
)

__all__ = ["Workflow", "workflow", "workflow_of"]


class StatusPublic(msgspec.Struct):
    code: str
    label: str
    kind: str  # open | fixed | closed
    # Where a crew may move a job in this status, in the table's order. None from a closed
    # status: reopening a finished job is a dispatcher's decision.
    crew_moves: list[str]


class Choice(msgspec.Struct):
    code: str
    label: str


class MapTiles(msgspec.Struct):
    tiles_url: str
    tiles_attribution: str


class Workflow(msgspec.Struct):
    statuses: list[StatusPublic]
    resolution_codes: list[Choice]
    cannot_complete_reasons: list[Choice]
    hold_reasons: list[Choice]
    map: MapTiles


def _choices(table: dict[str, str]) -> list[Choice]:
    return [Choice(code, label) for code, label in table.items()]


def workflow_of(settings: Settings) -> Workflow:
    order = list(STATUSES)  # the table's order: new → … → cancelled
    return Workflow(
        statuses=[
            StatusPublic(
                code=s.value, label=item.label, kind=item.kind.value,
                crew_moves=[t.value for t in order if t in TRANSITIONS[s] and t in CREW_TARGETS]
                if item.kind == Kind.OPEN else [],
            )
            for s, item in STATUSES.items()
        ],
        resolution_codes=_choices(RESOLUTION_CODES),
        cannot_complete_reasons=_choices(CANNOT_COMPLETE_REASONS),
        hold_reasons=_choices(HOLD_REASONS),
        # The same tiles as the resident pages' map (ResidentSettings).
        map=MapTiles(tiles_url=settings.resident.tiles_url, tiles_attribution=settings.resident.tiles_attribution),
    )


@get("/api/workflow", operation_id="workflow", sync_to_thread=False)  # public: PUBLIC_API_PATHS
def workflow(settings: NamedDependency[Settings]) -> Response[Workflow]:
    """The state machine's crew moves, resolution codes and reasons, and the map tiles."""
    return Response(workflow_of(settings), headers={"Cache-Control": "no-cache"})

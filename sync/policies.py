"""Conflict policy kinds, as small functions a server calls inside its mutators.

Conflicts are settled by the kind of field, never by device clocks:

- status: `check_transition` against the state machine held as data;
- append-only facts (notes, photos, time): keyed by client ids, they cannot conflict;
- server-owned fields (assignment, schedule, priority): `server_owned` keeps the attempt;
- shared free text: `optimistic_text` compares the version the crew saw.

`held_at` answers "did this crew hold the job when it recorded that fact?".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sync.registry import MutationContext

__all__ = ["check_transition", "held_at", "optimistic_text", "server_owned"]


def check_transition(allowed: Mapping[str, Collection[str]], current: str, target: str) -> bool:
    """Is `current → target` an edge of the state machine `allowed` (state → next states)?"""
    return target in allowed.get(current, ())


def optimistic_text(ctx: MutationContext, *, entity: str, entity_id: str | int, field: str,
                    base_version: int | None, current_version: int | None,
                    server_value: Any, client_value: Any) -> bool:
    """True: apply the client's value. False: the field changed since the version the crew
    saw, so the server value stays and the crew's value is recorded as a conflict.

    Pass as `current_version` the version at which *this field* last changed, not the
    entity's version: otherwise any other edit (even the crew's own status change queued
    before this one) would turn every later text edit into a conflict.
    """
    if base_version == current_version or server_value == client_value:
        return True
    ctx.conflict(entity=entity, entity_id=entity_id, field=field, base_version=base_version,
                 server_value=server_value, client_value=client_value, kind="optimistic")
    return False


def server_owned(ctx: MutationContext, *, entity: str, entity_id: str | int, field: str,
                 server_value: Any, client_value: Any) -> None:
    """The server decides this field: a client's differing value is recorded, never applied."""
    if server_value != client_value:
        ctx.conflict(entity=entity, entity_id=entity_id, field=field, base_version=None,
                     server_value=server_value, client_value=client_value, kind="server_owned")


def held_at(assignments: Sequence[tuple[datetime, str | None]], key: str, at: datetime,
            grace: timedelta) -> bool:
    """Did `key` hold the job at some instant within `grace` of `at`?

    `assignments` is the job's history of (from_time, holder) (holder None: unassigned),
    in any order; each holding lasts until the next entry. `at` is device time, so pass
    `ctx.occurred_at` (never later than arrival); `grace` bounds how far a device clock
    or a late reassignment may stretch a holding.
    """
    history = sorted(assignments, key=lambda entry: entry[0])
    low, high = at - grace, at + grace
    for index, (start, holder) in enumerate(history):
        end = history[index + 1][0] if index + 1 < len(history) else None
        if holder == key and start <= high and (end is None or end > low):
            return True
    return False

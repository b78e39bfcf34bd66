"""Mutators: the named, versioned edits a server lets its clients make.

A mutator is a plain function `apply(session, ctx, args) -> Applied`. It runs inside a
savepoint of the push's transaction: it changes the server's tables, records its domain
changes in the feed (`sync.record_change`) and may record conflicts (`ctx.conflict`, or the
helpers in sync.policies). To refuse, it raises `Rejected(reason)`; any other exception
is logged and treated the same way. Either way its effects are rolled back, the whole
payload is kept in `sync_rejection`, and the client's queue moves on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from sqlmodel import Session

from sync.models import SyncConflict

__all__ = ["Applied", "MutationContext", "Mutator", "MutatorRegistry", "Rejected"]


class Rejected(Exception):
    """Raised by a mutator that refuses the edit; `reason` is shown to the crew and reviewer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Applied:
    """What a mutator returns. A recorded conflict (or `conflicted=True`) makes the
    mutation's status "conflict": it was accepted, but part of it lost to the server."""

    server_version: int | None = None
    result: dict[str, Any] | None = None
    conflicted: bool = False


@dataclass
class MutationContext:
    client_id: str
    user_key: str
    seq: int
    mid: str
    name: str
    device_ts: datetime | None
    received_at: datetime
    actor: Any  # the server's own object (e.g. the signed-in user), passed through untouched
    session: Session
    conflicts: int = field(default=0, init=False)

    @property
    def occurred_at(self) -> datetime:
        """When the edit was made: the device time, but never later than its arrival."""
        if self.device_ts is None:
            return self.received_at
        return min(self.device_ts, self.received_at)

    def conflict(self, *, entity: str, entity_id: str | int, field: str, base_version: int | None,
                 server_value: Any, client_value: Any, kind: str = "optimistic") -> None:
        """Keep the losing client value for review (the server value stays)."""
        self.session.add(SyncConflict(
            kind=kind, client_id=self.client_id, user_key=self.user_key, seq=self.seq, mid=self.mid,
            name=self.name, entity=entity, entity_id=str(entity_id), field=field,
            base_version=base_version, server_value=server_value, client_value=client_value,
        ))
        self.conflicts += 1


@dataclass(frozen=True)
class Mutator:
    name: str
    version: int  # bump when `args` changes shape; informational
    args: type[msgspec.Struct]  # client args are converted to this (a failure rejects, naming the field)
    apply: Callable[[Session, MutationContext, Any], Applied]
    # Optional: a run of consecutive mutations of this name at once, in one savepoint, with
    # one result each; raising (Rejected or anything) makes the engine apply them one by one.
    apply_many: Callable[[Session, list[MutationContext], list[Any]], list[Applied]] | None = None


class MutatorRegistry:
    def __init__(self, mutators: tuple[Mutator, ...] = ()) -> None:
        self._mutators: dict[str, Mutator] = {}
        for mutator in mutators:
            self.register(mutator)

    def register(self, mutator: Mutator) -> Mutator:
        if mutator.name in self._mutators:
            raise ValueError(f"mutator {mutator.name!r} is already registered")
        self._mutators[mutator.name] = mutator
        return mutator

    def get(self, name: str) -> Mutator:
        """The mutator called `name`; KeyError if there is none."""
        return self._mutators[name]

    def names(self) -> list[str]:
        return sorted(self._mutators)

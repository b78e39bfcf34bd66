"""The wire types of push and pull: msgspec Structs, with their size bounds.

Litestar decodes request bodies into these (a violated bound is a 4xx naming the field)
and encodes responses from them. Structural bounds (identifier lengths, the client id's
alphabet, seq >= 1) fail the whole request; anything about a single mutation's meaning
(unknown name, bad arguments) rejects only that mutation, so a queue never blocks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "Change",
    "Mutation",
    "MutationResult",
    "PullRequest",
    "PullResponse",
    "PushRequest",
    "PushResponse",
]

ClientId = Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**62)]
Status = Literal["applied", "duplicate", "rejected", "conflict"]
Op = Literal["upsert", "delete", "evict"]


class Mutation(msgspec.Struct, frozen=True):
    """One named edit from a client's outbox. `seq` orders a client's edits, `mid` names
    this one for good (a uuid made by the device), `device_ts` is when the crew made it."""

    seq: Seq
    mid: Ident
    name: Ident
    args: dict[str, Any]
    device_ts: datetime | None = None  # informational: never used to settle a conflict


class PushRequest(msgspec.Struct):
    client_id: ClientId
    schema_version: int
    mutations: list[Mutation]
    app_version: Annotated[str, msgspec.Meta(max_length=64)] = ""


class MutationResult(msgspec.Struct):
    seq: int
    mid: str
    status: Status
    server_version: int | None = None  # the affected entity's version after it, when known
    result: dict[str, Any] | None = None
    reason: str | None = None
    # For a duplicate: what the first delivery got ("applied", "rejected" or "conflict").
    original_status: Status | None = None


class PushResponse(msgspec.Struct):
    last_seq: int  # every seq up to this one is acknowledged: drop them from the outbox
    results: list[MutationResult]
    expected_seq: int | None = None  # the batch had a gap: resend from this seq


class PullRequest(msgspec.Struct):
    client_id: ClientId
    cursor: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 500


class Change(msgspec.Struct):
    op: Op  # upsert: store data; delete: it is gone; evict: no longer in your scope
    entity: str
    id: str
    version: int | None = None
    data: dict[str, Any] | None = None


class PullResponse(msgspec.Struct):
    cursor: str
    has_more: bool
    changes: list[Change]

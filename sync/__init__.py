"""Fieldwork's sync engine: offline edits that never get lost.

A generic server side for offline-first clients, like Replicache's: server-authoritative
named mutations pushed from a per-client queue (applied once, in order, each in its own
savepoint, or a run of them at once where the mutator offers `apply_many`), a scoped change feed pulled through a cursor that never skips a late commit,
conflict policy kinds, and records of conflicts and rejections for review. It knows
nothing of work orders and imports nothing from the server or from Litestar.

    engine = SyncEngine(registry=registry, loaders={"work_order": load_work_orders})
    response = engine.push(session, user_key="user:7", actor=user, request=push_request)
    session.commit()  # the caller commits: effects, results and last_seq together
"""

from sync.engine import DeltaLoader, Loader, SyncEngine
from sync.errors import (
    ClientForbidden,
    InvalidRequest,
    PayloadTooLarge,
    SyncError,
    UnknownCursor,
    UnsupportedSchemaVersion,
)
from sync.feed import (
    FeedRow,
    compact_feed,
    current_cursor,
    database_id,
    ensure_identity,
    read_feed,
    record_change,
    record_changes,
)
from sync.models import SyncChange, SyncClient, SyncConflict, SyncIdentity, SyncMutation, SyncRejection
from sync.policies import check_transition, held_at, optimistic_text, server_owned
from sync.protocol import (
    Change,
    Mutation,
    MutationResult,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
)
from sync.registry import Applied, MutationContext, Mutator, MutatorRegistry, Rejected
from sync.review import list_conflicts, list_rejections, resolve_conflict, resolve_rejection

__all__ = [
    # protocol
    "Change", "Mutation", "MutationResult", "PullRequest", "PullResponse", "PushRequest", "PushResponse",
    # engine and mutators
    "SyncEngine", "Loader", "DeltaLoader", "MutatorRegistry", "Mutator", "MutationContext", "Applied", "Rejected",
    # conflict policy kinds
    "check_transition", "optimistic_text", "server_owned", "held_at",
    # change feed
    "record_change", "record_changes", "read_feed", "current_cursor", "FeedRow", "compact_feed", "database_id",
    "ensure_identity",
    # review
    "list_conflicts", "resolve_conflict", "list_rejections", "resolve_rejection",
    # errors
    "SyncError", "InvalidRequest", "PayloadTooLarge", "ClientForbidden", "UnsupportedSchemaVersion",
    "UnknownCursor",
    # tables
    "SyncClient", "SyncMutation", "SyncChange", "SyncConflict", "SyncRejection", "SyncIdentity",
]

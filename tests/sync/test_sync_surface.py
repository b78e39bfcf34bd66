"""The public surface of `sync`, its error hierarchy, and its independence from the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sync

DOCUMENTED = {
    "Change", "Mutation", "MutationResult", "PullRequest", "PullResponse", "PushRequest", "PushResponse",
    "SyncEngine", "Loader", "DeltaLoader", "MutatorRegistry", "Mutator", "MutationContext", "Applied", "Rejected",
    "check_transition", "optimistic_text", "server_owned", "held_at",
    "record_change", "record_changes", "read_feed", "current_cursor", "FeedRow", "compact_feed", "database_id",
    "ensure_identity",
    "list_conflicts", "resolve_conflict", "list_rejections", "resolve_rejection",
    "SyncError", "InvalidRequest", "PayloadTooLarge", "ClientForbidden", "UnsupportedSchemaVersion",
    "UnknownCursor",
    "SyncClient", "SyncMutation", "SyncChange", "SyncConflict", "SyncRejection", "SyncIdentity",
}


def test_the_public_surface_is_exactly_the_documented_names() -> None:
    assert len(sync.__all__) == len(set(sync.__all__))
    assert set(sync.__all__) == DOCUMENTED
    assert all(getattr(sync, name) is not None for name in sync.__all__)


def test_errors_form_one_hierarchy_with_http_statuses() -> None:
    statuses = {sync.InvalidRequest: 422, sync.PayloadTooLarge: 413, sync.ClientForbidden: 403,
                sync.UnsupportedSchemaVersion: 409, sync.UnknownCursor: 422}
    for error, status in statuses.items():
        assert issubclass(error, sync.SyncError) and error.status_code == status
    assert not issubclass(sync.Rejected, sync.SyncError)  # a rejected mutation is an answer, not an error


def test_sync_tables_are_prefixed() -> None:
    for model in (sync.SyncClient, sync.SyncMutation, sync.SyncChange, sync.SyncConflict, sync.SyncRejection):
        assert model.__tablename__.startswith("sync_")


def test_sync_imports_nothing_from_the_server_or_litestar() -> None:
    root = Path(sync.__file__).resolve().parents[1]
    code = "import sys, sync; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert "'server'" not in loaded.stdout and "'litestar'" not in loaded.stdout

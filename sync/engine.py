"""`SyncEngine`: push applies a client's queued mutations exactly once and in order; pull
reads the change feed of the actor's scopes, shaped by the server's loaders.

The engine works inside the caller's session and flushes; **the caller commits**. Give it
a write transaction (on SQLite one opened with BEGIN IMMEDIATE) so that each mutation's
effects, its result row and the client's last_seq commit together or not at all.

Its seams are plain callables: mutators (sync.registry) and loaders. A loader is
`(session, entity, ids, actor) -> {id: (version, data) | None}`; None means "not visible
to this actor now" and the change is skipped. `actor` is the server's own object, passed
through untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal, TypeVar

import msgspec
from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from sync.errors import ClientForbidden, InvalidRequest, PayloadTooLarge, UnsupportedSchemaVersion
from sync.feed import FeedRow, read_feed
from sync.models import SyncClient, SyncMutation, SyncRejection, utcnow
from sync.protocol import (
    Change,
    ClientId,
    Mutation,
    MutationResult,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
)
from sync.registry import Applied, MutationContext, MutatorRegistry, Rejected

__all__ = ["DeltaLoader", "Loader", "SyncEngine"]

Loaded = dict[str, tuple[int | None, dict[str, Any]] | None]
Loader = Callable[[Session, str, list[str], Any], Loaded]
# A loader that can send only what changed: `since` maps each id to the lowest entity version
# among the feed rows this pull delivers for it (the device holds everything before it), or
# is None when the device primes and holds nothing.
DeltaLoader = Callable[[Session, str, list[str], Any, "dict[str, int] | None"], Loaded]
log = logging.getLogger("sync")
_INSERT = {"postgresql": pg_insert, "sqlite": sqlite_insert}
_AT_FIELD = re.compile(r"at `\$\.(.+)`$")
_T = TypeVar("_T", PushRequest, PullRequest)


class SyncEngine:
    def __init__(self, *, registry: MutatorRegistry, loaders: Mapping[str, Loader],
                 delta_loaders: Mapping[str, DeltaLoader] | None = None,
                 min_schema_version: int = 1, max_schema_version: int = 1,
                 max_mutations: int = 500, max_args_bytes: int = 64_000,
                 clock_grace: timedelta = timedelta(minutes=15)) -> None:
        if min_schema_version > max_schema_version:
            raise ValueError("min_schema_version > max_schema_version")
        self.registry = registry
        self.loaders = dict(loaders)
        self.delta_loaders = dict(delta_loaders or {})
        self.schema_versions = (min_schema_version, max_schema_version)
        self.max_mutations = max_mutations
        self.max_args_bytes = max_args_bytes
        self.clock_grace = clock_grace

    # -- push ---------------------------------------------------------------------------

    def push(self, session: Session, *, user_key: str, actor: Any, request: PushRequest,
             now: datetime | None = None) -> PushResponse:
        """Apply `request`'s mutations from the client's last_seq + 1 on; see DESIGN.md.

        Raises a SyncError (and writes nothing) for an envelope it refuses as a whole.
        """
        if len(request.mutations) > self.max_mutations:
            raise PayloadTooLarge(f"at most {self.max_mutations} mutations per push, got "
                                  f"{len(request.mutations)}", field="mutations")
        request = _validated(request, PushRequest)
        low, high = self.schema_versions
        if not low <= request.schema_version <= high:
            raise UnsupportedSchemaVersion(request.schema_version, self.schema_versions)
        for index, (before, mutation) in enumerate(pairwise(request.mutations), start=1):
            if mutation.seq <= before.seq:
                raise InvalidRequest(f"seq must increase strictly within a push: {mutation.seq} "
                                     f"after {before.seq}", field=f"mutations[{index}].seq")
        now = now or utcnow()
        client = self._bind(session, request.client_id, user_key, lock=True, now=now)
        client.schema_version, client.app_version = request.schema_version, request.app_version
        client.last_seen_at = now
        seen = [m.seq for m in request.mutations if m.seq <= client.last_seq]
        stored = {row.seq: row for row in session.exec(select(SyncMutation).where(
            SyncMutation.client_id == client.client_id, SyncMutation.seq.in_(seen)))} if seen else {}  # type: ignore[attr-defined]
        results: list[MutationResult] = []
        rows: list[dict[str, Any]] = []  # sync_mutation rows, written in one statement at the end
        expected: int | None = None
        mutations = request.mutations
        index = 0
        while index < len(mutations):
            mutation = mutations[index]
            if mutation.seq <= client.last_seq:
                results.append(self._duplicate(session, client, mutation, stored.get(mutation.seq), now, rows))
                index += 1
            elif mutation.seq == client.last_seq + 1:
                run = self._run(mutations, index)
                floor = client.device_floor
                applied = self._apply_run(session, client, actor, run, now, rows) if len(run) > 1 else None
                if applied is None:
                    client.device_floor = floor
                    applied = [self._apply(session, client, actor, m, now, rows) for m in run]
                results += applied
                client.last_seq = run[-1].seq
                index += len(run)
            else:
                expected = client.last_seq + 1
                break
        if rows:
            client.last_push_at = now
        session.add(client)
        session.flush()
        if rows:
            session.connection().execute(insert(SyncMutation.__table__), rows)  # type: ignore[attr-defined]
        return PushResponse(last_seq=client.last_seq, results=results, expected_seq=expected)

    def _run(self, mutations: Sequence[Mutation], start: int) -> Sequence[Mutation]:
        """The mutations from `start` on with consecutive seqs and one name that can be
        applied many at once."""
        first = mutations[start]
        try:
            if self.registry.get(first.name).apply_many is None:
                return mutations[start:start + 1]
        except KeyError:
            return mutations[start:start + 1]
        if _device_time(first) is _BAD:
            return mutations[start:start + 1]
        end = start + 1
        while (end < len(mutations) and mutations[end].name == first.name
               and mutations[end].seq == mutations[end - 1].seq + 1 and _device_time(mutations[end]) is not _BAD):
            end += 1
        return mutations[start:end]

    def _apply_run(self, session: Session, client: SyncClient, actor: Any, run: Sequence[Mutation],
                   now: datetime, rows: list[dict[str, Any]]) -> list[MutationResult] | None:
        """Apply `run` in one savepoint through its mutator's apply_many; None (and nothing
        written) if any of it needs the one-by-one path: invalid args, a refusal, an error."""
        mutator = self.registry.get(run[0].name)
        assert mutator.apply_many is not None
        contexts, many = [], []
        for m in run:
            if len(msgspec.json.encode(m.args)) > self.max_args_bytes:
                return None
            try:
                many.append(msgspec.convert(m.args, mutator.args))
            except msgspec.ValidationError:
                return None
            contexts.append(self._context(session, client, actor, m, now))
        savepoint = session.begin_nested()
        try:
            outcomes = mutator.apply_many(session, contexts, many)
            if len(outcomes) != len(run) or not all(isinstance(o, Applied) for o in outcomes):
                raise TypeError(f"mutator {mutator.name!r} returned {len(outcomes)} outcomes for {len(run)}")
            session.flush()
        except Exception as exc:  # noqa: BLE001 (any failure: apply them one by one instead)
            savepoint.rollback()
            if not isinstance(exc, Rejected):
                log.warning("mutations %r applied many at once failed (%s); applying them one by one",
                            mutator.name, type(exc).__name__)
            return None
        savepoint.commit()
        return [self._result(client, m, now, outcome, ctx, rows)
                for m, outcome, ctx in zip(run, outcomes, contexts, strict=True)]

    def _context(self, session: Session, client: SyncClient, actor: Any, m: Mutation,
                 now: datetime) -> MutationContext:
        return MutationContext(client_id=client.client_id, user_key=client.user_key, seq=m.seq,
                               mid=m.mid, name=m.name, device_ts=self._trusted_time(client, m, now),
                               received_at=now, actor=actor, session=session)

    def _trusted_time(self, client: SyncClient, m: Mutation, now: datetime) -> datetime:
        """When the edit was made, as far as the server can believe the device: its device
        time, but never later than its arrival, never earlier than an edit this client sent
        before it (device times only move forward), and never earlier than the client's
        previous acknowledged push less the grace. Advances the client's floor."""
        moment = _device_time(m)
        assert moment is not _BAD
        trusted = min(moment, now) if isinstance(moment, datetime) else now
        # client.last_push_at is the previous push's until this one ends.
        pushed = client.last_push_at - self.clock_grace if client.last_push_at is not None else None
        low = max((x for x in (client.device_floor, pushed) if x is not None), default=None)
        if low is not None and trusted < low:
            trusted = min(low, now)
        client.device_floor = trusted if client.device_floor is None else max(client.device_floor, trusted)
        return trusted

    def _apply(self, session: Session, client: SyncClient, actor: Any, m: Mutation,
               now: datetime, rows: list[dict[str, Any]]) -> MutationResult:
        if _device_time(m) is _BAD:
            return self._reject(session, client, m, now, rows, "device_ts is out of range: it cannot be "
                                "converted to UTC (check the phone's date and time)")
        try:
            mutator = self.registry.get(m.name)
        except KeyError:
            return self._reject(session, client, m, now, rows, f"unknown mutation {m.name!r}")
        size = len(msgspec.json.encode(m.args))
        if size > self.max_args_bytes:
            return self._reject(session, client, m, now, rows,
                                f"args too large: {size} bytes (at most {self.max_args_bytes})")
        try:
            args = msgspec.convert(m.args, mutator.args)
        except msgspec.ValidationError as exc:
            return self._reject(session, client, m, now, rows, f"invalid args: {exc}")
        ctx = self._context(session, client, actor, m, now)
        savepoint = session.begin_nested()
        try:
            outcome = mutator.apply(session, ctx, args)
            if not isinstance(outcome, Applied):
                raise TypeError(f"mutator {m.name!r} returned {outcome!r}, not Applied")
            session.flush()
        except Rejected as exc:
            savepoint.rollback()
            return self._reject(session, client, m, now, rows, exc.reason)
        except Exception as exc:
            savepoint.rollback()
            log.exception("mutation %r failed (client %s, seq %d)", m.name, client.client_id, m.seq)
            return self._reject(session, client, m, now, rows, f"server error: {type(exc).__name__}")
        savepoint.commit()
        return self._result(client, m, now, outcome, ctx, rows)

    def _result(self, client: SyncClient, m: Mutation, now: datetime, outcome: Applied,
                ctx: MutationContext, rows: list[dict[str, Any]]) -> MutationResult:
        status: Literal["conflict", "applied"] = "conflict" if outcome.conflicted or ctx.conflicts else "applied"
        rows.append(self._row(client, m, now, status, result=outcome.result,
                              server_version=outcome.server_version))
        return MutationResult(seq=m.seq, mid=m.mid, status=status,
                              server_version=outcome.server_version, result=outcome.result)

    def _reject(self, session: Session, client: SyncClient, m: Mutation, now: datetime,
                rows: list[dict[str, Any]], reason: str, *, keep_result: bool = True) -> MutationResult:
        reason = reason[:2000]
        session.add(SyncRejection(client_id=client.client_id, user_key=client.user_key, seq=m.seq,
                                  mid=m.mid, name=m.name, args=m.args, device_ts=_safe_utc(m.device_ts),
                                  reason=reason, created_at=now))
        if keep_result:
            rows.append(self._row(client, m, now, "rejected", reason=reason))
        return MutationResult(seq=m.seq, mid=m.mid, status="rejected", reason=reason)

    def _duplicate(self, session: Session, client: SyncClient, m: Mutation,
                   row: SyncMutation | None, now: datetime, rows: list[dict[str, Any]]) -> MutationResult:
        if row is None:
            return MutationResult(seq=m.seq, mid=m.mid, status="duplicate",
                                  reason="already received; its result is no longer kept")
        if row.mid != m.mid:  # a different edit reusing an acknowledged seq: keep it for review
            return self._reject(session, client, m, now, rows, f"seq {m.seq} was already used by "
                                f"mutation {row.mid}", keep_result=False)
        return MutationResult(seq=m.seq, mid=m.mid, status="duplicate", server_version=row.server_version,
                              result=row.result, reason=row.reason, original_status=row.status)  # type: ignore[arg-type]

    @staticmethod
    def _row(client: SyncClient, m: Mutation, now: datetime, status: str, *, result: dict[str, Any] | None = None,
             reason: str | None = None, server_version: int | None = None) -> dict[str, Any]:
        return {"client_id": client.client_id, "seq": m.seq, "mid": m.mid, "name": m.name, "args": m.args,
                "device_ts": _safe_utc(m.device_ts), "received_at": now, "status": status, "result": result,
                "reason": reason, "server_version": server_version}

    # -- clients ------------------------------------------------------------------------

    def bind_client(self, session: Session, *, client_id: str, user_key: str) -> None:
        """Bind `client_id` to `user_key` on first use; ClientForbidden if another user has it."""
        try:
            msgspec.convert(client_id, ClientId)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(str(exc), field="client_id") from None
        self._bind(session, client_id, user_key, lock=False, now=utcnow())

    def _bind(self, session: Session, client_id: str, user_key: str, *, lock: bool,
              now: datetime) -> SyncClient:
        query = select(SyncClient).where(SyncClient.client_id == client_id)
        if lock:  # serialises pushes of one client (SQLite's BEGIN IMMEDIATE already does)
            query = query.with_for_update()
        query = query.execution_options(populate_existing=True)
        client = session.exec(query).first()
        if client is None:  # first contact; two at once both insert, one row stays
            connection = session.connection()
            insert_client = _INSERT[connection.dialect.name](SyncClient.__table__)  # type: ignore[attr-defined]
            connection.execute(insert_client.values(  # type: ignore[attr-defined]  # both dialects' insert have it
                client_id=client_id, user_key=user_key, last_seq=0, schema_version=0, app_version="",
                created_at=now, last_seen_at=now,
            ).on_conflict_do_nothing(index_elements=["client_id"]))
            client = session.exec(query).one()
        if client.user_key != user_key:
            raise ClientForbidden("this client_id belongs to another user; start a new client",
                                  field="client_id")
        return client

    # -- pull ---------------------------------------------------------------------------

    def pull(self, session: Session, *, user_key: str, actor: Any, scopes: Sequence[str],
             request: PullRequest, bind: bool = True) -> PullResponse:
        """The changes of `scopes` after `request.cursor`, collapsed to one per entity and
        loaded for `actor`. Writes only when it first sees a client (to bind it); with
        `bind=False` it only reads, and the caller binds a new client (`bind_client`) in a
        write transaction of its own if `is_new_client` said so."""
        request = _validated(request, PullRequest)
        is_new = self.is_new_client(session, client_id=request.client_id, user_key=user_key)
        # Read before any write: on PostgreSQL our own txid would hold the feed back.
        rows, cursor, has_more = read_feed(session, scopes=scopes, cursor=request.cursor,
                                           limit=request.limit)
        if is_new and bind:
            self._bind(session, request.client_id, user_key, lock=False, now=utcnow())
        return PullResponse(cursor=cursor, has_more=has_more,
                            changes=self._changes(session, rows, actor, priming=request.cursor is None))

    def is_new_client(self, session: Session, *, client_id: str, user_key: str) -> bool:
        """Whether `client_id` is not bound yet; ClientForbidden if another user has it."""
        client = session.get(SyncClient, client_id)
        if client is not None and client.user_key != user_key:
            raise ClientForbidden("this client_id belongs to another user; start a new client",
                                  field="client_id")
        return client is None

    def _changes(self, session: Session, rows: list[FeedRow], actor: Any, *, priming: bool = False) -> list[Change]:
        last: dict[tuple[str, str], FeedRow] = {}
        since: dict[tuple[str, str], int] = {}
        for row in rows:  # the last op of each entity wins, in the order of last occurrence
            key = (row.entity, row.entity_id)
            last.pop(key, None)
            last[key] = row
            since[key] = min(since.get(key, row.version or 0), row.version or 0)
        wanted: dict[str, list[str]] = {}
        for row in last.values():
            if row.op == "upsert":
                wanted.setdefault(row.entity, []).append(row.entity_id)
        loaded = {}
        for entity, ids in wanted.items():
            if entity in self.delta_loaders:
                versions = None if priming else {key: since[entity, key] for key in ids}
                loaded[entity] = self.delta_loaders[entity](session, entity, ids, actor, versions)
            else:
                loaded[entity] = self._loader(entity)(session, entity, ids, actor)
        changes = []
        for row in last.values():
            if row.op != "upsert":
                changes.append(Change(op=row.op, entity=row.entity, id=row.entity_id, version=row.version))  # type: ignore[arg-type]
            elif (found := loaded[row.entity].get(row.entity_id)) is not None:
                changes.append(Change(op="upsert", entity=row.entity, id=row.entity_id,
                                      version=found[0], data=found[1]))
        return changes

    def _loader(self, entity: str) -> Loader:
        try:
            return self.loaders[entity]
        except KeyError:
            raise LookupError(f"no loader for entity {entity!r}") from None


def _validated(request: _T, kind: type[_T]) -> _T:
    """`request` checked against its declared bounds, as if it had come off the wire."""
    try:
        return msgspec.json.decode(msgspec.json.encode(request), type=kind)
    except msgspec.ValidationError as exc:
        match = _AT_FIELD.search(str(exc))
        raise InvalidRequest(str(exc), field=match[1] if match else None) from None


def _utc(moment: datetime | None) -> datetime | None:
    """Device times are kept as aware UTC; one without a zone is taken to be UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


class _Bad:
    """A device time that cannot be converted to UTC (e.g. year 1 with a positive offset)."""


_BAD = _Bad()


def _device_time(m: Mutation) -> datetime | _Bad | None:
    try:
        return _utc(m.device_ts)
    except (OverflowError, ValueError):
        return _BAD


def _safe_utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC, or None if it cannot be expressed there (kept raw in the args)."""
    try:
        return _utc(moment)
    except (OverflowError, ValueError):
        return None

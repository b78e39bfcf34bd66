"""The sender: from the outbox to the push services, each notice once.

One `Sender` runs inside every `fieldwork serve` worker (a lifespan task) and in
`fieldwork worker`; any number of them share the outbox. A round:

1. recover: rows whose sender died go back to `pending` if their POST had not started
   (`claimed`), and to `unknown` if it had (`sending`): such a notice may have reached the
   push service, and sending it again could tell a resident twice; it is not resent;
   rows older than their TTL become `expired`;
2. claim up to `batch_size` due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so senders
   never wait for each other; on SQLite the write transaction itself is the lock), each
   with a lease;
3. send them, up to `concurrency` POSTs in flight: a chunk of rows is marked `sending`
   (only rows still ours are sent) in one transaction with the results that came back
   meanwhile, while the rest are in flight, and its POSTs leave at once. So a hard kill
   leaves at most `concurrency` notices unknown (those in flight), and nothing claimed by
   a sender that died is sent twice;
4. while a full claim's last chunks are in flight, claim again (steps 1 and 2), so that a
   large wave flows through without a pause between claims.

The sender's own transactions skip PostgreSQL's wait for the disk flush
(`synchronous_commit = off`, as SQLite's WAL with `synchronous=NORMAL` does for every
transaction): a crash of the database itself, not of a sender, could forget the last
fraction of a second of this bookkeeping and send those few notices again.

Each notice is encrypted with pywebpush's `encode` (server.notify.encryption: a large claim
in a process of its own, ahead of its POSTs, so the loop does not wait on the cipher) and
sent with pywebpush's async API (`WebPusher.send_async`) over one shared aiohttp session:
aes128gcm, an explicit TTL, `Urgency`, a `Topic` (a newer notice about the same case
replaces one still queued for an offline phone) and a timeout. The VAPID header is signed
once per push service and reused (`VapidSigner`). Answers:

    200, 201, 202      sent
    404, 410           the subscription is gone: every binding of that endpoint is deleted
    429                retried after `Retry-After` (seconds or an HTTP date; 60 s if absent),
                       and the whole push service waits that long
    5xx, network       retried with exponential backoff and jitter, up to `max_attempts`
    413, other 4xx     failed (sending it again cannot help)
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio.to_thread
from sqlalchemy import Engine, and_, bindparam, delete, or_, select, text, update
from sqlmodel import Session

from server.db import read_session, write_session
from server.models import PushNotification, PushSubscription, utcnow
from server.notify.encryption import Encryptor, Plain, SealedPusher, encrypt_bodies
from server.notify.messages import encode_payload
from server.notify.vapid import VapidIdentity, VapidSigner, audience, load_identity
from server.notify.wakeup import register, unregister
from server.settings import PushSettings

__all__ = ["SendStats", "Sender", "retry_after_seconds"]

log = logging.getLogger("fieldwork.push")

_N = PushNotification.__table__  # type: ignore[attr-defined]
_S = PushSubscription.__table__  # type: ignore[attr-defined]
MAX_BACKOFF_SECONDS = 1800.0
MAX_RETRY_AFTER_SECONDS = 3600.0
DEFAULT_RETRY_AFTER_SECONDS = 60.0
PREFETCH_CHUNKS = 2  # the next claim is made when this many chunks of the current one are left to start


@dataclass(slots=True)
class SendStats:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    gone: int = 0
    failed: int = 0
    expired: int = 0
    deferred: int = 0
    lost_claims: int = 0  # claimed rows another sender took over (lease expired meanwhile)
    recovered: int = 0  # rows of a dead sender put back in the queue
    unknown: int = 0  # rows of a dead sender whose POST had started
    encrypted_aside: int = 0  # notices encrypted in the encryption process, not on the loop

    def add(self, other: SendStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class _Job:
    id: int
    endpoint: str
    origin: str  # the push service's (`audience`): its VAPID token, its 429 pause
    endpoint_hash: str
    p256dh: str
    auth: str
    payload: bytes
    urgency: str
    ttl: int
    topic: str | None
    attempts: int


@dataclass(slots=True)
class _Result:
    id: int
    state: str  # sent | retry | failed | gone | deferred
    status: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    endpoint_hash: str | None = None


_Claim = tuple[VapidSigner, list[_Job]]

# The statements every chunk runs, built once: SQLAlchemy then reuses their cache keys and
# compiled forms instead of building and hashing a new statement per chunk.
_MARK_SENT = (
    update(_N)
    .where(_N.c.id.in_(bindparam("b_ids", expanding=True)), _N.c.claimed_by == bindparam("b_me"),
           _N.c.state.in_(("sending", "claimed")))
    .values(state="sent", sent_at=bindparam("b_now", type_=_N.c.sent_at.type), attempts=_N.c.attempts + 1,
            last_status=bindparam("b_status", type_=_N.c.last_status.type), lease_until=None)
)
_START = (
    update(_N)
    .where(_N.c.id.in_(bindparam("b_ids", expanding=True)), _N.c.claimed_by == bindparam("b_me"),
           _N.c.state == "claimed")
    .values(state="sending", lease_until=bindparam("b_lease", type_=_N.c.lease_until.type))
    .returning(_N.c.id)
)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float:
    """A Retry-After header (delay seconds or an HTTP date) in seconds, within 1 s … 1 h."""
    if not value:
        return DEFAULT_RETRY_AFTER_SECONDS
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER_SECONDS
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or utcnow())).total_seconds()
    return min(max(seconds, 1.0), MAX_RETRY_AFTER_SECONDS)


def _topic(payload: dict[str, Any]) -> str | None:
    tag = payload.get("tag")
    if isinstance(tag, str) and 0 < len(tag) <= 32 and all(c.isalnum() or c in "-_" for c in tag):
        return tag
    return None


class Sender:
    """Sends due notices from the outbox; see the module docstring."""

    def __init__(self, engine: Engine, settings: PushSettings, *, name: str | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.name = name or f"{socket.gethostname()[:20]}-{uuid.uuid4().hex[:8]}"
        self.stats = SendStats()
        self._signer: VapidSigner | None = None
        self._paused: dict[str, float] = {}  # push service origin → monotonic time it may be tried again
        self._encryptor = Encryptor(settings.encryption_processes)
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)

    def close(self) -> None:
        """Stop the encryption process (`run` does this itself when it ends)."""
        self._encryptor.close()

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; wake on a poke from this process or every poll."""
        loop = asyncio.get_running_loop()
        waiter = asyncio.Event()
        register(loop, waiter)
        try:
            async with self._http() as http:
                while not stop.is_set():
                    try:
                        busy = await self.round(http, stop=stop)
                    except Exception:
                        log.exception("push sender round failed; trying again shortly")
                        busy = False
                    if busy:
                        continue
                    await self._wait(waiter, stop)
        finally:
            unregister(loop, waiter)
            self.close()

    async def drain(self, *, rounds: int | None = None) -> SendStats:
        """Send everything due now (for `fieldwork worker --once`, tests and benchmarks);
        the encryption process stays for the next call until `close()`."""
        before = SendStats()
        before.add(self.stats)
        async with self._http() as http:
            done = 0
            while await self.round(http):
                done += 1
                if rounds is not None and done >= rounds:
                    break
        after = SendStats()
        after.add(self.stats)
        for name in after.__dataclass_fields__:
            setattr(after, name, getattr(after, name) - getattr(before, name))
        return after

    def _http(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max(self.settings.concurrency, 1) * 2, ttl_dns_cache=300)
        return aiohttp.ClientSession(connector=connector)

    async def _wait(self, waiter: asyncio.Event, stop: asyncio.Event) -> None:
        tasks = [asyncio.ensure_future(waiter.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(tasks, timeout=self.settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            waiter.clear()

    # -- one round -----------------------------------------------------------------------

    @property
    def chunk(self) -> int:
        """Rows marked `sending` at a time: half the POSTs allowed in flight."""
        return max(self.settings.concurrency // 2, 1)

    async def round(self, http: aiohttp.ClientSession, *, stop: asyncio.Event | None = None) -> bool:
        """Claim due rows and send them, claim after claim while claims come back full;
        False when nothing was due.

        POSTs flow continuously, up to `concurrency` in flight. When a chunk's worth of
        them has come back, the next chunk is marked `sending` (with the results that came
        back meanwhile) while the others are still in flight, and starts at once: a row is
        never marked `sending` long before its POST leaves. The next claim is made while
        the current one's last chunks are in flight, so the push service never waits for
        the claim, and the pipeline is not drained between claims.
        """
        claim = await self._next_claim()
        if claim is None:
            return False
        results: list[_Result] = []
        gate = asyncio.Semaphore(max(self.settings.concurrency, 1))
        in_flight: set[asyncio.Task[None]] = set()
        ahead: asyncio.Future[_Claim | None] | None = None

        async def send(signer: VapidSigner, job: _Job, body: bytes | str) -> None:
            try:
                result = await self._send(http, signer, job, body)
                results.append(result)  # the list of now: the one before may be in the database already
            finally:
                gate.release()

        try:
            while claim is not None:
                signer, jobs = claim
                chunks = [jobs[i : i + self.chunk] for i in range(0, len(jobs), self.chunk)]
                plain = [[Plain(j.endpoint, j.p256dh, j.auth, j.payload) for j in chunk] for chunk in chunks]
                # A large claim is encrypted in the other process, every chunk queued at
                # once, so that the next chunk's bodies are ready when its turn comes.
                sealing = self._encryptor.ahead(plain)
                try:
                    for index, chunk in enumerate(chunks):
                        for _ in chunk:  # room for the whole chunk first
                            await gate.acquire()
                        if stop is not None and stop.is_set():
                            unsent = [j.id for c in chunks[index:] for j in c]
                            await self._stop(in_flight, results, unsent, ahead)
                            ahead = None
                            return False
                        if ahead is None and len(jobs) >= self.settings.batch_size \
                                and index >= len(chunks) - PREFETCH_CHUNKS:
                            ahead = asyncio.ensure_future(self._next_claim())
                        bodies, aside = (await self._encryptor.bodies(sealing[index], plain[index]) if sealing
                                         else (encrypt_bodies(plain[index]), False))
                        self.stats.encrypted_aside += len(chunk) if aside else 0
                        done, results = results, []
                        started = await anyio.to_thread.run_sync(self._record_and_start, done, [j.id for j in chunk])
                        for job, body in zip(chunk, bodies, strict=True):
                            if job.id not in started:
                                self.stats.lost_claims += 1
                                gate.release()
                                continue
                            task = asyncio.create_task(send(signer, job, body))
                            in_flight.add(task)
                            task.add_done_callback(in_flight.discard)
                finally:
                    for future in sealing:
                        future.cancel()
                claim, ahead = (await ahead if ahead is not None else None), None
        finally:
            if ahead is not None:  # an error stopped the round after the next claim was made
                await self._hand_back(ahead)
        await asyncio.gather(*in_flight)
        await anyio.to_thread.run_sync(self._finish, results, [])
        return True

    async def _next_claim(self) -> _Claim | None:
        """The signer in use and the rows claimed with it; None when nothing is due (or
        there is no key pair to sign with)."""
        signer = await self._load_signer()
        if signer is None:
            return None
        jobs = await anyio.to_thread.run_sync(self._claim)
        return (signer, jobs) if jobs else None

    async def _stop(self, in_flight: set[asyncio.Task[None]], results: list[_Result], unsent: list[int],
                    ahead: asyncio.Future[_Claim | None] | None) -> None:
        """Stopping mid-round: let the POSTs in flight finish, record them, and hand back
        every row claimed but not started (the next claim's too)."""
        await asyncio.gather(*in_flight)
        if ahead is not None:
            claim = await ahead
            unsent += [job.id for job in claim[1]] if claim is not None else []
        await anyio.to_thread.run_sync(self._finish, results, unsent)

    async def _hand_back(self, ahead: asyncio.Future[_Claim | None]) -> None:
        """A round failed after it made the next claim: give those rows back at once."""
        try:
            claim = await ahead
            if claim is not None:
                await anyio.to_thread.run_sync(self._finish, [], [job.id for job in claim[1]])
        except Exception:  # the rows go back to the queue when their lease runs out
            log.exception("could not hand back the next claim after a failed round")

    async def _load_signer(self) -> VapidSigner | None:
        """The signer for the key pair in use (re-read at each claim: `fieldwork vapid
        --rotate` takes effect without a restart)."""
        identity = await anyio.to_thread.run_sync(self._identity)
        if identity is None:
            self._signer = None
        elif self._signer is None or self._signer.public_key != identity.public_key:
            self._signer = VapidSigner(identity, subject=self.settings.vapid_subject)
        return self._signer

    def _identity(self) -> VapidIdentity | None:
        with read_session(self.engine) as session:
            return load_identity(session, override_pem=self.settings.vapid_private_key)

    async def _send(self, http: aiohttp.ClientSession, signer: VapidSigner, job: _Job, body: bytes | str) -> _Result:
        """POST one encrypted notice (`body`; a str says why it could not be encrypted)."""
        if isinstance(body, str):
            self.stats.failed += 1
            return _Result(job.id, "failed", error=body)
        origin = job.origin
        paused = self._paused.get(origin)
        if paused is not None and paused > time.monotonic():
            self.stats.deferred += 1
            return _Result(job.id, "deferred", next_attempt_at=utcnow() + timedelta(seconds=paused - time.monotonic()))
        headers = dict(signer.for_audience(origin))
        headers["Urgency"] = job.urgency
        headers["Content-Type"] = "application/octet-stream"
        if job.topic:
            headers["Topic"] = job.topic
        try:
            response = await SealedPusher(job.endpoint, body, aiohttp_session=http).send_async(
                job.payload, headers, ttl=job.ttl, content_encoding="aes128gcm",
                timeout=self._timeout,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return self._retry(job, None, f"{type(exc).__name__} talking to {origin}")
        except Exception as exc:  # anything else: this notice is retried, the others go on
            log.exception("unexpected error sending a notice to %s", origin)
            return self._retry(job, None, f"{type(exc).__name__} while sending")
        status = int(response.status)
        if 200 <= status < 300:
            self.stats.sent += 1
            return _Result(job.id, "sent", status=status)
        if status in (404, 410):
            self.stats.gone += 1
            return _Result(job.id, "gone", status=status, endpoint_hash=job.endpoint_hash)
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            self._paused[origin] = time.monotonic() + wait
            return self._retry(job, status, "429 Too Many Requests", delay=wait)
        if status >= 500:
            return self._retry(job, status, f"{status} from the push service")
        self.stats.failed += 1
        return _Result(job.id, "failed", status=status, error=f"{status} from the push service")

    def _retry(self, job: _Job, status: int | None, error: str, *, delay: float | None = None) -> _Result:
        if job.attempts + 1 >= self.settings.max_attempts:
            self.stats.failed += 1
            return _Result(job.id, "failed", status=status, error=f"gave up after {job.attempts + 1} attempts: {error}")
        if delay is None:
            delay = min(self.settings.retry_base_seconds * 2**job.attempts, MAX_BACKOFF_SECONDS)
            delay *= random.uniform(0.75, 1.25)  # noqa: S311 (jitter, not secrecy)
        self.stats.retried += 1
        return _Result(job.id, "retry", status=status, error=error[:200], next_attempt_at=utcnow() + timedelta(seconds=delay))

    # -- the database side (run in a worker thread) ----------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with write_session(self.engine) as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            yield session

    def _claim(self) -> list[_Job]:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        with read_session(self.engine) as session:
            # An idle outbox costs a read, not a write transaction (SQLite has one writer).
            busy = session.connection().execute(
                select(_N.c.id).where(_N.c.state.in_(("pending", "claimed", "sending"))).limit(1)
            ).first()
        if busy is None:
            return []
        with self._transaction() as session:
            self._recover(session, now)
            due = (
                select(_N.c.id)
                .where(_N.c.state == "pending", _N.c.next_attempt_at <= now)
                .order_by(_N.c.id)
                .limit(self.settings.batch_size)
                .with_for_update(skip_locked=True)
            )
            claimed = session.connection().execute(
                update(_N).where(_N.c.id.in_(due.scalar_subquery()))
                .values(state="claimed", claimed_by=self.name, lease_until=lease)
                .returning(_N.c.id)
            ).scalars().all()
            if not claimed:
                return []
            rows = session.connection().execute(
                select(_N.c.id, _S.c.endpoint, _S.c.endpoint_hash, _S.c.p256dh, _S.c.auth, _N.c.payload,
                       _N.c.urgency, _N.c.ttl_seconds, _N.c.attempts)
                .join(_S, _S.c.id == _N.c.subscription_id)
                .where(_N.c.id.in_(claimed))
                .order_by(_N.c.id)
            ).all()
        self.stats.claimed += len(rows)
        return [
            _Job(id=r[0], endpoint=r[1], origin=audience(r[1]), endpoint_hash=r[2], p256dh=r[3], auth=r[4], payload=encode_payload(r[5]),
                 urgency=r[6], ttl=int(r[7]), topic=_topic(r[5]), attempts=int(r[8]))
            for r in rows
        ]

    def _recover(self, session: Session, now: datetime) -> None:
        connection = session.connection()
        expired_lease = and_(_N.c.lease_until.is_not(None), _N.c.lease_until < now)
        back = connection.execute(
            update(_N).where(_N.c.state == "claimed", expired_lease)
            .values(state="pending", claimed_by=None, lease_until=None)
        ).rowcount
        lost = connection.execute(
            update(_N).where(_N.c.state == "sending", expired_lease)
            .values(state="unknown", claimed_by=None, lease_until=None, attempts=_N.c.attempts + 1,
                    last_error="its sender stopped during the POST: not sent again, to never tell anyone twice")
        ).rowcount
        # A notice older than its TTL would be dropped by the push service anyway. Compared
        # in Python over the few pending rows past the shortest TTL we use.
        stale = connection.execute(
            select(_N.c.id, _N.c.created_at, _N.c.ttl_seconds)
            .where(_N.c.state == "pending", _N.c.created_at < now - timedelta(hours=1))
            .limit(10_000)
        ).all()
        too_old = [row[0] for row in stale if row[1] + timedelta(seconds=int(row[2])) < now]
        if too_old:
            connection.execute(update(_N).where(_N.c.id.in_(too_old)).values(state="expired"))
        self.stats.recovered += int(back or 0)
        self.stats.unknown += int(lost or 0)
        self.stats.expired += len(too_old)

    def _record_and_start(self, results: Sequence[_Result], ids: Sequence[int]) -> set[int]:
        """Record the previous group's results and mark the next group `sending`, in one
        transaction; returns the ids of the group that are still ours."""
        now = utcnow()
        with self._transaction() as session:
            self._record(session, results, now)
            if not ids:
                return set()
            started = session.connection().execute(_START, {
                "b_ids": list(ids), "b_me": self.name, "b_lease": now + timedelta(seconds=self.settings.lease_seconds),
            }).scalars().all()
        return set(started)

    def _finish(self, results: Sequence[_Result], unsent: Sequence[int]) -> None:
        """Record the last results and hand back the rows this sender will not send (claimed,
        or marked `sending` but never started: stopping, it knows which)."""
        with self._transaction() as session:
            self._record(session, results, utcnow())
            if unsent:
                session.connection().execute(
                    update(_N).where(_N.c.id.in_(list(unsent)), _N.c.claimed_by == self.name,
                                     _N.c.state.in_(("claimed", "sending")))
                    .values(state="pending", claimed_by=None, lease_until=None)
                )

    def _record(self, session: Session, results: Sequence[_Result], now: datetime) -> None:
        if not results:
            return
        connection = session.connection()
        ours = and_(_N.c.id == bindparam("b_id"), _N.c.claimed_by == self.name,
                    or_(_N.c.state == "sending", _N.c.state == "claimed"))
        by_state: dict[str, list[_Result]] = {}
        for result in results:
            by_state.setdefault(result.state, []).append(result)
        if sent := by_state.get("sent"):
            # One statement per answer code (nearly always all 201): not one per row.
            by_status: dict[int | None, list[int]] = {}
            for result in sent:
                by_status.setdefault(result.status, []).append(result.id)
            for status, ids in by_status.items():
                connection.execute(_MARK_SENT, {"b_ids": ids, "b_me": self.name, "b_now": now, "b_status": status})
        for state, attempt in (("retry", 1), ("deferred", 0)):
            if rows := by_state.get(state):
                connection.execute(
                    update(_N).where(ours).values(
                        state="pending", claimed_by=None, lease_until=None, attempts=_N.c.attempts + attempt,
                        next_attempt_at=bindparam("b_next", type_=_N.c.next_attempt_at.type),
                        last_status=bindparam("b_status"), last_error=bindparam("b_error")),
                    [{"b_id": r.id, "b_next": r.next_attempt_at, "b_status": r.status, "b_error": r.error}
                     for r in rows],
                )
        if failed := by_state.get("failed"):
            connection.execute(
                update(_N).where(ours).values(state="failed", attempts=_N.c.attempts + 1, lease_until=None,
                                              last_status=bindparam("b_status"), last_error=bindparam("b_error")),
                [{"b_id": r.id, "b_status": r.status, "b_error": r.error} for r in failed],
            )
        if gone := by_state.get("gone"):
            # The browser dropped this subscription: every case and user it was bound to
            # lets go of it, and its notices (this one included) go with it.
            hashes = sorted({r.endpoint_hash for r in gone if r.endpoint_hash})
            connection.execute(delete(_N).where(_N.c.subscription_id.in_(
                select(_S.c.id).where(_S.c.endpoint_hash.in_(hashes)))))
            connection.execute(delete(_S).where(_S.c.endpoint_hash.in_(hashes)))

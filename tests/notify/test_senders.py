"""The sender as its own process (`fieldwork worker`): killed in the middle of a batch it
sends nothing twice, and two of them deliver each notice exactly once (PostgreSQL and
SQLite)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from server.notify.vapid import VapidIdentity
from server.settings import Settings
from tests.conftest import ROOT, TEST_SECRET
from tests.notify.pushservice import PushService
from tests.notify.support import outbox, queue_many

pytestmark = pytest.mark.slow  # worker processes, seconds of waiting for leases


def start_worker(settings: Settings, log: Path, name: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "FIELDWORK_DATABASE_URL": settings.database.url,
        "FIELDWORK_AUTH_SECRET": TEST_SECRET,
        "FIELDWORK_PUSH_ALLOW_LOOPBACK_HTTP": "1",
        "FIELDWORK_PUSH_LEASE_SECONDS": "1.5",
        "FIELDWORK_PUSH_POLL_SECONDS": "0.2",
        "PYTHONUNBUFFERED": "1",  # the "running" line reaches the log at once
    })
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "server.cli", "worker", "--name", name], cwd=ROOT, env=env,
                                stdout=out, stderr=out, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_sender_killed_mid_batch_sends_nothing_twice(
    engine: Engine, settings: Settings, identity: VapidIdentity, tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    concurrency = settings.push.concurrency
    # The first wave of POSTs is answered; every later one is taken and held unanswered, so
    # the sender fills its `concurrency` slots and can mark nothing more `sending`.
    with PushService(expected_key=identity.public_key, hold_after=concurrency) as push:
        phones = [push.subscriber() for _ in range(4 * concurrency)]
        queue_many(engine, phones)
        first = start_worker(settings, tmp_path / "worker.log", "first")
        workers.append(first)

        def in_flight_arrived() -> bool:  # every row marked `sending` is at the service, held
            marked = sum(n.state in {"sending", "sent"} for n in outbox(engine))
            return len(push.messages()) >= max(marked, 2 * concurrency)

        # Kill only once the wave in flight has arrived and waits for its answers (the case
        # this test is about; a kill before the POSTs leave loses them, the at-most-once the
        # README states).
        wait_until(in_flight_arrived, 60, "a full wave in flight to reach the push service")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        push.release()
        at_kill = len(push.messages())
        assert at_kill < len(phones)

        workers.append(start_worker(settings, tmp_path / "worker.log", "second"))
        wait_until(lambda: all(n.state in {"sent", "unknown"} for n in outbox(engine)), 60, "the outbox to drain")
        per_phone = Counter(m.subscriber_id for m in push.messages())
        assert max(per_phone.values()) == 1, "a notice was sent twice"
        rows = outbox(engine)
        unknown = [n for n in rows if n.state == "unknown"]
        # Only the group whose POSTs were in flight is unknown, and it had reached the service.
        assert 0 < len(unknown) <= concurrency
        assert len(per_phone) == len(phones), f"{len(phones) - len(per_phone)} notices never arrived"
        assert {n.claimed_by for n in rows if n.state == "sent"} == {"first", "second"}
        print(f"\nkilled with {at_kill} delivered; {len(unknown)} in flight marked unknown (all had arrived); "
              f"{len(phones)} delivered once each after the restart")


def test_two_senders_deliver_each_notice_once(
    engine: Engine, settings: Settings, identity: VapidIdentity, tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    """PostgreSQL: claims with FOR UPDATE SKIP LOCKED; SQLite: the claim's write transaction."""
    before = {n.id for n in outbox(engine)}
    with PushService(expected_key=identity.public_key, delay=0.02) as push:
        phones = [push.subscriber() for _ in range(800)]
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        workers.append(start_worker(settings, logs[0], "sender-a"))
        workers.append(start_worker(settings, logs[1], "sender-b"))
        # Both polling before anything is queued: on a busy machine one sender that starts
        # seconds after the other would find the outbox already drained.
        wait_until(lambda: all(log.exists() and "running" in log.read_text() for log in logs), 60,
                   "both senders to start")
        queue_many(engine, phones)
        wait_until(lambda: len(push.messages()) >= len(phones), 90, "every notice")
        time.sleep(0.5)  # anything sent twice would arrive now
        per_phone = Counter(m.subscriber_id for m in push.messages())
        assert len(per_phone) == len(phones) and max(per_phone.values()) == 1
        rows = [n for n in outbox(engine) if n.id not in before]
        assert {n.state for n in rows} == {"sent"}
        by_sender = Counter(n.claimed_by for n in rows)
        assert set(by_sender) == {"sender-a", "sender-b"}, by_sender
        print(f"\ntwo senders: {dict(by_sender)}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_sender_killed_outright_leaves_no_encryption_process(
    engine: Engine, settings: Settings, identity: VapidIdentity, tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    with PushService(expected_key=identity.public_key) as push:
        phones = [push.subscriber() for _ in range(40)]  # enough to be encrypted aside
        worker = start_worker(settings, tmp_path / "worker.log", "lone")
        workers.append(worker)
        queue_many(engine, phones)
        push.wait_for(len(phones), timeout=60)
        helpers = children(worker.pid)  # the encryption process (and multiprocessing's tracker)
        assert helpers, "no encryption process was started"
        worker.kill()  # SIGKILL to the sender alone, not its process group
        worker.wait()
        wait_until(lambda: not any(alive(pid) for pid in helpers), 30, "the encryption process to exit")


def test_serve_with_several_workers_sends_a_large_wave(
    engine: Engine, settings: Settings, identity: VapidIdentity, tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    """Hypercorn's worker processes are daemonic and may not start an encryption process:
    their senders encrypt on their own loops, and every notice still arrives once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, FIELDWORK_DATABASE_URL=settings.database.url, FIELDWORK_AUTH_SECRET=TEST_SECRET,
               FIELDWORK_PUSH_ALLOW_LOOPBACK_HTTP="1", FIELDWORK_PUSH_POLL_SECONDS="0.2")
    with PushService(expected_key=identity.public_key) as push, (tmp_path / "serve.log").open("ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--workers", "2"],
                                  cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        workers.append(server)
        phones = [push.subscriber() for _ in range(120)]
        queue_many(engine, phones)
        push.wait_for(len(phones), timeout=90)
        time.sleep(0.5)  # anything sent twice would arrive now
        assert Counter(m.subscriber_id for m in push.messages()) == Counter({p.id: 1 for p in phones})
        assert all(m.payload is not None for m in push.messages())  # each decrypted at the service
    assert "round failed" not in (tmp_path / "serve.log").read_text()

"""`fieldwork vapid` and `fieldwork worker --once` as an administrator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, select

from server.models import PushSubscription, VapidKey
from tests.conftest import ROOT, TEST_SECRET
from tests.notify.pushservice import PushService
from tests.notify.support import outbox, prepare, queue_many

pytestmark = pytest.mark.slow  # each command is a new Python process (about 3 s to start)


def fieldwork(*args: str, db_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FIELDWORK_DATABASE_URL=db_url, FIELDWORK_AUTH_SECRET=TEST_SECRET, COLUMNS="200",
               PYTHONPATH=str(ROOT), FIELDWORK_PUSH_ALLOW_LOOPBACK_HTTP="1")
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_vapid_makes_the_key_once_and_rotating_drops_old_subscriptions(fresh_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tmp_path = tmp_path / "cwd"  # where the command runs (the SQLite file lives beside it)
    tmp_path.mkdir()
    first = fieldwork("vapid", db_url=fresh_db.url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    public_key = first.stdout.strip()
    assert len(public_key) == 87 and "created" in first.stderr
    again = fieldwork("vapid", db_url=fresh_db.url, cwd=tmp_path)
    assert again.stdout.strip() == public_key and "already present" in again.stderr
    with Session(fresh_db.engine) as session:
        (stored,) = session.exec(select(VapidKey)).all()
    assert stored.public_key == public_key
    # The private key never leaves the database: not on the terminal, not in a file here.
    for output in (first.stdout + first.stderr, again.stdout + again.stderr):
        assert "PRIVATE" not in output and stored.private_key.splitlines()[1] not in output
    assert list(tmp_path.iterdir()) == []

    with PushService() as push:
        queue_many(fresh_db.engine, [push.subscriber(), push.subscriber()])
    rotated = fieldwork("vapid", "--rotate", db_url=fresh_db.url, cwd=tmp_path)
    assert rotated.returncode == 0 and rotated.stdout.strip() != public_key
    assert "2 browser subscriptions" in rotated.stderr
    with Session(fresh_db.engine) as session:
        assert session.exec(select(PushSubscription)).all() == []


def test_worker_once_sends_what_is_due(fresh_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    identity = prepare(fresh_db.engine)
    with PushService(expected_key=identity.public_key) as push:
        phones = [push.subscriber() for _ in range(5)]
        queue_many(fresh_db.engine, phones)
        push.answer(phones[0], 500)
        done = fieldwork("worker", "--once", db_url=fresh_db.url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "sent 4" in " ".join(done.stderr.split()) and "retry later 1" in " ".join(done.stderr.split())
        assert len(push.messages()) == 4
    assert sorted(n.state for n in outbox(fresh_db.engine)) == ["pending", "sent", "sent", "sent", "sent"]

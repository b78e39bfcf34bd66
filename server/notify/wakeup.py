"""Waking this process's senders when a transaction that queued notices commits.

Senders in other processes or hosts do not hear this: they poll every
`PushSettings.poll_seconds`. A poke only saves the wait.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["poke", "poke_after_commit", "register", "unregister"]

_FLAG = "fieldwork_push_poke"
_lock = threading.Lock()
_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()


def register(loop: asyncio.AbstractEventLoop, waiter: asyncio.Event) -> None:
    with _lock:
        _waiters.add((loop, waiter))


def unregister(loop: asyncio.AbstractEventLoop, waiter: asyncio.Event) -> None:
    with _lock:
        _waiters.discard((loop, waiter))


def poke() -> None:
    with _lock:
        waiters = list(_waiters)
    for loop, waiter in waiters:
        if not loop.is_closed():
            loop.call_soon_threadsafe(waiter.set)


def _committed(session: Session) -> None:
    if session.info.pop(_FLAG, None):
        poke()


def poke_after_commit(session: Session) -> None:
    """Poke the senders once this session's transaction commits (a rolled-back one may
    leave a spurious poke for its session's next commit: a sender then finds nothing)."""
    session.info[_FLAG] = True
    if not event.contains(session, "after_commit", _committed):
        event.listen(session, "after_commit", _committed)

"""Encrypting notices for their browsers (RFC 8291, aes128gcm), beside the event loop.

Encryption is the sender's heaviest step: pywebpush's `encode` makes a fresh ECDH key pair
and an exchange for every notice, about 0.15 ms of CPU. Done on the event loop it takes a
third of the sender's time and, inside `fieldwork serve`, holds up the HTTP answers of that
worker while a wave of notices goes out. So a large claim is encrypted in a process of its
own (`encryption_processes`, started the first time one is needed), chunk by chunk ahead of
the POSTs, on another core; a small one (fewer than `ASIDE_FROM` notices, a process round
trip costs more than it saves) is encrypted on the loop just before it is sent.

`encrypt_bodies` is pywebpush's own `WebPusher.encode`; `SealedPusher` then hands the ready
body to pywebpush's async sender (`send_async`), which sets the headers and POSTs it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

from pywebpush import CaseInsensitiveDict, WebPusher, WebPushException

__all__ = ["ASIDE_FROM", "Encryptor", "Plain", "SealedPusher", "encrypt_bodies"]

log = logging.getLogger("fieldwork.push")

ASIDE_FROM = 16  # notices in a claim from which encryption goes to the other process


class Plain(NamedTuple):
    """What one notice needs to be encrypted: the browser's keys and the payload."""

    endpoint: str
    p256dh: str
    auth: str
    payload: bytes


def encrypt_bodies(items: Sequence[Plain]) -> list[bytes | str]:
    """Each payload encrypted for its browser; for a subscription whose keys cannot be used,
    the reason instead (a str) — the other notices go on."""
    bodies: list[bytes | str] = []
    for item in items:
        subscription = {"endpoint": item.endpoint, "keys": {"p256dh": item.p256dh, "auth": item.auth}}
        try:
            bodies.append(bytes(WebPusher(subscription).encode(item.payload, "aes128gcm")["body"]))
        except WebPushException as exc:
            bodies.append(f"cannot encrypt for this subscription: {exc.message}"[:200])
        except (ValueError, TypeError) as exc:  # a p256dh that is not a point on P-256, bad base64
            bodies.append(f"cannot encrypt for this subscription: {type(exc).__name__}"[:200])
    return bodies


def _follow_parent() -> None:
    """In the encryption process: exit as soon as the sender that started it is gone, even
    killed outright (the executor's own pipes would keep an orphan waiting for ever)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


class SealedPusher(WebPusher):
    """pywebpush's sender for a body encrypted already (by `encrypt_bodies`): `send_async`
    builds the request (TTL, Content-Encoding, the caller's headers) and POSTs it as usual."""

    def __init__(self, endpoint: str, body: bytes, **kwargs: object) -> None:
        super().__init__({"endpoint": endpoint}, **kwargs)
        self._body = body

    def encode(self, data: bytes, content_encoding: str = "aes128gcm") -> CaseInsensitiveDict:
        if content_encoding != "aes128gcm":
            raise WebPushException("only aes128gcm bodies are encrypted ahead")
        return CaseInsensitiveDict({"body": self._body})


class Encryptor:
    """Encrypts the chunks of a large claim in `processes` processes of its own (0: on the loop).

    A daemonic process may not start processes (Python's rule), and `fieldwork serve
    --workers N` runs each worker as one: there, as when a process cannot be started at all,
    every notice is encrypted on the loop.
    """

    def __init__(self, processes: int) -> None:
        self.processes = 0 if multiprocessing.current_process().daemon else max(processes, 0)
        self._pool: ProcessPoolExecutor | None = None

    def ahead(self, chunks: Sequence[Sequence[Plain]]) -> list[asyncio.Future[list[bytes | str]]]:
        """Start encrypting every chunk of a claim in the other process, in order; [] when the
        claim is to be encrypted on the loop instead (small, or no process to do it)."""
        if self.processes == 0 or sum(len(chunk) for chunk in chunks) < ASIDE_FROM:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[list[bytes | str]]] = []
        try:
            for chunk in chunks:
                futures.append(loop.run_in_executor(self._started(), encrypt_bodies, list(chunk)))
        except BrokenProcessPool:  # its process died since the last claim: a new one next claim
            self.close()
        except Exception:  # cannot start a process here (out of memory, a sandbox …)
            log.exception("cannot start the push encryption process; notices are encrypted on the event loop")
            self.processes = 0
            self.close()
        else:
            return futures
        for future in futures:
            future.cancel()
        return []

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the parent runs threads (the database's, the server's).
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_follow_parent)
        return self._pool

    async def bodies(self, future: asyncio.Future[list[bytes | str]],
                     items: Sequence[Plain]) -> tuple[list[bytes | str], bool]:
        """The bodies `ahead` promised for `items`, and True; if the process died, the bodies
        encrypted here instead, and False."""
        try:
            return await future, True
        except BrokenProcessPool:
            if self._pool is not None:  # once per pool, not once per chunk queued on it
                log.warning("the push encryption process stopped; this claim is encrypted on the event loop")
                self.close()
            return encrypt_bodies(items), False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

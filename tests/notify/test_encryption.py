"""Encryption beside the event loop (server.notify.encryption): a large claim is encrypted in
a process of its own and every notice still decrypts at the push service; a browser whose
keys cannot be used fails alone; a dead encryption process costs no notice; with the
process turned off everything is encrypted on the loop (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, update

from server.db import write_session
from server.models import PushSubscription
from server.notify.encryption import ASIDE_FROM, Encryptor, Plain, encrypt_bodies
from server.notify.sender import Sender
from server.settings import Settings, settings_from_env
from tests.notify.pushservice import PushService, Subscriber, b64url, decrypt_aes128gcm
from tests.notify.support import drain, outbox, queue_many
from tests.runtime.support import run_in_own_loop


def test_a_large_claim_is_encrypted_aside_and_every_notice_decrypts(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    phones = [push.subscriber() for _ in range(ASIDE_FROM * 3 + 5)]  # several chunks, the last one short
    ids = queue_many(engine, phones, body="Se cambió la lámpara.")
    broken = ids[7]
    with write_session(engine) as session:  # a p256dh that is not a point on the curve
        session.connection().execute(update(PushSubscription).where(PushSubscription.id == broken)  # type: ignore[arg-type]
                                     .values(p256dh=b64url(b"\x04" + b"\x01" * 64)))

    stats = drain(engine, settings)

    assert stats.encrypted_aside == len(phones)
    assert stats.sent == len(phones) - 1 and stats.failed == 1
    failed = [n for n in outbox(engine) if n.subscription_id == broken]
    assert failed[0].state == "failed" and "cannot encrypt" in (failed[0].last_error or "")
    for index, phone in enumerate(phones):
        got = push.messages(phone)
        if ids[index] == broken:
            assert got == []
            continue
        assert len(got) == 1 and got[0].payload is not None
        assert got[0].payload["body"] == "Se cambió la lámpara."
        assert got[0].payload["url"] == f"/track/t{ids[index]}?lang=en"  # its own notice, not a neighbour's


def test_a_small_claim_and_a_sender_without_the_process_encrypt_on_the_loop(
    engine: Engine, settings: Settings, push: PushService
) -> None:
    few = [push.subscriber() for _ in range(ASIDE_FROM - 1)]
    queue_many(engine, few)
    small = drain(engine, settings)
    assert (small.sent, small.encrypted_aside) == (len(few), 0)

    many = [push.subscriber() for _ in range(ASIDE_FROM * 2)]
    queue_many(engine, many)
    inline = drain(engine, replace(settings, push=replace(settings.push, encryption_processes=0)))
    assert (inline.sent, inline.encrypted_aside) == (len(many), 0)
    assert all(len(push.messages(phone)) == 1 for phone in few + many)


def test_a_dead_encryption_process_costs_no_notice(engine: Engine, settings: Settings, push: PushService) -> None:
    sender = Sender(engine, settings.push, name="survivor")

    async def two_waves() -> tuple[int, int]:
        first = await sender.drain()
        pool = sender._encryptor._pool
        assert pool is not None
        for pid in list(pool._processes):  # the encryption process dies between two claims
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        queue_many(engine, second_wave)
        second = await sender.drain()
        return first.sent, second.sent

    first_wave = [push.subscriber() for _ in range(ASIDE_FROM * 2)]
    second_wave = [push.subscriber() for _ in range(ASIDE_FROM * 2)]
    queue_many(engine, first_wave)
    try:
        sent = run_in_own_loop(two_waves())
    finally:
        sender.close()
    assert sent == (len(first_wave), len(second_wave))
    assert all(len(push.messages(phone)) == 1 for phone in first_wave + second_wave)


def test_bodies_from_the_other_process_are_what_the_browser_can_read() -> None:
    """The process's output against the stand-in's own RFC 8291 decryptor."""
    phones = [Subscriber(str(n), f"http://127.0.0.1:9/push/{n}", ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
              for n in range(ASIDE_FROM)]
    items = [Plain(p.endpoint, p.p256dh, b64url(p.auth_secret), f"notice {n}".encode()) for n, p in enumerate(phones)]
    encryptor = Encryptor(1)

    async def encrypt() -> list[bytes | str]:
        futures = encryptor.ahead([items[:5], items[5:]])
        assert len(futures) == 2
        found: list[bytes | str] = []
        for future, chunk in zip(futures, [items[:5], items[5:]], strict=True):
            bodies, aside = await encryptor.bodies(future, chunk)
            assert aside
            found += bodies
        return found

    try:
        bodies = run_in_own_loop(encrypt())
    finally:
        encryptor.close()
    assert bodies != encrypt_bodies(items)  # a fresh key and salt per notice
    for n, (phone, body) in enumerate(zip(phones, bodies, strict=True)):
        assert isinstance(body, bytes)
        plain = decrypt_aes128gcm(body, ua_private=phone.private_key, auth_secret=phone.auth_secret)
        assert plain == f"notice {n}".encode()


def test_a_process_that_dies_under_queued_chunks_leaves_them_to_the_loop() -> None:
    sizes = [ASIDE_FROM, 800, 200]  # the process is still on the second chunk when it is killed
    phones = [Subscriber(str(n), f"http://127.0.0.1:9/push/{n}", ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
              for n in range(sum(sizes))]
    items = [Plain(p.endpoint, p.p256dh, b64url(p.auth_secret), f"notice {n}".encode()) for n, p in enumerate(phones)]
    starts = [0, sizes[0], sizes[0] + sizes[1]]
    chunks = [items[start : start + size] for start, size in zip(starts, sizes, strict=True)]
    encryptor = Encryptor(1)

    async def encrypt_while_it_dies() -> list[tuple[list[bytes | str], bool]]:
        futures = encryptor.ahead(chunks)
        first = await encryptor.bodies(futures[0], chunks[0])
        pool = encryptor._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        return [first] + [await encryptor.bodies(f, c) for f, c in zip(futures[1:], chunks[1:], strict=True)]

    try:
        results = run_in_own_loop(encrypt_while_it_dies())
    finally:
        encryptor.close()
    assert [aside for _, aside in results] == [True, False, False]  # says where each chunk was encrypted
    bodies = [body for chunk_bodies, _ in results for body in chunk_bodies]
    for n, (phone, body) in enumerate(zip(phones, bodies, strict=True)):
        assert isinstance(body, bytes)
        assert decrypt_aes128gcm(body, ua_private=phone.private_key, auth_secret=phone.auth_secret) == f"notice {n}".encode()


def test_the_setting_names_a_bad_value() -> None:
    with pytest.raises(ValueError, match="FIELDWORK_PUSH_ENCRYPTION_PROCESSES"):
        settings_from_env({"FIELDWORK_PUSH_ENCRYPTION_PROCESSES": "two"})
    with pytest.raises(ValueError, match="FIELDWORK_PUSH_ENCRYPTION_PROCESSES"):
        settings_from_env({"FIELDWORK_PUSH_ENCRYPTION_PROCESSES": "-1"})
    assert settings_from_env({"FIELDWORK_PUSH_ENCRYPTION_PROCESSES": "0"}).push.encryption_processes == 0
    assert settings_from_env({}).push.encryption_processes == 1


def test_the_concurrency_setting_names_a_bad_value() -> None:
    for bad in ("many", "1", "5000"):
        with pytest.raises(ValueError, match="FIELDWORK_PUSH_CONCURRENCY"):
            settings_from_env({"FIELDWORK_PUSH_CONCURRENCY": bad})
    assert settings_from_env({"FIELDWORK_PUSH_CONCURRENCY": "256"}).push.concurrency == 256
    assert settings_from_env({}).push.concurrency == 128

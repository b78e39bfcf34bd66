"""A Web Push service stand-in on loopback, for tests and the benchmark.

It does what a real push service does to what we send, and tells the test what it saw:

- checks the VAPID authorization (RFC 8292): `vapid t=<JWT>,k=<key>`, an ES256 signature
  by that key, `aud` = this service's origin, `exp` in the future and at most 24 h away,
  a `sub` (mailto: or https:), and optionally that `k` is the server's published key;
- checks `Content-Encoding: aes128gcm`, a `TTL` header and a body of at most 4,096 bytes
  (413 otherwise), and decrypts the body (RFC 8188 / RFC 8291) with the subscriber's
  private key and auth secret: `decrypt_aes128gcm` is this module's own code (checked
  against RFC 8291's test vector), not the library the server encrypts with;
- answers 201, or what the test asked for, per endpoint: 404, 410, 413, 429 with
  `Retry-After`, 500 … (`answer(...)`), and can hold back its answer to every message it
  has taken, for a while (`delay`) or, past the first `hold_after` messages, until the test
  calls `release()`, so that a test can kill a sender while its POSTs are in flight.

`PushService().start()` runs it in a thread with its own event loop; `python -m
tests.notify.pushservice --port N` runs it as a process (the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAX_BODY = 4096


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


class DecryptError(ValueError):
    pass


def decrypt_aes128gcm(body: bytes, *, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """A user agent's side of RFC 8291: the plaintext of an aes128gcm Web Push body."""
    if len(body) < 21:
        raise DecryptError("body shorter than the aes128gcm header")
    salt, record_size, id_length = body[:16], struct.unpack("!I", body[16:20])[0], body[20]
    as_public_bytes = body[21 : 21 + id_length]
    if id_length != 65 or record_size < 18:
        raise DecryptError("the header must carry the sender's 65-byte key and a record size ≥ 18")
    as_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public_bytes)
    ua_public_bytes = ua_private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    shared = ua_private.exchange(ec.ECDH(), as_public)
    ikm = _hkdf(auth_secret, shared, b"WebPush: info\x00" + ua_public_bytes + as_public_bytes, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    base_nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    records = body[21 + id_length :]
    if not records:
        raise DecryptError("no records")
    plaintext = b""
    for seq, start in enumerate(range(0, len(records), record_size)):
        record = records[start : start + record_size]
        nonce = (int.from_bytes(base_nonce, "big") ^ seq).to_bytes(12, "big")
        try:
            padded = AESGCM(cek).decrypt(nonce, record, None)
        except InvalidTag:
            raise DecryptError("authentication tag does not match (wrong key or altered body)") from None
        last = start + record_size >= len(records)
        content = padded.rstrip(b"\x00")
        if not content or content[-1] != (2 if last else 1):
            raise DecryptError("bad padding delimiter")
        plaintext += content[:-1]
    return plaintext


def verify_vapid(authorization: str | None, *, audience: str, expected_key: str | None,
                 now: float | None = None) -> dict[str, Any]:
    """The claims of a valid RFC 8292 `vapid` authorization; ValueError naming what is wrong."""
    if not authorization or not authorization.lower().startswith("vapid "):
        raise ValueError("no vapid authorization")
    params = dict(part.strip().split("=", 1) for part in authorization[6:].split(","))
    token, key = params.get("t"), params.get("k")
    if not token or not key:
        raise ValueError("vapid authorization needs t= and k=")
    if expected_key is not None and key != expected_key:
        raise ValueError("k is not the application server key the subscription was made with")
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
    head, claims_part, signature = token.split(".")
    header = json.loads(b64url_decode(head))
    if header.get("alg") != "ES256":
        raise ValueError("JWT alg must be ES256")
    raw = b64url_decode(signature)
    if len(raw) != 64:
        raise ValueError("ES256 signature must be 64 bytes")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, f"{head}.{claims_part}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("JWT signature does not verify") from None
    claims: dict[str, Any] = json.loads(b64url_decode(claims_part))
    now = time.time() if now is None else now
    if claims.get("aud") != audience:
        raise ValueError(f"aud {claims.get('aud')!r} is not {audience!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now or exp > now + 24 * 3600:
        raise ValueError("exp must be in the future and within 24 hours")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise ValueError("sub must be a mailto: or https: URL")
    return claims


@dataclass
class Subscriber:
    """A browser's side of one subscription: its keys, and the endpoint it was given."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def p256dh(self) -> str:
        return b64url(self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))

    def subscription(self) -> dict[str, Any]:
        """`PushSubscription.toJSON()` as a browser would send it."""
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth_secret)}}


@dataclass
class Received:
    subscriber_id: str
    payload: dict[str, Any] | None  # decrypted JSON (None when not decrypting)
    ttl: int
    urgency: str | None
    topic: str | None
    size: int
    at: float = field(default_factory=time.monotonic)


class PushService:
    def __init__(self, *, expected_key: str | None = None, decrypt: bool = True, delay: float = 0.0,
                 hold_after: int | None = None) -> None:
        self.expected_key = expected_key
        self.decrypt = decrypt
        self.delay = delay
        self.hold_after = hold_after
        self._released: asyncio.Event | None = None  # made on the service's own loop
        self.port = 0
        self.subscribers: dict[str, Subscriber] = {}
        self.received: list[Received] = []
        self.refused: list[tuple[str, int, str]] = []  # (subscriber id, status, why)
        self.requests = 0  # every POST, whatever it was answered
        self._answers: dict[str, deque[tuple[int, dict[str, str]]]] = {}
        self._gone: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what a test sets up and reads --------------------------------------------------

    def subscriber(self) -> Subscriber:
        sid = uuid.uuid4().hex
        found = Subscriber(sid, f"{self.origin}/push/{sid}", ec.generate_private_key(ec.SECP256R1()),
                           uuid.uuid4().bytes)
        with self._lock:
            self.subscribers[sid] = found
        return found

    def answer(self, subscriber: Subscriber, *statuses: int, retry_after: str | None = None) -> None:
        """The next answers to this subscriber's pushes (then 201 again)."""
        with self._lock:
            queue = self._answers.setdefault(subscriber.id, deque())
            for status in statuses:
                headers = {"Retry-After": retry_after} if status == 429 and retry_after is not None else {}
                queue.append((status, headers))

    def unsubscribe(self, subscriber: Subscriber, status: int = 410) -> None:
        """The browser dropped the subscription: every later push gets `status`."""
        with self._lock:
            self._gone.add(subscriber.id)
            self._answers[subscriber.id] = deque([(status, {})] * 10_000)

    def release(self) -> None:
        """Answer the messages held past `hold_after`, and every later one at once."""
        if self._loop is not None and self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    def messages(self, subscriber: Subscriber | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if subscriber is None or r.subscriber_id == subscriber.id]

    def wait_for(self, count: int, *, timeout: float = 15.0, subscriber: Subscriber | None = None) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(subscriber)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"push service got {len(self.messages(subscriber))} messages, expected {count}; "
                             f"refused: {self.refused[-3:]}")

    # -- the HTTP side --------------------------------------------------------------------

    async def _push(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        body = await request.read()
        with self._lock:
            self.requests += 1
            subscriber = self.subscribers.get(sid)
            queue = self._answers.get(sid)
            planned = queue.popleft() if queue else None
        if subscriber is None:
            return self._refuse(sid, 404, "no such subscription")
        try:
            verify_vapid(request.headers.get("Authorization"), audience=self.origin, expected_key=self.expected_key)
        except (ValueError, TypeError) as exc:
            return self._refuse(sid, 403, f"VAPID: {exc}")
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return self._refuse(sid, 400, "Content-Encoding must be aes128gcm")
        ttl = request.headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            return self._refuse(sid, 400, "TTL header is required")
        if len(body) > MAX_BODY:
            return self._refuse(sid, 413, f"body of {len(body)} bytes")
        if planned is not None and planned[0] >= 300:
            return web.Response(status=planned[0], headers=planned[1])
        payload = None
        if self.decrypt:
            try:
                plaintext = decrypt_aes128gcm(body, ua_private=subscriber.private_key,
                                              auth_secret=subscriber.auth_secret)
                payload = json.loads(plaintext)
            except (DecryptError, ValueError) as exc:
                return self._refuse(sid, 400, f"cannot decrypt: {exc}")
        with self._lock:
            self.received.append(Received(sid, payload, int(ttl), request.headers.get("Urgency"),
                                          request.headers.get("Topic"), len(body)))
            held = self.hold_after is not None and len(self.received) > self.hold_after
        if held and self._released is not None:  # taken, answered only once the test says so
            await self._released.wait()
        if self.delay:  # received, but the answer is held back (a sender may die meanwhile)
            await asyncio.sleep(self.delay)
        return web.Response(status=planned[0] if planned else 201,
                            headers={"Location": f"{self.origin}/message/{uuid.uuid4().hex}"})

    def _refuse(self, sid: str, status: int, why: str) -> web.Response:
        with self._lock:
            self.refused.append((sid, status, why))
        return web.Response(status=status, text=why)

    def app(self) -> web.Application:
        application = web.Application(client_max_size=MAX_BODY * 4)
        application.router.add_post("/push/{sid}", self._push)
        return application

    # -- running it -----------------------------------------------------------------------

    def start(self, port: int = 0) -> PushService:
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._released = asyncio.Event()
            self._runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", port)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="push-service", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("push service did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self.release()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> PushService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Run as a process: subscribers are created on demand by `POST /subscribers` (the
    benchmark), which returns their subscription JSON; `GET /stats` counts what arrived."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-decrypt", action="store_true")
    args = parser.parse_args()
    service = PushService(decrypt=not args.no_decrypt)
    service.port = args.port

    async def new_subscriber(_: web.Request) -> web.Response:
        return web.json_response(service.subscriber().subscription())

    async def stats(_: web.Request) -> web.Response:
        with service._lock:
            return web.json_response({"received": len(service.received), "requests": service.requests,
                                      "refused": len(service.refused), "last_refused": service.refused[-1:]})

    application = service.app()
    application.router.add_post("/subscribers", new_subscriber)
    application.router.add_get("/stats", stats)
    web.run_app(application, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

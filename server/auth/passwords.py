"""Password hashing: argon2id through argon2-cffi, with rehash on sign-in.

The `standard` cost is argon2-cffi's default, RFC 9106's second recommended profile
(argon2id, 64 MiB, t=3, p=4): about 0.2 s of CPU per check on this machine. When those
defaults change in a later release, `needs_rehash` says so and the next successful
sign-in stores a fresh hash.

`test-only-cheap` (FIELDWORK_PASSWORD_COST) is argon2id at a small cost, for test suites
and benchmarks that create and sign in many users: never for real accounts. A hash made
with it is upgraded by the first sign-in under the standard cost (`needs_rehash`).
"""

from __future__ import annotations

import logging

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["COSTS", "configure", "dummy_verify", "hash_password", "needs_rehash", "verify_password"]

log = logging.getLogger("fieldwork.auth")

COSTS = {
    "standard": PasswordHasher,
    "test-only-cheap": lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
}
_hasher = PasswordHasher()
_dummy_hash: str | None = None


def configure(cost: str) -> None:
    """Use the named cost for every hash and check in this process (read from settings)."""
    global _hasher, _dummy_hash
    if cost not in COSTS:
        raise ValueError(f"unknown password cost {cost!r}; one of {', '.join(COSTS)}")
    if cost != "standard":
        log.warning("password hashing at cost %r: for tests only, never for real accounts", cost)
    _hasher = COSTS[cost]()
    _dummy_hash = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def dummy_verify(password: str) -> None:
    """Spend the time of a real check, so that unknown usernames are not told apart by timing."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("not a password anyone has")
    verify_password(_dummy_hash, password)

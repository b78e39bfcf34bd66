"""Password hashing: argon2id through argon2-cffi, with rehash on sign-in.

argon2-cffi's defaults are RFC 9106's second recommended profile (argon2id, 64 MiB, t=3,
p=4). When those defaults change in a later release, `needs_rehash` says so and the next
successful sign-in stores a fresh hash.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["dummy_verify", "hash_password", "needs_rehash", "verify_password"]


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher().check_needs_rehash(password_hash)


@cache
def _dummy_hash() -> str:
    return _hasher().hash("not a password anyone has")


def dummy_verify(password: str) -> None:
    """Spend the time of a real check, so that unknown usernames are not told apart by timing."""
    verify_password(_dummy_hash(), password)

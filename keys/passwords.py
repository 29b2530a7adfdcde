"""Password hashing with scrypt (memory-hard, in the standard library) and the password policy.

Stored as ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`` so the cost can be raised later
without invalidating existing hashes: :func:`needs_rehash` tells the login path to upgrade.
Hashing takes tens of milliseconds of CPU by design, so callers run it in a thread.

The cost is :data:`PRODUCTION_LOG2_N`; nothing an operator sets (settings, environment) can lower
it. Only the test suite does, through :func:`set_test_work_factor`, because hundreds of tests
sign in and each strong hash costs ~0.2 s of CPU and 64 MiB (tests/conftest.py;
tests/unit/test_identity.py checks that a fresh process still hashes at the production cost).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets

from keys.errors import IdentityInvalid

PRODUCTION_LOG2_N = 16  # 64 MiB, ~0.2 s on this class of machine
_LOG2_N = PRODUCTION_LOG2_N
_R = 8
_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=_HASH_BYTES
    )


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise IdentityInvalid(f"password must be at least {MIN_PASSWORD_LENGTH} characters", param="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise IdentityInvalid(f"password must be at most {MAX_PASSWORD_LENGTH} characters", param="password")
    if len(set(password)) < 5:
        raise IdentityInvalid("password is too repetitive: use at least 5 different characters", param="password")


def set_test_work_factor(log2_n: int) -> None:
    """Tests only: hash new passwords (and judge :func:`needs_rehash`) at ``2**log2_n``.

    Hashes keep their own parameters, so verifying works whatever the current cost is."""
    global _LOG2_N
    if not 1 <= log2_n <= PRODUCTION_LOG2_N:
        raise ValueError(f"log2_n must be between 1 and {PRODUCTION_LOG2_N}")
    _LOG2_N = log2_n
    _dummy_hash.cache_clear()  # the unknown-email check costs what a real check costs


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, _LOG2_N, _R, _P)
    return f"scrypt${_LOG2_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(log2_n), int(r), int(p))
    except (ValueError, TypeError):
        return False  # an empty or foreign hash: no password login for this user
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    return not stored.startswith(f"scrypt${_LOG2_N}${_R}${_P}$")


# A real hash of a random password: verifying against it costs what a real check costs, so a
# login for an unknown email takes as long as one with a wrong password.
@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str | None) -> bool:
    if stored is None:
        await asyncio.to_thread(verify_password, password, _dummy_hash())
        return False
    return await asyncio.to_thread(verify_password, password, stored)

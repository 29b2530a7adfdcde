"""Key material: generation, hashing and display prefixes.

``prx-`` keys carry 192 bits from ``secrets``; only their SHA-256 is stored, so a database
leak yields no usable key. Lookups go by hash, which also keeps comparisons constant-time
with respect to the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PRX_PREFIX = "prx-"
BT_PREFIX = "bt-"
_PRX_SECRET_HEX = 48  # 192 bits


def new_prx_key() -> str:
    return PRX_PREFIX + secrets.token_hex(_PRX_SECRET_HEX // 2)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """``prx-`` plus four characters: enough to recognise a key, useless to an attacker."""
    return key[: len(PRX_PREFIX) + 4]


def looks_like_prx_key(token: str) -> bool:
    body = token[len(PRX_PREFIX) :]
    return token.startswith(PRX_PREFIX) and len(body) == _PRX_SECRET_HEX and all(c in "0123456789abcdef" for c in body)


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))

"""Key material: generation, hashing and display prefixes.

``prx-`` keys carry 192 bits from ``secrets``; only their SHA-256 is stored, so a database
leak yields no usable key. Lookups go by hash, which also keeps comparisons constant-time
with respect to the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PRX_PREFIX = "prx-"
BT_PREFIX = "bt-"
_PRX_SECRET_HEX = 48  # 192 bits
# ASCII lowercase hex only: ``[0-9a-f]`` with re.ASCII, and \Z-anchored by fullmatch (no "\n" slips).
_PRX_KEY = re.compile(rf"{re.escape(PRX_PREFIX)}[0-9a-f]{{{_PRX_SECRET_HEX}}}", re.ASCII)


def new_prx_key() -> str:
    return PRX_PREFIX + secrets.token_hex(_PRX_SECRET_HEX // 2)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """``prx-`` plus four characters: enough to recognise a key, useless to an attacker."""
    return key[: len(PRX_PREFIX) + 4]


def looks_like_prx_key(token: str) -> bool:
    # One regex match in C: a generator over the 48 characters was 49 Python calls a request.
    return _PRX_KEY.fullmatch(token) is not None


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))

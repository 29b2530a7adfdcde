"""``bt-`` browser tokens: short-lived, revocable, never in the database.

A token lives in the counter store (Redis, or the embedded store in single-process mode)
under the SHA-256 of its secret, with the parent key's id, its expiry and the parent's token
generation at mint time. Revoking one token deletes it; revoking all tokens of a key bumps
the key's generation, which voids every older token at once without scanning. The record
outlives the token by a grace period so an expired token is told ``token_expired`` (fetch a
new one) rather than ``invalid_api_key``.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

import msgspec

from billing.counters import Adjust, CounterStore, account_key
from keys.secrets import BT_PREFIX, hash_key

MIN_TTL_S = 1
MAX_TTL_S = 86_400
DEFAULT_TTL_S = 3_600
EXPIRED_GRACE_S = 86_400
_SECRET_HEX = 32  # 128 bits


class MintedToken(msgspec.Struct, frozen=True):
    token: str
    expires_in: int
    expires_at: int  # unix seconds


class TokenGrant(msgspec.Struct, frozen=True):
    """What a token stands for: its parent key, and whether it is past its expiry."""

    key_id: int
    account_id: int
    expired: bool


def looks_like_bt_token(token: str) -> bool:
    body = token[len(BT_PREFIX) :]
    return token.startswith(BT_PREFIX) and len(body) == _SECRET_HEX and all(c in "0123456789abcdef" for c in body)


class BrowserTokens:
    def __init__(self, store: CounterStore, *, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._prefix = prefix
        self._clock = clock

    def _token_key(self, token: str) -> str:
        return f"{self._prefix}bt:{hash_key(token)}"

    def _generation_key(self, account_id: int, key_id: int) -> str:
        return account_key(self._prefix, account_id, f"btgen:{key_id}")

    async def mint(self, account_id: int, key_id: int, ttl_s: int) -> MintedToken:
        token = BT_PREFIX + secrets.token_hex(_SECRET_HEX // 2)
        now = self._clock()
        # Kept in milliseconds: a 1 s token lives 1 s, not anywhere between 0 and 1 s.
        expires_at_ms = int((now + ttl_s) * 1000)
        expires_at = math.ceil(now + ttl_s)
        generation = await self._store.get(self._generation_key(account_id, key_id), "g") or 0
        record_ttl_ms = (ttl_s + EXPIRED_GRACE_S) * 1000
        key = self._token_key(token)
        await self._store.adjust(
            [
                Adjust(key, "key", key_id, record_ttl_ms),
                Adjust(key, "acct", account_id, record_ttl_ms),
                Adjust(key, "gen", generation, record_ttl_ms),
                Adjust(key, "expm", expires_at_ms, record_ttl_ms),
            ]
        )
        return MintedToken(token=token, expires_in=ttl_s, expires_at=expires_at)

    async def resolve(self, token: str) -> TokenGrant | None:
        """The grant behind a token, or ``None`` if it never existed or was revoked."""
        record = await self._store.get_all(self._token_key(token))
        if not {"key", "acct", "gen"} <= record.keys() or not {"expm", "exp"} & record.keys():
            return None
        generation = await self._store.get(self._generation_key(record["acct"], record["key"]), "g") or 0
        if record["gen"] != generation:
            return None
        # "exp" (whole seconds) is what tokens minted before the millisecond field carry.
        expires_ms = record["expm"] if "expm" in record else record["exp"] * 1000
        return TokenGrant(key_id=record["key"], account_id=record["acct"], expired=expires_ms <= self._clock() * 1000)

    async def revoke(self, token: str) -> bool:
        """Revoke one token; ``False`` if it was not known (already gone)."""
        key = self._token_key(token)
        existed = bool(await self._store.get_all(key))
        await self._store.delete(key)
        return existed

    async def revoke_all(self, account_id: int, key_id: int) -> None:
        await self._store.adjust([Adjust(self._generation_key(account_id, key_id), "g", 1)])

    async def owner_of(self, token: str) -> tuple[int, int] | None:
        """(account id, key id) of a live or expired token, for authorising its revocation."""
        record = await self._store.get_all(self._token_key(token))
        if "key" not in record or "acct" not in record:
            return None
        return record["acct"], record["key"]

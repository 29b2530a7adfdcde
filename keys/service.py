"""Creating ``prx-`` keys and resolving a bearer token to who is calling.

Resolution is on every request's path, so resolved keys are cached per process for
``ttl_s`` (1 s by default): a revoked or changed key stops working everywhere within that
time, while a busy key costs one database query per second per process instead of one per
request. Unknown keys are cached too (bounded), so a flood of bad keys cannot reach the
database at request rate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.models import Account
from keys.models import ApiKey
from keys.secrets import display_prefix, hash_key, new_prx_key


class KeyIdentity(msgspec.Struct, frozen=True):
    """What the request path needs to know about a resolved key (no secret inside)."""

    key_id: int
    account_id: int
    account_status: str
    is_active: bool
    expires_at: datetime | None
    name: str
    allowed_models: tuple[str, ...] = ()
    allowed_categories: tuple[str, ...] = ()
    spending_limit_micro: int | None = None
    spending_period: str = "monthly"


async def create_key(session: AsyncSession, account_id: int, name: str, *, description: str = "") -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext key, which is never stored. Commits."""
    plaintext = new_prx_key()
    key = ApiKey(
        account_id=account_id,
        name=name,
        description=description,
        prefix=display_prefix(plaintext),
        key_hash=hash_key(plaintext),
    )
    session.add(key)
    await session.commit()
    await session.refresh(key)
    return key, plaintext


class KeyResolver:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        ttl_s: float,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, KeyIdentity | None]] = OrderedDict()

    async def resolve(self, token: str) -> KeyIdentity | None:
        """The identity behind a ``prx-`` key, or ``None`` if no such key exists."""
        digest = hash_key(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        identity = await self._load(digest)
        self._cache[digest] = (now, identity)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return identity

    def forget_all(self) -> None:
        self._cache.clear()

    async def _load(self, digest: str) -> KeyIdentity | None:
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    select(ApiKey, Account.status)
                    .join(Account, Account.id == ApiKey.account_id)
                    .where(ApiKey.key_hash == digest)
                )
            ).first()
        if row is None:
            return None
        key, account_status = row
        return KeyIdentity(
            key_id=key.id,
            account_id=key.account_id,
            account_status=account_status,
            is_active=key.is_active,
            expires_at=key.expires_at,
            name=key.name,
            allowed_models=tuple(key.allowed_models or ()),
            allowed_categories=tuple(key.allowed_categories or ()),
            spending_limit_micro=key.spending_limit_micro,
            spending_period=key.spending_period,
        )

"""Creating ``prx-`` keys and resolving a bearer token to who is calling.

Resolution is on every request's path, so resolved keys are cached per process for
``ttl_s`` (1 s by default): a revoked or changed key stops working everywhere within that
time, while a busy key costs one database query per second per process instead of one per
request.

Unknown keys never reach the database one by one: each process keeps the set of every key's
hash (the *directory*), grown incrementally by ``id`` (``WHERE id > last seen``). A hash that
is not in it is refused without a query. A miss waits for a directory sync that starts after
it arrived, so a key just created by any process is found at once; syncs are shared by every
miss waiting at the time and start at most every ``directory_interval_s``, so a flood of
random keys costs a few cheap queries a second per process, not one per key. Deleted keys
stay in the set; that only sends their (rare) callers to the per-key lookup, which says no.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.errors import DATABASE_ERRORS
from billing.models import Account
from keys.errors import KeysUnavailable
from keys.models import ApiKey
from keys.restrictions import (
    HoursWindow,
    IPNetwork,
    OriginPattern,
    RestrictionError,
    parse_active_hours,
    parse_categories,
    parse_networks,
    parse_origins,
)
from keys.secrets import display_prefix, hash_key, new_prx_key


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """What the request path needs to know about a resolved key: parsed restrictions, no secret.

    A ``bt-`` token resolves to its parent's identity with ``via_token`` set, so every
    restriction of the parent applies to it, live.
    """

    key_id: int
    account_id: int
    account_status: str
    is_active: bool
    expires_at: datetime | None
    name: str
    allowed_models: frozenset[str] = frozenset()
    allowed_categories: frozenset[str] = frozenset()
    allowed_ips: tuple[IPNetwork, ...] = ()
    allowed_origins: tuple[OriginPattern, ...] = ()
    blocked_countries: frozenset[str] = frozenset()
    active_hours: HoursWindow | None = None
    spending_limit_micro: int | None = None
    spending_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    webhook_url: str = ""
    cache_ttl_s: int = 0  # the response cache's lifetime for this key's answers; 0 = off
    via_token: bool = False
    prefix: str = ""  # the key's display prefix (``prx-`` + 4), what logs may name

    @property
    def is_restricted(self) -> bool:
        """Whether any restriction narrows this key (such a key must not mint itself a wider one)."""
        return bool(
            self.expires_at is not None
            or self.allowed_models
            or self.allowed_categories
            or self.allowed_ips
            or self.allowed_origins
            or self.blocked_countries
            or self.active_hours is not None
            or self.spending_limit_micro is not None
            or self.rpm_limit is not None
            or self.tpm_limit is not None
        )


def identity_from_row(key: ApiKey, account_status: str) -> KeyIdentity:
    """Parse a key row's restrictions once, when it enters the cache."""
    return KeyIdentity(
        key_id=key.id,
        account_id=key.account_id,
        account_status=account_status,
        is_active=key.is_active,
        expires_at=key.expires_at,
        name=key.name,
        allowed_models=frozenset(key.allowed_models or ()),
        allowed_categories=parse_categories(key.allowed_categories or ()),
        allowed_ips=parse_networks(key.allowed_ips or ()),
        allowed_origins=parse_origins(key.allowed_origins or ()),
        blocked_countries=frozenset(c.upper() for c in key.blocked_countries or ()),
        active_hours=parse_active_hours(key.active_hours or ""),
        spending_limit_micro=key.spending_limit_micro,
        spending_period=key.spending_period,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        webhook_url=key.webhook_url,
        cache_ttl_s=key.cache_ttl_s,
        prefix=key.prefix,
    )


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


log = logging.getLogger("tollway.keys")


class KeyResolver:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        ttl_s: float,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        directory_interval_s: float = 0.05,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, KeyIdentity | None]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[KeyIdentity | None]] = {}
        self._directory_interval_s = directory_interval_s
        self._known: set[str] = set()  # every key hash seen in the database
        self._known_up_to_id = 0
        self._last_sync_at = float("-inf")
        self._next_sync: asyncio.Future[None] | None = None  # not started yet: joinable
        self._running_sync: asyncio.Future[None] | None = None

    async def resolve(self, token: str) -> KeyIdentity | None:
        """The identity behind a ``prx-`` key, or ``None`` if no such key exists."""
        digest = hash_key(token)
        if digest not in self._known and digest not in self._cache:
            try:
                await asyncio.shield(self._directory_sync())
            except DATABASE_ERRORS as error:
                raise KeysUnavailable("the key database is unreachable; try again shortly") from error
            if digest not in self._known:
                return None
        return await self._cached(digest, lambda: ApiKey.key_hash == digest)

    def _directory_sync(self) -> asyncio.Future[None]:
        """A sync that has not started yet (so it will see anything created before this call)."""
        if self._next_sync is None:
            self._next_sync = asyncio.ensure_future(self._sync_directory(self._running_sync))
        return self._next_sync

    async def _sync_directory(self, previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        delay = self._last_sync_at + self._directory_interval_s - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        # From here on the query may miss what is created next: later misses need the next sync.
        self._running_sync, self._next_sync = self._next_sync, None
        self._last_sync_at = self._clock()
        for key_id, key_hash in await self._load_directory(self._known_up_to_id):
            self._known.add(key_hash)
            self._known_up_to_id = max(self._known_up_to_id, key_id)

    async def _load_directory(self, after_id: int) -> list[tuple[int, str]]:
        async with self._sessionmaker() as session:
            rows = await session.execute(select(ApiKey.id, ApiKey.key_hash).where(ApiKey.id > after_id))
            return [(int(key_id), str(key_hash)) for key_id, key_hash in rows]

    def forget_all(self) -> None:
        """Make every entry stale (still usable if the database cannot answer)."""
        for cache_key, (_at, identity) in list(self._cache.items()):
            self._cache[cache_key] = (float("-inf"), identity)

    async def resolve_id(self, key_id: int) -> KeyIdentity | None:
        """The identity of key ``key_id`` (the parent of a ``bt-`` token), cached the same way."""
        return await self._cached(f"id:{key_id}", lambda: ApiKey.id == key_id)

    async def _cached(self, cache_key: str, condition: Callable[[], ColumnElement[bool]]) -> KeyIdentity | None:
        now = self._clock()
        cached = self._cache.get(cache_key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        # Every request in flight when an entry goes stale would otherwise query at once (and
        # open overflow connections to do it): they share one load.
        loading = self._loading.get(cache_key)
        if loading is None:
            loading = asyncio.ensure_future(self._load(condition()))
            self._loading[cache_key] = loading
            loading.add_done_callback(functools.partial(self._loaded, cache_key, now))
        try:
            return await asyncio.shield(loading)
        except DATABASE_ERRORS as error:
            # The database is unreachable. Nothing can change a key while it is down, so the
            # last answer we had is still the truth: serve it (stale-if-error), else fail closed.
            if cached is not None:
                return cached[1]
            raise KeysUnavailable("the key database is unreachable; try again shortly") from error

    def _loaded(self, cache_key: str, started: float, loading: asyncio.Future[KeyIdentity | None]) -> None:
        del self._loading[cache_key]
        if loading.cancelled() or loading.exception() is not None:  # exception(): retrieved even if nobody waits
            return
        self._remember(cache_key, started, loading.result())

    def _remember(self, cache_key: str, now: float, identity: KeyIdentity | None) -> None:
        self._cache[cache_key] = (now, identity)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def _load(self, condition: ColumnElement[bool]) -> KeyIdentity | None:
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    select(ApiKey, Account.status).join(Account, Account.id == ApiKey.account_id).where(condition)
                )
            ).first()
        if row is None:
            return None
        key, account_status = row
        try:
            return identity_from_row(key, account_status)
        except RestrictionError:
            # Written by hand around the API: refuse the key rather than drop a restriction.
            log.error("key %s has unreadable restrictions; refusing it", key.id)
            return None

"""The key cache: concurrent misses share one database load; a failed load fails every waiter
closed unless a previous answer exists."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from keys.errors import KeysUnavailable
from keys.secrets import hash_key, new_prx_key
from keys.service import KeyResolver

KNOWN = "prx-" + "a" * 48  # a key the directory lists (e.g. deleted since: its lookup says None)


class CountingResolver(KeyResolver):
    def __init__(self, *, fail: bool = False, ttl_s: float = 1.0) -> None:
        self.now = 100.0
        super().__init__(None, ttl_s=ttl_s, clock=lambda: self.now, directory_interval_s=0)  # type: ignore[arg-type]
        self.loads = 0
        self.directory_loads = 0
        self.directory = [(1, hash_key(KNOWN))]
        self.fail = fail

    async def _load(self, condition: Any) -> Any:
        self.loads += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise OperationalError("SELECT", {}, ConnectionRefusedError())
        return None  # no such key (cached like any answer)

    async def _load_directory(self, after_id: int) -> list[tuple[int, str]]:
        self.directory_loads += 1
        await asyncio.sleep(0.01)
        return [(key_id, digest) for key_id, digest in self.directory if key_id > after_id]


async def test_concurrent_misses_share_one_load() -> None:
    resolver = CountingResolver()
    answers = await asyncio.gather(*(resolver.resolve(KNOWN) for _ in range(32)))
    assert answers == [None] * 32 and resolver.loads == 1
    await resolver.resolve(KNOWN)
    assert resolver.loads == 1  # fresh: from the cache
    resolver.now += 2  # stale: one more load for everyone
    await asyncio.gather(*(resolver.resolve(KNOWN) for _ in range(8)))
    assert resolver.loads == 2


async def test_a_failed_shared_load_fails_every_waiter_closed() -> None:
    resolver = CountingResolver(fail=True)
    results = await asyncio.gather(*(resolver.resolve_id(7) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, KeysUnavailable) for result in results) and resolver.loads == 1
    with pytest.raises(KeysUnavailable):
        await resolver.resolve_id(7)  # nothing cached: the next one tries again, and fails closed
    assert resolver.loads == 2


async def test_key_cache_random_keys_never_query_one_by_one() -> None:
    resolver = CountingResolver()
    sequential = [await resolver.resolve(new_prx_key()) for _ in range(20)]
    concurrent = await asyncio.gather(*(resolver.resolve(new_prx_key()) for _ in range(1000)))
    assert sequential == [None] * 20 and concurrent == [None] * 1000
    assert resolver.loads == 0  # no per-key query for a key the directory does not list
    # Concurrent misses share the directory syncs: a couple of queries, not a thousand.
    assert resolver.directory_loads <= 20 + 2


async def test_key_cache_directory_syncs_are_spaced_under_a_flood() -> None:
    resolver = CountingResolver()
    resolver._directory_interval_s = 1.0  # with the injected clock standing still, only one may start
    await resolver.resolve(new_prx_key())
    flood = asyncio.gather(*(resolver.resolve(new_prx_key()) for _ in range(50)))
    await asyncio.sleep(0.05)
    assert resolver.directory_loads == 1  # the next sync waits for the interval
    await flood  # one more sync, after the interval, serves all fifty
    assert resolver.directory_loads <= 2


async def test_key_cache_finds_a_key_created_after_a_miss() -> None:
    resolver = CountingResolver()
    created = new_prx_key()
    assert await resolver.resolve(created) is None  # not created yet
    resolver.directory.append((2, hash_key(created)))  # another process creates it
    await resolver.resolve(created)
    assert resolver.loads == 1  # the next miss synced the directory and then looked the key up

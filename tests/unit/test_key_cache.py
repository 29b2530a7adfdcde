"""The key cache: concurrent misses share one database load; a failed load fails every waiter
closed unless a previous answer exists."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from keys.errors import KeysUnavailable
from keys.service import KeyResolver


class CountingResolver(KeyResolver):
    def __init__(self, *, fail: bool = False, ttl_s: float = 1.0) -> None:
        self.now = 100.0
        super().__init__(None, ttl_s=ttl_s, clock=lambda: self.now)  # type: ignore[arg-type]
        self.loads = 0
        self.fail = fail

    async def _load(self, condition: Any) -> Any:
        self.loads += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise OperationalError("SELECT", {}, ConnectionRefusedError())
        return None  # no such key (cached like any answer)


async def test_concurrent_misses_share_one_load() -> None:
    resolver = CountingResolver()
    answers = await asyncio.gather(*(resolver.resolve("prx-" + "a" * 48) for _ in range(32)))
    assert answers == [None] * 32 and resolver.loads == 1
    await resolver.resolve("prx-" + "a" * 48)
    assert resolver.loads == 1  # fresh: from the cache
    resolver.now += 2  # stale: one more load for everyone
    await asyncio.gather(*(resolver.resolve("prx-" + "a" * 48) for _ in range(8)))
    assert resolver.loads == 2


async def test_a_failed_shared_load_fails_every_waiter_closed() -> None:
    resolver = CountingResolver(fail=True)
    results = await asyncio.gather(*(resolver.resolve_id(7) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, KeysUnavailable) for result in results) and resolver.loads == 1
    with pytest.raises(KeysUnavailable):
        await resolver.resolve_id(7)  # nothing cached: the next one tries again, and fails closed
    assert resolver.loads == 2

"""One contract, two backends: the embedded response store and Redis behave alike (get, set with
a TTL, overwrite, delete, accounts apart), plus what only one of them has (the embedded size
bound and clock, Redis's EX and its outage)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.cache import (
    EmbeddedResponseStore,
    RedisResponseStore,
    ResponseStore,
    ResponseStoreUnavailable,
    build_response_store,
    entry_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["embedded", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[ResponseStore]:
    if request.param == "embedded":
        yield EmbeddedResponseStore(max_bytes=1 << 20)
        return
    url = str(request.getfixturevalue("redis_url"))
    redis_store = RedisResponseStore.from_url(url)
    yield redis_store
    await redis_store.close()
    client = aioredis.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=redis_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def key(prefix: str, account_id: int = 42, digest: str = "ab" * 32) -> str:
    return entry_key(prefix, account_id, digest)


async def test_response_store_missing_key_is_none(store: ResponseStore, redis_prefix: str) -> None:
    assert await store.get(key(redis_prefix)) is None


async def test_response_store_set_then_get_whole_value(store: ResponseStore, redis_prefix: str) -> None:
    value = bytes(range(256)) * 10  # any bytes, NUL included
    await store.set(key(redis_prefix), value, 60)
    assert await store.get(key(redis_prefix)) == value


async def test_response_store_set_replaces(store: ResponseStore, redis_prefix: str) -> None:
    await store.set(key(redis_prefix), b"first", 60)
    await store.set(key(redis_prefix), b"second", 60)
    assert await store.get(key(redis_prefix)) == b"second"


async def test_response_store_delete_forgets(store: ResponseStore, redis_prefix: str) -> None:
    await store.set(key(redis_prefix), b"v", 60)
    await store.delete(key(redis_prefix))
    await store.delete(key(redis_prefix))  # absent is fine
    assert await store.get(key(redis_prefix)) is None


async def test_response_store_accounts_never_share_a_key(store: ResponseStore, redis_prefix: str) -> None:
    assert key(redis_prefix, 1) != key(redis_prefix, 2)
    await store.set(key(redis_prefix, 1), b"one", 60)
    assert await store.get(key(redis_prefix, 2)) is None


async def test_response_store_zero_ttl_stores_nothing(store: ResponseStore, redis_prefix: str) -> None:
    await store.set(key(redis_prefix), b"v", 0)
    assert await store.get(key(redis_prefix)) is None


def test_response_store_key_has_the_account_hash_tag() -> None:
    assert entry_key("tw:", 7, "ff") == "tw:{a7}:rc:ff"


async def test_embedded_response_store_expires_by_its_clock() -> None:
    clock = FakeClock()
    store = EmbeddedResponseStore(max_bytes=1000, clock=clock)
    await store.set("k", b"v", 30)
    clock.now += 29.9
    assert await store.get("k") == b"v"
    clock.now += 0.1
    assert await store.get("k") is None
    assert store.size_bytes == 0


async def test_embedded_response_store_evicts_least_recently_used_past_its_bound() -> None:
    store = EmbeddedResponseStore(max_bytes=250)
    await store.set("a", b"a" * 100, 60)
    await store.set("b", b"b" * 100, 60)
    assert await store.get("a") is not None  # "a" is now the most recently used
    await store.set("c", b"c" * 100, 60)
    assert await store.get("b") is None
    assert await store.get("a") == b"a" * 100 and await store.get("c") == b"c" * 100
    assert store.size_bytes == 200
    await store.set("huge", b"h" * 251, 60)  # larger than the whole store: never kept
    assert await store.get("huge") is None and store.size_bytes == 200


async def test_redis_response_store_sets_ex(redis_url: str, redis_prefix: str) -> None:
    store = RedisResponseStore.from_url(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await store.set(key(redis_prefix), b"v", 30)
        assert 0 < await client.ttl(key(redis_prefix)) <= 30
    finally:
        await client.delete(key(redis_prefix))
        await client.aclose()
        await store.close()


async def test_redis_response_store_unreachable_raises_unavailable() -> None:
    store = RedisResponseStore.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        with pytest.raises(ResponseStoreUnavailable):
            await store.get("k")
        with pytest.raises(ResponseStoreUnavailable):
            await store.set("k", b"v", 30)
    finally:
        await store.close()


def test_build_response_store_picks_by_redis_url() -> None:
    assert isinstance(build_response_store("", max_bytes=10), EmbeddedResponseStore)
    assert isinstance(build_response_store("redis://127.0.0.1:6379/4", max_bytes=10), RedisResponseStore)

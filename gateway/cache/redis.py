"""The Redis response store: ``SET key value EX ttl`` and ``GET``, one round trip each.

Its own client with short timeouts: a cache that answers late is worse than none, and a slow
or dead Redis must cost a request at most a fraction of a second before it goes upstream.
Connection failures become :class:`ResponseStoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.cache._base import ResponseStoreUnavailable

T = TypeVar("T")
TIMEOUT_S = 0.5


class RedisResponseStore:
    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 100) -> RedisResponseStore:
        """Connects lazily; ``redis+cluster://`` selects a cluster (as billing.counters does)."""
        if url.startswith(("redis+cluster://", "rediss+cluster://")):
            return cls(
                RedisCluster.from_url(
                    url.replace("+cluster://", "://", 1),
                    socket_timeout=TIMEOUT_S,
                    socket_connect_timeout=TIMEOUT_S,
                    max_connections=max_connections,
                )
            )
        return cls(
            aioredis.Redis.from_url(
                url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, max_connections=max_connections
            )
        )

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise ResponseStoreUnavailable(f"redis unavailable: {type(error).__name__}") from error

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda: self._client.get(key))
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s > 0:
            await self._call(lambda: self._client.set(key, value, ex=ttl_s))

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._client.delete(key))

    async def close(self) -> None:
        await self._client.aclose()

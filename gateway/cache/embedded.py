"""The in-process response store of the single-process default (no Redis).

Bounded by the bytes it holds: past ``max_bytes`` the least recently used entries go first.
Expiry is read from an injected monotonic clock (the gateway's, which tests move instead of
sleeping). No ``await`` inside an operation, so concurrent requests never see half an entry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class EmbeddedResponseStore:
    def __init__(self, *, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        value, expires_at = found
        if expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0 or len(value) > self._max_bytes:
            return
        self._drop(key)
        self._entries[key] = (value, self._clock() + ttl_s)
        self._bytes += len(value)
        while self._bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    async def delete(self, key: str) -> None:
        self._drop(key)

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= len(found[0])

"""The opt-in response cache's store (see :mod:`gateway.cache._base`) and its two backends.

The pipeline side (what a key of an entry is, when an answer is stored, how a hit is billed
and replayed) is :mod:`gateway.pipeline.cached`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.cache._base import ResponseStore, ResponseStoreUnavailable, entry_key
from gateway.cache.embedded import EmbeddedResponseStore
from gateway.cache.redis import RedisResponseStore

__all__ = [
    "EmbeddedResponseStore",
    "RedisResponseStore",
    "ResponseStore",
    "ResponseStoreUnavailable",
    "build_response_store",
    "entry_key",
]


def build_response_store(
    redis_url: str, *, max_bytes: int, clock: Callable[[], float] = time.monotonic
) -> ResponseStore:
    """Redis when the gateway has one (entries shared by every process), else the embedded store
    (bounded by ``max_bytes``, expiring by ``clock``). Connects lazily: no I/O here."""
    if redis_url:
        return RedisResponseStore.from_url(redis_url)
    return EmbeddedResponseStore(max_bytes=max_bytes, clock=clock)

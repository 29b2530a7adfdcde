"""Atomic counters for limits, budgets and reservations (see :mod:`billing.counters._base`)."""

from __future__ import annotations

from billing.counters._base import (
    Adjust,
    ApplyResult,
    Check,
    CounterStore,
    CounterStoreUnavailable,
    Hold,
    account_key,
)
from billing.counters.embedded import EmbeddedCounterStore
from billing.counters.redis import RedisCounterStore

__all__ = [
    "Adjust",
    "ApplyResult",
    "Check",
    "CounterStore",
    "CounterStoreUnavailable",
    "EmbeddedCounterStore",
    "Hold",
    "RedisCounterStore",
    "account_key",
    "build_counter_store",
]


def build_counter_store(redis_url: str, prefix: str = "tw:") -> CounterStore:
    """Redis when a URL is configured, else the embedded store; connects lazily (no I/O here)."""
    if redis_url:
        return RedisCounterStore.from_url(redis_url, prefix=prefix)
    return EmbeddedCounterStore()

"""Atomic counters for limits, budgets and reservations (see :mod:`billing.counters._base`)."""

from __future__ import annotations

from billing.counters._base import (
    Adjust,
    ApplyResult,
    Check,
    CounterStore,
    CounterStoreUnavailable,
    Enqueue,
    Hold,
    QueuedSettlement,
    WindowHit,
    account_key,
    settlement_stream,
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
    "Enqueue",
    "Hold",
    "QueuedSettlement",
    "RedisCounterStore",
    "WindowHit",
    "account_key",
    "build_counter_store",
    "settlement_stream",
]


def build_counter_store(redis_url: str, prefix: str = "tw:") -> CounterStore:
    """Redis when a URL is configured, else the embedded store; connects lazily (no I/O here)."""
    if redis_url:
        return RedisCounterStore.from_url(redis_url, prefix=prefix)
    return EmbeddedCounterStore()

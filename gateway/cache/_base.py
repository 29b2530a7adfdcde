"""The response store: whole cached answers by key, each with its own time to live.

A cache, not a ledger: losing an entry costs one upstream call, so every backend may drop
entries early (the embedded store evicts the least recently used past its size bound, Redis
may evict under ``maxmemory``), and an unreachable store is a miss, never a failed request
(:class:`ResponseStoreUnavailable`, which the pipeline swallows).

Keys are built by :func:`entry_key`: the account is in the key's hash tag, so one account's
entries stay in one Redis Cluster slot and no two accounts can ever name the same entry.
"""

from __future__ import annotations

from typing import Protocol


class ResponseStoreUnavailable(Exception):
    """The store did not answer (Redis down or slow): treat as a miss, skip the write."""


class ResponseStore(Protocol):
    """Bytes by key with a TTL; a value is written and read whole (no partial entries)."""

    async def get(self, key: str) -> bytes | None:
        """The live value at ``key``, or ``None`` (absent or expired)."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        """Store ``value`` for ``ttl_s`` seconds (> 0), replacing any value at ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key`` (absent is fine)."""
        ...

    async def close(self) -> None:
        """Release connections (the lifespan calls it once at shutdown)."""
        ...


def entry_key(prefix: str, account_id: int, digest: str) -> str:
    """``{prefix}{a<account>}:rc:<sha256 hex>``: the account's hash tag, as billing.counters.account_key."""
    return f"{prefix}{{a{account_id}}}:rc:{digest}"

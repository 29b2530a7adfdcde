"""The counter store: atomic integer counters for limits, budgets and reservations.

Every check that protects money is a *check-and-apply* done in one atomic step, across every
gateway process: with Redis one Lua script (one round trip), in the embedded store one
synchronous function on the event loop (no ``await`` between the check and the write).

Data model: a counter lives at ``(key, field)``: a hash key and a field inside it. Keys of one
account share a hash tag (``{a42}``) so that every script touching one account stays in one
Redis Cluster slot; :func:`account_key` builds them. A missing field reads as ``None`` (not
zero) so callers can tell "never loaded" from "zero" and load it from Postgres first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec


class Check(msgspec.Struct, frozen=True):
    """Add ``delta`` to ``key/field`` only if the result stays within bounds.

    The bound is ``value + delta <= cap`` where ``cap`` is the literal ``limit`` or, when
    ``limit_field`` is set, the current value of that field in the same key (for example
    ``held + amount <= balance``). ``must_exist``: a missing field fails the whole apply with
    ``missing`` set instead of reading as zero. ``ttl_ms`` sets the key's expiry when the
    apply creates the key (fixed windows for rate limits); ``0`` leaves the expiry alone.
    A negative ``delta`` is never refused by the bound (releasing is always allowed).
    """

    key: str
    field: str
    delta: int
    limit: int | None = None
    limit_field: str | None = None
    must_exist: bool = False
    ttl_ms: int = 0


class Adjust(msgspec.Struct, frozen=True):
    """Unconditionally add ``delta`` to ``key/field`` (creating it at zero)."""

    key: str
    field: str
    delta: int
    ttl_ms: int = 0


class Hold(msgspec.Struct, frozen=True):
    """A reservation's record, written by the same atomic apply that takes it, so that a
    reservation whose process died can be found and released (see ``release``)."""

    key: str
    field: str
    value: str


class Enqueue(msgspec.Struct, frozen=True):
    """A settlement to buffer in the account's stream, in the same atomic step as a release.

    ``pending_key/pending_field`` counts what the stream holds that the database has not
    taken yet (``cost`` in, acknowledged out), so a reader can tell the database balance from
    the true one. ``only_if_held``: enqueue only if the release removed the hold (the expiry
    sweeper bills a checkpointed stream this way, and only the winner of the race bills it).
    """

    stream: str
    pending_key: str
    pending_field: str
    data: bytes
    cost: int
    only_if_held: bool = False


class QueuedSettlement(msgspec.Struct, frozen=True):
    """One buffered settlement as a writer claimed it."""

    entry_id: str
    data: bytes
    cost: int


class ApplyResult(msgspec.Struct, frozen=True):
    """Outcome of :meth:`CounterStore.apply`.

    ``ok``: every delta was applied. Otherwise nothing was applied, ``failed`` is the index of
    the first failing check, ``missing`` says whether it failed for a missing field (load it
    and retry) rather than its bound, ``value`` and ``cap`` are that check's current value and
    effective cap (``None`` when missing), so callers can say how much would still fit.
    ``counts``: on success, every check's value after this apply, in order (a key's rate-limit
    headers read how much of its windows is left from here, not from another round trip).
    """

    ok: bool
    failed: int = -1
    missing: bool = False
    value: int | None = None
    cap: int | None = None
    counts: tuple[int, ...] = ()


class WindowHit(msgspec.Struct, frozen=True):
    """Outcome of :meth:`CounterStore.hit_window`: whether the hit was counted, the window's count
    after it (a refused hit leaves it unchanged) and how long the window has left."""

    allowed: bool
    count: int
    ttl_ms: int


class CounterStore(Protocol):
    """Atomic counters shared by every gateway process (Redis) or by one process (embedded)."""

    #: Whether what the store holds survives this process (Redis: yes; embedded: no). A store
    #: that does not is no place to buffer a settlement for later.
    durable: bool

    async def apply(self, checks: Sequence[Check], hold: Hold | None = None) -> ApplyResult:
        """Check every bound, then apply every delta (and record ``hold``), atomically; all or nothing."""
        ...

    async def release(
        self,
        holds_key: str,
        field: str,
        *,
        if_held: Sequence[Adjust],
        always: Sequence[Adjust],
        enqueue: Enqueue | None = None,
    ) -> bool:
        """Remove a hold record and apply ``always``, plus ``if_held`` only if the record was still
        there, and buffer ``enqueue``, atomically; returns whether the record was there. Settling
        and expiring race safely this way: whichever removes the record releases the hold, once,
        and the settlement is never buffered without its counters moving (or the reverse)."""
        ...

    async def update_hold(self, holds_key: str, field: str, value: str) -> bool:
        """Replace a hold record's value only if the hold still exists (never resurrect one)."""
        ...

    async def holds(self, holds_key: str) -> dict[str, str]:
        """Every hold record under ``holds_key`` (field → value)."""
        ...

    async def adjust(self, adjustments: Sequence[Adjust]) -> None:
        """Apply unconditional deltas atomically in one round trip."""
        ...

    async def hit_window(self, key: str, limit: int, ttl_ms: int) -> WindowHit:
        """Count one hit in the fixed window ``key`` unless ``limit`` hits are counted already,
        atomically (a rate limit: check and count in one step, one round trip). The window is
        made by its first hit and ends ``ttl_ms`` later; a refused hit counts nothing. The count
        is the field ``hits`` of ``key``, so :meth:`get` reads it."""
        ...

    async def get(self, key: str, field: str) -> int | None:
        """The field's value, ``None`` when the key or field does not exist."""
        ...

    async def get_all(self, key: str) -> dict[str, int]:
        """Every field of a key (empty when the key does not exist)."""
        ...

    async def set_if(
        self,
        key: str,
        values: Mapping[str, int],
        guard_field: str,
        guard_value: int | None,
    ) -> bool:
        """Set ``values`` only if ``guard_field`` still equals ``guard_value`` (``None``: absent).

        Used to refresh a mirrored value from Postgres without overwriting a concurrent
        settlement: the caller reads the guard (a generation counter) before its query.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove a key and all its fields."""
        ...

    async def claim_settlements(
        self, stream: str, consumer: str, count: int, idle_ms: int | None = None
    ) -> list[QueuedSettlement]:
        """Buffered settlements of one stream for ``consumer`` to write: its own not yet
        acknowledged ones (a write that failed) and new ones; with ``idle_ms``, also ones another
        consumer took more than ``idle_ms`` ago without acknowledging (its process died)."""
        ...

    async def ack_settlements(
        self,
        stream: str,
        pending_key: str,
        pending_field: str,
        entries: Sequence[QueuedSettlement],
        generation_field: str = "",
    ) -> int:
        """Forget settlements that are now in the database and take their cost off the pending
        counter, each once however many writers acknowledge it; returns the cost taken off.
        With ``generation_field``, an ack that forgot anything also bumps that field, so a
        guarded refresh that read the pending sum before it is refused."""
        ...

    async def settlement_streams(self) -> list[str]:
        """Every settlement stream that holds entries (a writer's way to find the buffers of a
        process that died)."""
        ...

    async def queued_settlements(self, stream: str | None = None) -> int:
        """How many settlements wait in ``stream`` (every stream when ``None``) for the database."""
        ...

    async def ping(self) -> None:
        """Raise :class:`CounterStoreUnavailable` if the store cannot answer."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


class CounterStoreUnavailable(Exception):
    """The store could not answer; money checks must fail closed on this."""


def account_key(prefix: str, account_id: int | str, name: str) -> str:
    """A key inside the account's hash slot: ``{prefix}{a<id>}:<name>``."""
    return f"{prefix}{{a{account_id}}}:{name}"


def settlement_stream(prefix: str, account_id: int | str) -> str:
    """The stream that buffers an account's settlements for the database writer; in the
    account's slot, so one script can release a hold and buffer its settlement."""
    return account_key(prefix, account_id, "settled")

"""The in-process counter store for the single-process default (no Redis).

Atomicity comes from the event loop: ``apply`` checks and writes with no ``await`` in between,
so no other coroutine can interleave. It is only correct within one process, which is why
``tollway serve --workers N`` refuses to start without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from billing.counters._base import Adjust, ApplyResult, Check, Enqueue, Hold, QueuedSettlement, WindowHit


class _Entry:
    __slots__ = ("expires_at", "fields")

    def __init__(self) -> None:
        self.fields: dict[str, int] = {}
        self.expires_at: float | None = None


class _Queued:
    __slots__ = ("claimed_at", "consumer", "cost", "data")

    def __init__(self, data: bytes, cost: int) -> None:
        self.data = data
        self.cost = cost
        self.consumer: str | None = None
        self.claimed_at = 0.0


class EmbeddedCounterStore:
    durable = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._holds: dict[str, dict[str, str]] = {}
        self._streams: dict[str, dict[str, _Queued]] = {}
        self._queued = 0

    def _live(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._clock():
            del self._data[key]
            return None
        return entry

    def _entry(self, key: str, ttl_ms: int) -> _Entry:
        entry = self._live(key)
        if entry is None:
            entry = self._data[key] = _Entry()
            if ttl_ms > 0:
                entry.expires_at = self._clock() + ttl_ms / 1000
        return entry

    async def apply(self, checks: Sequence[Check], hold: Hold | None = None) -> ApplyResult:
        # Evaluate every bound against the values before this apply, then write: all or nothing.
        for index, check in enumerate(checks):
            entry = self._live(check.key)
            fields = entry.fields if entry is not None else {}
            value = fields.get(check.field)
            if value is None and check.must_exist:
                return ApplyResult(ok=False, failed=index, missing=True)
            current = value or 0
            cap: int | None = check.limit
            if check.limit_field is not None:
                cap = fields.get(check.limit_field)
                if cap is None:
                    return ApplyResult(ok=False, failed=index, missing=True, value=value)
            if cap is not None and check.delta > 0 and current + check.delta > cap:
                return ApplyResult(ok=False, failed=index, value=current, cap=cap)
        counts: list[int] = []
        for check in checks:
            entry = self._entry(check.key, check.ttl_ms)
            entry.fields[check.field] = count = entry.fields.get(check.field, 0) + check.delta
            counts.append(count)
        if hold is not None:
            self._holds.setdefault(hold.key, {})[hold.field] = hold.value
        return ApplyResult(ok=True, counts=tuple(counts))

    async def hit_window(self, key: str, limit: int, ttl_ms: int) -> WindowHit:
        # No await between the read and the write: atomic on the event loop.
        entry = self._live(key)
        count = entry.fields.get("hits", 0) if entry is not None else 0
        if count >= limit:
            return WindowHit(allowed=False, count=count, ttl_ms=self._left_ms(entry))
        entry = self._entry(key, ttl_ms)
        if entry.expires_at is None:  # as Redis: a window without an expiry gets one
            entry.expires_at = self._clock() + ttl_ms / 1000
        entry.fields["hits"] = count + 1
        return WindowHit(allowed=True, count=count + 1, ttl_ms=self._left_ms(entry))

    def _left_ms(self, entry: _Entry | None) -> int:
        if entry is None or entry.expires_at is None:
            return 0
        return max(0, round((entry.expires_at - self._clock()) * 1000))

    async def release(
        self,
        holds_key: str,
        field: str,
        *,
        if_held: Sequence[Adjust],
        always: Sequence[Adjust],
        enqueue: Enqueue | None = None,
    ) -> bool:
        held = self._holds.get(holds_key, {}).pop(field, None) is not None
        await self.adjust([*(if_held if held else ()), *always])
        if enqueue is not None and (held or not enqueue.only_if_held):
            self._queued += 1
            self._streams.setdefault(enqueue.stream, {})[f"{self._queued}-0"] = _Queued(enqueue.data, enqueue.cost)
            await self.adjust([Adjust(enqueue.pending_key, enqueue.pending_field, enqueue.cost)])
        return held

    async def update_hold(self, holds_key: str, field: str, value: str) -> bool:
        records = self._holds.get(holds_key, {})
        if field not in records:
            return False
        records[field] = value
        return True

    async def holds(self, holds_key: str) -> dict[str, str]:
        return dict(self._holds.get(holds_key, {}))

    async def adjust(self, adjustments: Sequence[Adjust]) -> None:
        for item in adjustments:
            entry = self._entry(item.key, item.ttl_ms)
            entry.fields[item.field] = entry.fields.get(item.field, 0) + item.delta

    async def get(self, key: str, field: str) -> int | None:
        entry = self._live(key)
        return entry.fields.get(field) if entry is not None else None

    async def get_all(self, key: str) -> dict[str, int]:
        entry = self._live(key)
        return dict(entry.fields) if entry is not None else {}

    async def set_if(self, key: str, values: Mapping[str, int], guard_field: str, guard_value: int | None) -> bool:
        if await self.get(key, guard_field) != guard_value:
            return False
        entry = self._entry(key, 0)
        entry.fields.update(values)
        return True

    async def claim_settlements(
        self, stream: str, consumer: str, count: int, idle_ms: int | None = None
    ) -> list[QueuedSettlement]:
        now = self._clock()
        taken: list[QueuedSettlement] = []
        for entry_id, entry in self._streams.get(stream, {}).items():
            if len(taken) >= count:
                break
            stale = idle_ms is not None and entry.consumer is not None and now - entry.claimed_at >= idle_ms / 1000
            if entry.consumer in (None, consumer) or stale:
                entry.consumer, entry.claimed_at = consumer, now
                taken.append(QueuedSettlement(entry_id, entry.data, entry.cost))
        return taken

    async def ack_settlements(
        self,
        stream: str,
        pending_key: str,
        pending_field: str,
        entries: Sequence[QueuedSettlement],
        generation_field: str = "",
    ) -> int:
        queued = self._streams.get(stream, {})
        acked = [entry for entry in entries if queued.pop(entry.entry_id, None) is not None]
        cost = sum(entry.cost for entry in acked)
        if not queued:
            self._streams.pop(stream, None)
        if cost:
            await self.adjust([Adjust(pending_key, pending_field, -cost)])
        if acked and generation_field:
            await self.adjust([Adjust(pending_key, generation_field, 1)])
        return cost

    async def settlement_streams(self) -> list[str]:
        return [stream for stream, entries in self._streams.items() if entries]

    async def queued_settlements(self, stream: str | None = None) -> int:
        if stream is not None:
            return len(self._streams.get(stream, {}))
        return sum(len(entries) for entries in self._streams.values())

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._holds.clear()

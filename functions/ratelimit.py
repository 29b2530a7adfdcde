"""The per-function rate limit: requests per calendar minute, shared by every gateway process.

envmanager's semantics (§4): the count is per function, across all callers, in fixed windows
that start on the minute (``12:00:00.000``–``12:00:59.999``); a refused request does not use a
slot. One window is one counter-store key, ``{prefix}fn:{function id}:rl:{minute}``, counted by
:meth:`~billing.counters.CounterStore.hit_window` (check and count in one atomic step: one Lua
call on Redis, one round trip) and expiring when its minute ends.

The minute is read from the gateway's wall clock (injectable, so tests can stand at the top of
a minute). Processes whose clocks differ by a few milliseconds may each open the next minute's
window a little early or late; that only moves a boundary, never lets a window count past its
limit.

When the counter store cannot answer (Redis down), :meth:`RateLimiter.hit` raises
:class:`~billing.counters.CounterStoreUnavailable`: the runtime then refuses the call with 503
(fail closed, as envmanager does), because a limit nobody can check is no limit. Functions with
no limit never touch the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from billing.counters import CounterStore

__all__ = ["RateDecision", "RateLimiter"]

WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class RateDecision:
    """What the ``X-RateLimit-*`` headers and a 429 say."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # unix seconds when the window ends
    retry_after_s: int  # whole seconds until then, at least 1


class RateLimiter:
    def __init__(self, counters: CounterStore, *, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._counters = counters
        self._prefix = prefix
        self._clock = clock  # wall time in seconds

    def key(self, function_id: str, window: int) -> str:
        return f"{self._prefix}fn:{function_id}:rl:{window}"

    async def hit(self, function_id: str, limit: int) -> RateDecision:
        """Count this request in its minute if the minute has room; raises
        ``CounterStoreUnavailable`` when the store cannot answer."""
        now_ms = int(self._clock() * 1000)
        window, into = divmod(now_ms, WINDOW_MS)
        left_ms = WINDOW_MS - into
        hit = await self._counters.hit_window(self.key(function_id, window), limit, left_ms)
        return RateDecision(
            allowed=hit.allowed,
            limit=limit,
            remaining=max(0, limit - hit.count),
            reset_s=(window + 1) * WINDOW_MS // 1000,
            retry_after_s=max(1, -(-left_ms // 1000)),
        )

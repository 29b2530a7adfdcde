"""The gateway's clocks in a test: let time pass without waiting for it.

Every gateway started by ``start_gateway`` reads its time from a :class:`SkippingClock`
(``gateway.clock``), installed as ``state.now`` and ``state.monotonic``. Until a test calls
:meth:`SkippingClock.advance` it is the real time, so nothing else changes. To wait out a
TTL (the key cache, the balance refresh, a ``bt-`` token's life, a webhook retry), skip it:

    gateway.clock.advance(gateway.settings.key_cache_ttl_s + 0.1)

Both clocks keep following real time as well: the gateway's own pollers, sleeps and deadlines
never stall on a clock that stands still. A check that something has *not* expired yet therefore
needs a TTL far longer than the test (a minute), never one of a second or two.

What this clock cannot move: key TTLs inside Redis, Redis stream idle times, another process,
an upstream's delay (for those, poll for the outcome with a generous deadline), and PyJWT, which
checks a session token's ``exp`` and ``iat`` against the real time: a test that must see a
session token expire signs in with the wall clock in the past (``set_now``), then advances it
to the present.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any


class SkippingClock:
    """Real time plus whatever the test has skipped: wall time and monotonic time move together."""

    def __init__(self) -> None:
        self.skipped_s = 0.0
        self._wall_offset_s = 0.0  # set_now's shift of the wall clock alone

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._wall_offset_s + self.skipped_s)

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped_s

    def advance(self, seconds: float) -> None:
        """Skip ``seconds`` of time (forward only: the monotonic clock must never go back)."""
        assert seconds >= 0, "time only moves forward"
        self.skipped_s += seconds

    def set_now(self, moment: datetime) -> None:
        """Put the wall clock at ``moment`` (in the past, or at the top of a minute), before the
        test's first request; the monotonic clock is left alone, it has no date."""
        self._wall_offset_s = (moment - datetime.now(UTC)).total_seconds() - self.skipped_s

    def install(self, app: Any) -> SkippingClock:
        """Make the running ``app`` (its lifespan has built ``app.state.gateway``) read this clock."""
        state = app.state.gateway
        state.now = self.now
        state.monotonic = self.monotonic
        return self

"""The expiry sweep: give back the reservations of processes that died.

Every reservation leaves a hold record (:mod:`billing.holds`) that expires after
``reservation_ttl_s``. A process that dies between reserving and settling never releases it;
the next balance refresh of the account (:mod:`billing.refresh`) sweeps the expired records
first, so no reservation holds credits forever. A stream that checkpointed is billed what it
had cost, in the same atomic step that releases its hold: of the sweep and a late settle only
the one that removes the hold bills it. Settling after the sweep still bills the request; it
just finds no hold to release.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec

from billing.counters import Adjust, CounterStore, Enqueue
from billing.holds import UNREADABLE, HoldRecord, decode_hold, release_of
from billing.layout import SPENT, CounterKeys
from billing.ledger import Settlement
from billing.mirror import BALANCE, GENERATION
from billing.writer import SettlementWriter

log = logging.getLogger("tollway.billing")


class ExpirySweep:
    """Releases an account's expired holds; one per process."""

    def __init__(
        self,
        store: CounterStore,
        keys: CounterKeys,
        writer: SettlementWriter,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._keys = keys
        self._writer = writer
        self._wall_clock = wall_clock

    async def sweep_expired(self, account_id: int) -> int:
        """Release the holds of reservations nobody settled in time (their process died); returns
        how many. Raises ``CounterStoreUnavailable``."""
        now_ms = int(self._wall_clock() * 1000)
        released = 0
        holds_key = self._keys.holds(account_id)
        for request_id, raw in (await self._store.holds(holds_key)).items():
            try:
                hold = decode_hold(raw)
            except msgspec.DecodeError:
                hold = UNREADABLE
            if hold.expires_ms > now_ms:
                continue
            back = release_of(self._keys.balance(account_id), hold)
            served = None if isinstance(hold.so_far, msgspec.UnsetType) else hold.so_far
            enqueue = None if served is None else self._bill(account_id, hold, served, back)
            if await self._store.release(holds_key, request_id, if_held=back, always=[], enqueue=enqueue):
                released += 1
                log.warning("released an expired reservation", extra={"request_id": request_id})
                if enqueue is not None:
                    await self._writer.buffered(account_id, request_id, enqueue.data)
        return released

    def _bill(self, account_id: int, hold: HoldRecord, served: Settlement, back: list[Adjust]) -> Enqueue:
        """A stream that checkpointed: bill what it had generated, in the same step that releases
        the hold (adds to ``back``), so only the winner of a race with a late settle bills it."""
        balance_key = self._keys.balance(account_id)
        back += [Adjust(balance_key, BALANCE, -served.cost_micro), Adjust(balance_key, GENERATION, 1)]
        if hold.spend_key:
            back.append(Adjust(hold.spend_key, SPENT, served.cost_micro))
        return self._writer.enqueue(served, only_if_held=True)

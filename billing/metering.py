"""The meter: one object per process that the gateway reserves, settles and reads credits through.

Each job lives in its own module; :class:`Meter` wires them and is what the gateway holds:

=============================  =================================================================
:mod:`billing.reservations`    the hot path: reserve (rate limits, spending limit, balance in one
                               atomic apply), settle, record, checkpoint; :class:`LimitKind`
:mod:`billing.holds`           the hold record written beside each reservation (a typed Struct)
:mod:`billing.writer`          write-behind: settlement streams drained into the database in
                               batches, poison entries parked, lost buffers replayed
:mod:`billing.records`         other domains' rows riding the same streams (a proxy function's
                               invocation), with the settlement of their cost
:mod:`billing.refresh`         the balance mirror reloaded from the database every ``refresh_s``
:mod:`billing.expiry`          holds of dead processes released (and checkpointed streams billed)
:mod:`billing.mirror`          the mirror's fields and the generation guard every refresh obeys
:mod:`billing.layout`          the counter-store keys of an account
=============================  =================================================================

The invariant they keep together: at every moment ``bal = database balance − pend`` (less
while a writer is between commit and ack), and ``held`` is the sum of open reservations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.counters import CounterStore
from billing.expiry import ExpirySweep
from billing.layout import CounterKeys
from billing.ledger import Settlement
from billing.mirror import BALANCE, GENERATION, HELD, PENDING
from billing.records import Entry, RecordKind
from billing.refresh import BalanceRefresher
from billing.reservations import KeyLimits, LimitKind, Reservation, Reservations
from billing.writer import SettlementWriter, writer_name

__all__ = [
    "BALANCE",
    "GENERATION",
    "HELD",
    "PENDING",
    "KeyLimits",
    "LimitKind",
    "Meter",
    "Reservation",
    "settlement_writer",
    "writer_name",
]


class Meter:
    """Reserves and settles credits for requests; one per process, shared by all requests.

    A thin facade: each method hands over to the part that does the job (``reservations``,
    ``writer``, ``refresher``, ``expiry``), which a test or a new caller may also use directly.
    """

    def __init__(
        self,
        store: CounterStore,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        prefix: str,
        refresh_s: float,
        reservation_ttl_s: float = 900.0,
        claim_idle_s: float = 30.0,
        consumer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        writer_engine: AsyncEngine | None = None,
    ) -> None:
        """``writer_engine``: what the write-behind writer writes its batches through (default:
        ``engine``); the gateway gives it one without a ping per checkout (gateway/db.py)."""
        self.keys = CounterKeys(prefix)
        self.writer = SettlementWriter(
            store,
            writer_engine or engine,
            sessionmaker,
            self.keys,
            claim_idle_s=claim_idle_s,
            consumer=consumer,
            clock=clock,
        )
        self.expiry = ExpirySweep(store, self.keys, self.writer, wall_clock=wall_clock)
        self.refresher = BalanceRefresher(
            store, sessionmaker, self.keys, self.expiry, self.writer, refresh_s=refresh_s, clock=clock
        )
        self.reservations = Reservations(
            store,
            sessionmaker,
            self.keys,
            self.refresher,
            self.writer,
            reservation_ttl_s=reservation_ttl_s,
            wall_clock=wall_clock,
        )

    # -- counter-store keys ---------------------------------------------------------------------

    def balance_key(self, account_id: int) -> str:
        return self.keys.balance(account_id)

    def holds_key(self, account_id: int) -> str:
        return self.keys.holds(account_id)

    def stream_key(self, account_id: int) -> str:
        return self.keys.stream(account_id)

    def spend_key(self, account_id: int, key_id: int, period: str, now: datetime) -> str:
        return self.keys.spend(account_id, key_id, period, now)

    # -- the hot path (billing.reservations) -----------------------------------------------------

    async def reserve(
        self,
        account_id: int,
        amount_micro: int,
        request_id: str,
        *,
        limits: KeyLimits | None = None,
        tokens: int = 0,
        now: datetime | None = None,
    ) -> Reservation:
        """See :meth:`billing.reservations.Reservations.reserve`."""
        return await self.reservations.reserve(
            account_id, amount_micro, request_id, limits=limits, tokens=tokens, now=now
        )

    async def settle(self, reservation: Reservation, settlement: Entry) -> None:
        """Bill the real cost once and release the hold; never raises for a served request.
        ``settlement`` may be a record that carries it (:mod:`billing.records`)."""
        await self.reservations.settle(reservation, settlement)

    async def record(self, settlement: Entry) -> None:
        """Record a request that held no credits (refused before reserving), or a record that
        cost nothing; never raises."""
        await self.reservations.record(settlement)

    async def checkpoint(self, reservation: Reservation, so_far: Settlement) -> None:
        """Remember what a stream has cost so far (billed if its process dies); never raises."""
        await self.reservations.checkpoint(reservation, so_far)

    async def key_spend_micro(self, account_id: int, key_id: int, period: str, now: datetime) -> int:
        """What the key has spent (and holds) in the current period."""
        return await self.reservations.key_spend_micro(account_id, key_id, period, now)

    # -- write-behind (billing.writer) ----------------------------------------------------------

    def register(self, kind: RecordKind) -> None:
        """Have the writer store records of ``kind`` (see :mod:`billing.records`)."""
        self.writer.register(kind)

    @property
    def consumer(self) -> str:
        """This process's writer name in the settlement streams."""
        return self.writer.consumer

    @consumer.setter
    def consumer(self, name: str) -> None:
        self.writer.consumer = name

    async def write_pending(self, *, accounts: list[int] | None = None, claim_stale: bool = False) -> int:
        """See :meth:`billing.writer.SettlementWriter.write_pending`."""
        return await self.writer.write_pending(accounts=accounts, claim_stale=claim_stale)

    async def discover_buffers(self) -> int:
        """See :meth:`billing.writer.SettlementWriter.discover_buffers`."""
        return await self.writer.discover_buffers()

    @property
    def has_buffered(self) -> bool:
        return self.writer.has_buffered

    async def wait_for_buffered(self, timeout_s: float) -> None:
        await self.writer.wait_for_buffered(timeout_s)

    async def settled(self, account_id: int, *, timeout_s: float = 1.0) -> bool:
        """Write what the account's stream holds now (read your writes); see
        :meth:`billing.writer.SettlementWriter.settled`."""
        return await self.writer.settled(account_id, timeout_s=timeout_s)

    # -- the mirror (billing.refresh, billing.expiry) --------------------------------------------

    async def refresh_balance(self, account_id: int, *, force: bool = False) -> None:
        """Reload the mirrored balance from the database; concurrent callers share one query."""
        await self.refresher.refresh_balance(account_id, force=force)

    async def available_micro(self, account_id: int) -> int:
        """Balance minus open reservations, as the next reservation would see it."""
        return await self.refresher.available_micro(account_id)

    async def sweep_expired(self, account_id: int) -> int:
        """Release the holds of reservations nobody settled in time; returns how many."""
        return await self.expiry.sweep_expired(account_id)


def settlement_writer(
    meter: Meter, *, poll_s: float = 1.0, batch_window_s: float = 0.02, scan_s: float = 30.0
) -> AbstractAsyncContextManager[None]:
    """The meter's write-behind writer running in the background for the app's lifetime (see
    :meth:`billing.writer.SettlementWriter.running`)."""
    return meter.writer.running(poll_s=poll_s, batch_window_s=batch_window_s, scan_s=scan_s)

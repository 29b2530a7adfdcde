"""Balance refresh: the mirror reloaded from the database, every ``refresh_s`` per account.

A reservation checks against the mirror (:mod:`billing.mirror`), never the database. Before
an account's first reservation and then every ``refresh_s`` the mirror is set to
``database balance − pend`` under the generation guard: ``gen`` and ``pend`` are read before
the balance, so a refresh that raced a settlement or a writer's acknowledgement is dropped (and
retried), and the mirror can lag low but never runs high. Each refresh sweeps the account's
expired holds first (:mod:`billing.expiry`). A mirror that is missing altogether means the
counter store lost its data: what this process buffered is rewritten first
(:meth:`billing.writer.SettlementWriter.replay_unwritten`). While the database is down the
mirror that is loaded keeps serving: it only ever falls between refreshes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.accounts import account_balance
from billing.counters import CounterStore, CounterStoreUnavailable
from billing.errors import DATABASE_ERRORS, BillingUnavailable
from billing.expiry import ExpirySweep
from billing.layout import CounterKeys
from billing.mirror import BALANCE, GENERATION, HELD, PENDING, REFRESHED, refresh_mark
from billing.writer import SettlementWriter

log = logging.getLogger("tollway.billing")


class BalanceRefresher:
    """Keeps this process's view of each account's mirror fresh; one per process."""

    def __init__(
        self,
        store: CounterStore,
        sessionmaker: async_sessionmaker[AsyncSession],
        keys: CounterKeys,
        expiry: ExpirySweep,
        writer: SettlementWriter,
        *,
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._sessionmaker = sessionmaker
        self._keys = keys
        self._expiry = expiry
        self._writer = writer
        self._refresh_s = refresh_s
        self._clock = clock
        self._refreshed_at: dict[int, float] = {}
        self._refreshing: dict[int, asyncio.Future[None]] = {}

    def due(self, account_id: int) -> bool:
        """Whether the account's mirror is older than ``refresh_s`` here (or never loaded)."""
        return self._clock() - self._refreshed_at.get(account_id, float("-inf")) > self._refresh_s

    async def refresh_balance(self, account_id: int, *, force: bool = False) -> None:
        """Reload the mirrored balance from the database; concurrent callers share one query."""
        pending = self._refreshing.get(account_id)
        if pending is not None and not force:
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refreshing[account_id] = future
        try:
            await self._refresh(account_id)
            future.set_result(None)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: the waiters re-raise it, not the loop
            raise
        finally:
            if self._refreshing.get(account_id) is future:
                del self._refreshing[account_id]

    async def _refresh(self, account_id: int) -> None:
        try:
            await self._expiry.sweep_expired(account_id)
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        key = self._keys.balance(account_id)
        # A settlement between our read of the generation and our write voids the write;
        # under steady traffic a few attempts always find a quiet moment.
        for _attempt in range(5):
            try:
                # One read of the generation and the pending sum, before the balance query: a
                # writer that commits and acknowledges in between makes the mirror low, not high.
                fields = await self._store.get_all(key)
                if BALANCE not in fields:
                    await self._writer.replay_unwritten()
                async with self._sessionmaker() as session:
                    balance = await account_balance(session, account_id)
                # The mark tells writers a refresh set bal (see billing.mirror).
                applied = await self._store.set_if(
                    key,
                    {BALANCE: balance - fields.get(PENDING, 0), REFRESHED: refresh_mark()},
                    GENERATION,
                    fields.get(GENERATION),
                )
            except CounterStoreUnavailable as error:
                raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
            except DATABASE_ERRORS as error:
                if BALANCE not in fields:
                    raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
                # The mirror only ever falls between refreshes (grants wait for the database to
                # come back), so spending against it stays within what the account has.
                log.warning("credits database unavailable: spending against the mirrored balance")
                self._refreshed_at[account_id] = self._clock()
                return
            if applied:
                self._refreshed_at[account_id] = self._clock()
                return

    async def available_micro(self, account_id: int) -> int:
        """Balance minus open reservations, as the next reservation would see it."""
        if self.due(account_id):
            await self.refresh_balance(account_id)
        fields = await self._store.get_all(self._keys.balance(account_id))
        return fields.get(BALANCE, 0) - fields.get(HELD, 0)

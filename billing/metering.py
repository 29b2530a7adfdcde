"""Reserve, then settle: the money path of every request.

The account balance is mirrored into the counter store (``bal``) next to the sum of open
reservations (``held``); a reservation is one atomic check ``held + amount <= bal`` across
every gateway process. Settling writes the debit to the database first, then releases the hold
and lowers the mirror. The mirror is refreshed from the database every few seconds (so grants
made elsewhere show up) through a generation guard: a refresh that raced a settlement is
dropped, so the mirror can lag low but never runs high.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.accounts import account_balance
from billing.counters import Adjust, Check, CounterStore, CounterStoreUnavailable, account_key
from billing.errors import BillingUnavailable, InsufficientCredits
from billing.ledger import Settlement, write_settlement
from billing.money import format_credits

log = logging.getLogger("tollway.billing")

BALANCE = "bal"
HELD = "held"
GENERATION = "gen"


class Reservation(msgspec.Struct, frozen=True):
    request_id: str
    account_id: int
    amount_micro: int


class Meter:
    """Reserves and settles credits for requests; one per process, shared by all requests."""

    def __init__(
        self,
        store: CounterStore,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        prefix: str,
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._sessionmaker = sessionmaker
        self._engine = engine
        self._prefix = prefix
        self._refresh_s = refresh_s
        self._clock = clock
        self._refreshed_at: dict[int, float] = {}
        self._refreshing: dict[int, asyncio.Future[None]] = {}

    def balance_key(self, account_id: int) -> str:
        return account_key(self._prefix, account_id, "balance")

    async def reserve(self, account_id: int, amount_micro: int, request_id: str) -> Reservation:
        """Hold ``amount_micro`` of the account's credits, or raise :class:`InsufficientCredits`."""
        if self._clock() - self._refreshed_at.get(account_id, float("-inf")) > self._refresh_s:
            await self.refresh_balance(account_id)
        key = self.balance_key(account_id)
        check = Check(key=key, field=HELD, delta=amount_micro, limit_field=BALANCE)
        try:
            result = await self._store.apply([check])
            if not result.ok and result.missing:
                # The mirror was lost (a Redis restart): load it and try once more.
                await self.refresh_balance(account_id, force=True)
                result = await self._store.apply([check])
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        if not result.ok:
            available = max(0, (result.cap or 0) - (result.value or 0))
            raise InsufficientCredits(
                f"insufficient credits: this request may cost up to {format_credits(amount_micro)} "
                f"credits and {format_credits(available)} are available"
            )
        return Reservation(request_id=request_id, account_id=account_id, amount_micro=amount_micro)

    async def settle(self, reservation: Reservation, settlement: Settlement) -> None:
        """Debit the real cost once and release the hold; never raises for a served request."""
        try:
            async with self._engine.begin() as connection:
                await write_settlement(connection, settlement)
        except SQLAlchemyError:
            # The durable usage buffer (billing issue) makes this path lossless; until then the
            # failure is loud so an operator can reconcile.
            log.exception("settlement write failed", extra={"request_id": settlement.request_id})
        try:
            await self._store.adjust(
                [
                    Adjust(self.balance_key(reservation.account_id), HELD, -reservation.amount_micro),
                    Adjust(self.balance_key(reservation.account_id), BALANCE, -settlement.cost_micro),
                    Adjust(self.balance_key(reservation.account_id), GENERATION, 1),
                ]
            )
        except CounterStoreUnavailable:
            log.exception("releasing a reservation failed", extra={"request_id": settlement.request_id})

    async def record(self, settlement: Settlement) -> None:
        """Record a request that held no credits (refused before reserving); never raises."""
        try:
            async with self._engine.begin() as connection:
                await write_settlement(connection, settlement)
        except SQLAlchemyError:
            log.exception("usage record write failed", extra={"request_id": settlement.request_id})

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
        key = self.balance_key(account_id)
        # A settlement between our read of the generation and our write voids the write;
        # under steady traffic a few attempts always find a quiet moment.
        for _attempt in range(5):
            try:
                generation = await self._store.get(key, GENERATION)
                async with self._sessionmaker() as session:
                    balance = await account_balance(session, account_id)
                applied = await self._store.set_if(key, {BALANCE: balance}, GENERATION, generation)
            except CounterStoreUnavailable as error:
                raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
            except SQLAlchemyError as error:
                raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
            if applied:
                self._refreshed_at[account_id] = self._clock()
                return

    async def available_micro(self, account_id: int) -> int:
        """Balance minus open reservations, as the next reservation would see it."""
        fields = await self._store.get_all(self.balance_key(account_id))
        return fields.get(BALANCE, 0) - fields.get(HELD, 0)

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
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.accounts import account_balance
from billing.counters import Adjust, ApplyResult, Check, CounterStore, CounterStoreUnavailable, Hold, account_key
from billing.errors import (
    DATABASE_ERRORS,
    BillingError,
    BillingUnavailable,
    InsufficientCredits,
    RateLimitExceeded,
    SpendingLimitExceeded,
)
from billing.ledger import Settlement, write_settlement
from billing.models import UsageRecord
from billing.money import format_credits
from billing.periods import period_end, period_id, period_start

log = logging.getLogger("tollway.billing")

BALANCE = "bal"
HELD = "held"
GENERATION = "gen"


class KeyLimits(msgspec.Struct, frozen=True):
    """A key's own limits for one request (a ``bt-`` token brings its parent's)."""

    key_id: int
    spending_limit_micro: int | None = None
    spending_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None


class Reservation(msgspec.Struct, frozen=True):
    request_id: str
    account_id: int
    amount_micro: int
    spend_key: str = ""
    spend_ttl_ms: int = 0
    tpm_key: str = ""
    tokens: int = 0
    record: str = ""  # the hold record as written (checkpoints extend it)


_WINDOW_MS = 120_000  # a minute window's counter outlives its minute, then Redis drops it
_PERIOD_GRACE = timedelta(days=2)


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
        reservation_ttl_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sessionmaker = sessionmaker
        self._engine = engine
        self._prefix = prefix
        self._refresh_s = refresh_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._reservation_ttl_s = reservation_ttl_s
        self._refreshed_at: dict[int, float] = {}
        self._refreshing: dict[int, asyncio.Future[None]] = {}

    def balance_key(self, account_id: int) -> str:
        return account_key(self._prefix, account_id, "balance")

    def holds_key(self, account_id: int) -> str:
        return account_key(self._prefix, account_id, "holds")

    def spend_key(self, account_id: int, key_id: int, period: str, now: datetime) -> str:
        return account_key(self._prefix, account_id, f"spend:{key_id}:{period_id(now, period)}")

    async def key_spend_micro(self, account_id: int, key_id: int, period: str, now: datetime) -> int:
        """What the key has spent (and holds) in the current period."""
        return await self._store.get(self.spend_key(account_id, key_id, period, now), "v") or 0

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
        """Steps 10–12 of the security chain in one atomic apply: the key's rate limits, its
        spending limit for the current period, then the account balance.

        Raises :class:`RateLimitExceeded`, :class:`SpendingLimitExceeded` or
        :class:`InsufficientCredits` naming the first limit that does not hold.
        """
        if self._clock() - self._refreshed_at.get(account_id, float("-inf")) > self._refresh_s:
            await self.refresh_balance(account_id)
        now = now or datetime.now(UTC)
        checks: list[Check] = []
        kinds: list[str] = []
        spend_key = tpm_key = ""
        if limits is not None:
            minute = int(now.timestamp()) // 60
            if limits.rpm_limit is not None:
                key = account_key(self._prefix, account_id, f"rpm:{limits.key_id}:{minute}")
                checks.append(Check(key, "n", 1, limit=limits.rpm_limit, ttl_ms=_WINDOW_MS))
                kinds.append("rpm")
            if limits.tpm_limit is not None:
                tpm_key = account_key(self._prefix, account_id, f"tpm:{limits.key_id}:{minute}")
                checks.append(Check(tpm_key, "n", tokens, limit=limits.tpm_limit, ttl_ms=_WINDOW_MS))
                kinds.append("tpm")
            spend_key = self.spend_key(account_id, limits.key_id, limits.spending_period, now)
            period_ttl = period_end(now, limits.spending_period) - now + _PERIOD_GRACE
            checks.append(
                Check(
                    spend_key,
                    "v",
                    amount_micro,
                    limit=limits.spending_limit_micro,
                    # Missing means a new period or lost counters: rebuilt from Postgres below.
                    must_exist=True,
                    ttl_ms=int(period_ttl.total_seconds() * 1000),
                )
            )
            kinds.append("spend")
        checks.append(Check(self.balance_key(account_id), HELD, amount_micro, limit_field=BALANCE))
        kinds.append("balance")
        # The hold's record outlives a crashed process: a later refresh finds it expired and
        # releases it (see sweep_expired), so no reservation holds credits forever.
        record = msgspec.json.encode(
            {
                "a": amount_micro,
                "e": int((self._wall_clock() + self._reservation_ttl_s) * 1000),
                "s": spend_key,
                "t": tpm_key,
                "k": tokens if tpm_key else 0,
            }
        ).decode()
        hold = Hold(self.holds_key(account_id), request_id, record)
        try:
            result = await self._store.apply(checks, hold)
            for _attempt in range(2):
                if result.ok or not result.missing:
                    break
                if kinds[result.failed] == "balance":
                    # The mirror was lost (a Redis restart): load it and try again.
                    await self.refresh_balance(account_id, force=True)
                elif kinds[result.failed] == "spend" and limits is not None:
                    await self._rebuild_spend(account_id, limits, spend_key, now, checks[result.failed].ttl_ms)
                result = await self._store.apply(checks, hold)
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        if not result.ok:
            raise _refusal(kinds[result.failed], result, amount_micro, now)
        return Reservation(
            request_id=request_id,
            account_id=account_id,
            amount_micro=amount_micro,
            spend_key=spend_key,
            spend_ttl_ms=next((c.ttl_ms for c, kind in zip(checks, kinds, strict=True) if kind == "spend"), 0),
            tpm_key=tpm_key,
            tokens=tokens,
            record=record,
        )

    async def settle(self, reservation: Reservation, settlement: Settlement) -> None:
        """Debit the real cost once and release the hold; never raises for a served request."""
        await self._write(settlement)
        balance_key = self.balance_key(reservation.account_id)
        always = [Adjust(balance_key, BALANCE, -settlement.cost_micro), Adjust(balance_key, GENERATION, 1)]
        if reservation.spend_key:
            always.append(Adjust(reservation.spend_key, "v", settlement.cost_micro, ttl_ms=reservation.spend_ttl_ms))
        if reservation.tpm_key:
            used = settlement.usage.input_tokens + settlement.usage.output_tokens
            always.append(Adjust(reservation.tpm_key, "n", used))
        try:
            await self._store.release(
                self.holds_key(reservation.account_id),
                reservation.request_id,
                if_held=_release_of(
                    balance_key,
                    reservation.amount_micro,
                    reservation.spend_key,
                    reservation.tpm_key,
                    reservation.tokens,
                ),
                always=always,
            )
        except CounterStoreUnavailable:
            log.exception("releasing a reservation failed", extra={"request_id": settlement.request_id})

    async def record(self, settlement: Settlement) -> None:
        """Record a request that held no credits (refused before reserving); never raises."""
        await self._write(settlement)

    async def _write(self, settlement: Settlement) -> None:
        """Into the database now, or, if it cannot answer, into the settlement queue, which the
        background writer drains into the database (idempotently) once it is back."""
        try:
            async with self._engine.begin() as connection:
                await write_settlement(connection, settlement)
            return
        except DATABASE_ERRORS:
            log.warning("database unavailable: settlement queued", extra={"request_id": settlement.request_id})
        try:
            await self._store.queue_settlement(msgspec.json.encode(settlement))
        except CounterStoreUnavailable:
            # Neither store can take it: the one case a served request goes unrecorded; reconcile
            # shows the account's counters ahead of its ledger.
            log.critical(
                "settlement lost: database and counters both unavailable", extra={"request_id": settlement.request_id}
            )

    async def write_queued(self, consumer: str, *, batch: int = 200, idle_ms: int = 30_000) -> int:
        """Move queued settlements into the database in one transaction; returns how many."""
        entries = await self._store.claim_settlements(consumer, batch, idle_ms)
        if not entries:
            return 0
        settlements = [msgspec.json.decode(data, type=Settlement) for _id, data in entries]
        try:
            async with self._engine.begin() as connection:
                for settlement in settlements:
                    await write_settlement(connection, settlement)  # idempotent on request_id
        except DATABASE_ERRORS:
            log.warning("database still unavailable: %d settlements wait", len(entries))
            return 0
        await self._store.ack_settlements([entry_id for entry_id, _data in entries])
        for account_id in {s.account_id for s in settlements}:
            self._refreshed_at.pop(account_id, None)  # re-read the balances they changed
        return len(entries)

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

    async def _rebuild_spend(
        self, account_id: int, limits: KeyLimits, spend_key: str, now: datetime, ttl_ms: int
    ) -> None:
        """A key's spend counter for this period, from its usage records (0 in a new period)."""
        since = period_start(now, limits.spending_period)
        try:
            async with self._sessionmaker() as session:
                spent = await session.scalar(
                    select(func.coalesce(func.sum(UsageRecord.credits_micro), 0)).where(
                        UsageRecord.key_id == limits.key_id, UsageRecord.created_at >= since
                    )
                )
        except DATABASE_ERRORS as error:
            raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
        if await self._store.set_if(spend_key, {"v": int(spent or 0)}, "v", None):
            await self._store.adjust([Adjust(spend_key, "v", 0, ttl_ms=ttl_ms)])

    async def checkpoint(self, reservation: Reservation, so_far: Settlement) -> None:
        """Remember what a stream has cost so far, so that if its process dies the expiry bills
        this instead of nothing; never raises."""
        record = msgspec.json.decode(reservation.record)
        record["p"] = msgspec.to_builtins(so_far)
        try:
            await self._store.update_hold(
                self.holds_key(reservation.account_id), reservation.request_id, msgspec.json.encode(record).decode()
            )
        except CounterStoreUnavailable:
            log.warning("could not checkpoint a stream", extra={"request_id": reservation.request_id})

    async def sweep_expired(self, account_id: int) -> int:
        """Release the holds of reservations nobody settled in time (their process died); returns
        how many. Settling later still bills the request; it just finds no hold to release."""
        now_ms = int(self._wall_clock() * 1000)
        released = 0
        holds_key = self.holds_key(account_id)
        for request_id, raw in (await self._store.holds(holds_key)).items():
            try:
                record = msgspec.json.decode(raw)
                expired = int(record["e"]) <= now_ms
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                expired, record = True, {"a": 0, "s": "", "t": "", "k": 0}
            if not expired:
                continue
            back = _release_of(
                self.balance_key(account_id),
                int(record.get("a", 0)),
                str(record.get("s", "")),
                str(record.get("t", "")),
                int(record.get("k", 0)),
            )
            if record.get("p"):
                # A stream that checkpointed: bill what it had generated. The database write is
                # idempotent on the request id, so write first, then let the release decide who
                # moves the counters (once).
                served = msgspec.convert(record["p"], Settlement)
                await self._write(served)
                back += [
                    Adjust(self.balance_key(account_id), BALANCE, -served.cost_micro),
                    Adjust(self.balance_key(account_id), GENERATION, 1),
                ]
                if record.get("s"):
                    back.append(Adjust(str(record["s"]), "v", served.cost_micro))
            if await self._store.release(holds_key, request_id, if_held=back, always=[]):
                released += 1
                log.warning("released an expired reservation", extra={"request_id": request_id})
        return released

    async def _refresh(self, account_id: int) -> None:
        try:
            await self.sweep_expired(account_id)
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        key = self.balance_key(account_id)
        try:
            queued = await self._store.queued_settlements()
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        if queued and await self._store.get(key, BALANCE) is not None:
            # Debits wait for the database: its balance is behind the mirror, which stays the truth.
            self._refreshed_at[account_id] = self._clock()
            return
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
            except DATABASE_ERRORS as error:
                raise BillingUnavailable("the credits database is unreachable; try again shortly") from error
            if applied:
                self._refreshed_at[account_id] = self._clock()
                return

    async def available_micro(self, account_id: int) -> int:
        """Balance minus open reservations, as the next reservation would see it."""
        if self._clock() - self._refreshed_at.get(account_id, float("-inf")) > self._refresh_s:
            await self.refresh_balance(account_id)
        fields = await self._store.get_all(self.balance_key(account_id))
        return fields.get(BALANCE, 0) - fields.get(HELD, 0)


def _release_of(balance_key: str, amount_micro: int, spend_key: str, tpm_key: str, tokens: int) -> list[Adjust]:
    """What taking a reservation added, to be taken back exactly once."""
    back = [Adjust(balance_key, HELD, -amount_micro)]
    if spend_key:
        back.append(Adjust(spend_key, "v", -amount_micro))
    if tpm_key:
        back.append(Adjust(tpm_key, "n", -tokens))
    return back


def _refusal(kind: str, result: ApplyResult, amount_micro: int, now: datetime) -> BillingError:
    if kind in ("rpm", "tpm"):
        unit = "requests" if kind == "rpm" else "tokens"
        return RateLimitExceeded(
            f"rate limit exceeded: this key allows {result.cap} {unit} per minute",
            retry_after_s=60 - now.second,
        )
    available = max(0, (result.cap or 0) - (result.value or 0))
    if kind == "spend":
        return SpendingLimitExceeded(
            f"spending limit reached: this request may cost up to {format_credits(amount_micro)} credits and "
            f"{format_credits(available)} remain in this key's limit for the period",
            available_micro=available,
        )
    return InsufficientCredits(
        f"insufficient credits: this request may cost up to {format_credits(amount_micro)} "
        f"credits and {format_credits(available)} are available",
        available_micro=available,
    )


@contextlib.asynccontextmanager
async def settlement_writer(meter: Meter, consumer: str, *, poll_s: float = 1.0) -> AsyncIterator[None]:
    """Drain the settlement queue into the database in the background for the app's lifetime."""

    async def loop() -> None:
        while True:
            try:
                written = await meter.write_queued(consumer)
            except Exception:  # the counters being down must not end the writer
                log.warning("settlement writer round failed; retrying", exc_info=True)
                written = 0
            await asyncio.sleep(0.05 if written else poll_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

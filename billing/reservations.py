"""Reserve, then settle: the money path of every request (the hot path).

:meth:`Reservations.reserve` is steps 10–12 of the security chain (:mod:`keys.chain`) in one
atomic apply on the counter store: each limit that applies to the request is a
:class:`LimitKind` with its :class:`~billing.counters.Check`, checked in this order, all or
nothing:

===========  ===============================================  ==============================
kind         counter (:mod:`billing.layout`)                   refused with
===========  ===============================================  ==============================
``RPM``      the key's requests this minute (+1)              :class:`RateLimitExceeded`
``TPM``      the key's tokens this minute (+worst case)       :class:`RateLimitExceeded`
``SPEND``    the key's spend this period (+worst case)        :class:`SpendingLimitExceeded`
``BALANCE``  the account's ``held`` against its mirrored      :class:`InsufficientCredits`
             ``bal`` (+worst case)
===========  ===============================================  ==============================

The same apply writes the hold record (:mod:`billing.holds`). :meth:`Reservations.settle`
gives back exactly what the reservation took, bills the real cost and buffers the settlement
for the database in one atomic step (:mod:`billing.writer`); the request never waits for the
database. A missing counter (a new spending period, or a counter store that lost its data) is
rebuilt from the database and the apply retried.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.counters import Adjust, ApplyResult, Check, CounterStore, CounterStoreUnavailable, Hold
from billing.errors import (
    DATABASE_ERRORS,
    BillingError,
    BillingUnavailable,
    InsufficientCredits,
    RateLimitExceeded,
    SpendingLimitExceeded,
)
from billing.holds import HoldRecord, encode_hold, release_of
from billing.layout import COUNT, SPENT, CounterKeys
from billing.ledger import Settlement
from billing.mirror import BALANCE, GENERATION, HELD
from billing.models import UsageRecord
from billing.money import format_credits
from billing.periods import period_end, period_start
from billing.ratelimits import REQUESTS, TOKENS, window_headers
from billing.records import Entry, Record
from billing.refresh import BalanceRefresher
from billing.writer import SettlementWriter

log = logging.getLogger("tollway.billing")

_WINDOW_MS = 120_000  # a minute window's counter outlives its minute, then Redis drops it
_PERIOD_GRACE = timedelta(days=2)


class LimitKind(enum.Enum):
    """A limit a reservation is checked against; the order of checks is the table above."""

    RPM = "rpm"
    TPM = "tpm"
    SPEND = "spend"
    BALANCE = "balance"


class KeyLimits(msgspec.Struct, frozen=True):
    """A key's own limits for one request (a ``bt-`` token brings its parent's)."""

    key_id: int
    spending_limit_micro: int | None = None
    spending_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None


class Reservation(msgspec.Struct, frozen=True):
    """What :meth:`Reservations.reserve` took, as its settle or checkpoint needs it."""

    request_id: str
    account_id: int
    hold: HoldRecord  # as written beside the reservation (checkpoints extend it)
    spend_ttl_ms: int = 0
    # The key's x-ratelimit-* headers after this reservation (empty without rpm/tpm limits).
    rate_headers: dict[str, str] = {}


#: One limit of a reservation: its kind and its check (a plain tuple: built four times a request).
_Limit = tuple[LimitKind, Check]


class _Plan(NamedTuple):
    limits: list[_Limit]  # in the order they are applied
    checks: list[Check]  # the same, as the counter store takes them
    spend: Check | None  # the key's spend counter, when it has limits
    tpm: Check | None  # the key's token window, when it has a token limit


class Reservations:
    """Reserves, settles and checkpoints requests' credits; one per process, shared by all requests."""

    def __init__(
        self,
        store: CounterStore,
        sessionmaker: async_sessionmaker[AsyncSession],
        keys: CounterKeys,
        refresher: BalanceRefresher,
        writer: SettlementWriter,
        *,
        reservation_ttl_s: float = 900.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sessionmaker = sessionmaker
        self._keys = keys
        self._refresher = refresher
        self._writer = writer
        self._reservation_ttl_s = reservation_ttl_s
        self._wall_clock = wall_clock

    async def key_spend_micro(self, account_id: int, key_id: int, period: str, now: datetime) -> int:
        """What the key has spent (and holds) in the current period."""
        return await self._store.get(self._keys.spend(account_id, key_id, period, now), SPENT) or 0

    def _plan(self, account_id: int, amount_micro: int, limits: KeyLimits | None, tokens: int, now: datetime) -> _Plan:
        """The checks of one reservation, in the order they are applied (the module's table)."""
        checked: list[_Limit] = []
        spend = tpm = None
        if limits is not None:
            minute = int(now.timestamp()) // 60
            if limits.rpm_limit is not None:
                key = self._keys.window(account_id, "rpm", limits.key_id, minute)
                checked.append((LimitKind.RPM, Check(key, COUNT, 1, limit=limits.rpm_limit, ttl_ms=_WINDOW_MS)))
            if limits.tpm_limit is not None:
                key = self._keys.window(account_id, "tpm", limits.key_id, minute)
                tpm = Check(key, COUNT, tokens, limit=limits.tpm_limit, ttl_ms=_WINDOW_MS)
                checked.append((LimitKind.TPM, tpm))
            spend_key = self._keys.spend(account_id, limits.key_id, limits.spending_period, now)
            period_ttl = period_end(now, limits.spending_period) - now + _PERIOD_GRACE
            spend = Check(
                spend_key,
                SPENT,
                amount_micro,
                limit=limits.spending_limit_micro,
                # Missing means a new period or lost counters: rebuilt from Postgres in reserve.
                must_exist=True,
                ttl_ms=int(period_ttl.total_seconds() * 1000),
            )
            checked.append((LimitKind.SPEND, spend))
        balance = Check(self._keys.balance(account_id), HELD, amount_micro, limit_field=BALANCE)
        checked.append((LimitKind.BALANCE, balance))
        return _Plan(checked, [check for _kind, check in checked], spend, tpm)

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
        """Check and take every limit of the request in one atomic apply (the module's table).

        Raises :class:`RateLimitExceeded`, :class:`SpendingLimitExceeded` or
        :class:`InsufficientCredits` naming the first limit that does not hold, and
        :class:`BillingUnavailable` when the counters cannot answer.
        """
        if self._refresher.due(account_id):
            await self._refresher.refresh_balance(account_id)
        now = now or datetime.now(UTC)
        checked, checks, spend, tpm = self._plan(account_id, amount_micro, limits, tokens, now)
        # The hold's record outlives a crashed process: a later refresh finds it expired and
        # releases it (see billing.expiry), so no reservation holds credits forever.
        hold = HoldRecord(
            amount_micro=amount_micro,
            expires_ms=int((self._wall_clock() + self._reservation_ttl_s) * 1000),
            spend_key=spend.key if spend else "",
            tpm_key=tpm.key if tpm else "",
            tokens=tokens if tpm else 0,
        )
        record = Hold(self._keys.holds(account_id), request_id, encode_hold(hold))
        try:
            result = await self._store.apply(checks, record)
            for _attempt in range(2):
                if result.ok or not result.missing:
                    break
                kind, failed = checked[result.failed]
                if kind is LimitKind.BALANCE:
                    # The mirror was lost (a Redis restart): load it and try again.
                    await self._refresher.refresh_balance(account_id, force=True)
                elif kind is LimitKind.SPEND and limits is not None:
                    await self._rebuild_spend(account_id, limits, failed.key, now, failed.ttl_ms)
                result = await self._store.apply(checks, record)
        except CounterStoreUnavailable as error:
            raise BillingUnavailable("the credit counters are unreachable; try again shortly") from error
        if not result.ok:
            raise _refusal(checked[result.failed][0], result, amount_micro, now)
        return Reservation(
            request_id, account_id, hold, spend.ttl_ms if spend else 0, _rate_headers(checked, result, now)
        )

    async def settle(self, reservation: Reservation, entry: Entry) -> None:
        """Bill the real cost once and release the hold; never raises for a served request.

        ``entry``: the settlement, or a record (:mod:`billing.records`) that carries it."""
        settlement = entry.settlement if isinstance(entry, Record) else entry
        assert settlement is not None, "a record settling a reservation carries its settlement"
        hold = reservation.hold
        balance_key = self._keys.balance(reservation.account_id)
        always = [Adjust(balance_key, BALANCE, -settlement.cost_micro), Adjust(balance_key, GENERATION, 1)]
        if hold.spend_key:
            always.append(Adjust(hold.spend_key, SPENT, settlement.cost_micro, ttl_ms=reservation.spend_ttl_ms))
        if hold.tpm_key:
            used = settlement.usage.input_tokens + settlement.usage.output_tokens
            always.append(Adjust(hold.tpm_key, COUNT, used))
        release = release_of(balance_key, hold)
        await self._writer.buffer(entry, self._keys.holds(reservation.account_id), if_held=release, always=always)

    async def record(self, entry: Entry) -> None:
        """Record a request that held no credits (refused before reserving), or a record that
        cost nothing; never raises."""
        await self._writer.buffer(entry, self._keys.holds(entry.account_id), if_held=[], always=[])

    async def checkpoint(self, reservation: Reservation, so_far: Settlement) -> None:
        """Remember what a stream has cost so far, so that if its process dies the expiry bills
        this instead of nothing; never raises."""
        record = encode_hold(msgspec.structs.replace(reservation.hold, so_far=so_far))
        try:
            await self._store.update_hold(self._keys.holds(reservation.account_id), reservation.request_id, record)
        except CounterStoreUnavailable:
            log.warning("could not checkpoint a stream", extra={"request_id": reservation.request_id})

    async def _rebuild_spend(
        self, account_id: int, limits: KeyLimits, spend_key: str, now: datetime, ttl_ms: int
    ) -> None:
        """A key's spend counter for this period, from its usage records (0 in a new period)."""
        if BALANCE not in await self._store.get_all(self._keys.balance(account_id)):
            # The counters lost their data, and with them what the streams held: rewrite what
            # this process buffered first (the refresh does), or the usage records miss it and
            # the rebuilt counter stays low.
            await self._refresher.refresh_balance(account_id, force=True)
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
        if await self._store.set_if(spend_key, {SPENT: int(spent or 0)}, SPENT, None):
            await self._store.adjust([Adjust(spend_key, SPENT, 0, ttl_ms=ttl_ms)])


def _rate_headers(checked: list[_Limit], result: ApplyResult, now: datetime) -> dict[str, str]:
    """The x-ratelimit-* headers of the key's rpm and tpm windows, from the apply's counts."""
    headers: dict[str, str] = {}
    for (kind, check), count in zip(checked, result.counts, strict=False):
        if kind in _UNITS and check.limit is not None:
            headers.update(window_headers(_UNITS[kind], check.limit, count, now))
    return headers


_UNITS = {LimitKind.RPM: REQUESTS, LimitKind.TPM: TOKENS}


def _refusal(kind: LimitKind, result: ApplyResult, amount_micro: int, now: datetime) -> BillingError:
    """The error naming the limit that did not hold, with what would still fit."""
    match kind:
        case LimitKind.RPM | LimitKind.TPM:
            unit = _UNITS[kind]
            refusal = RateLimitExceeded(
                f"rate limit exceeded: this key allows {result.cap} {unit} per minute",
                retry_after_s=60 - now.second,
            )
            # What is left of the window that refused (nothing was counted by the refusal).
            refusal.headers.update(window_headers(unit, result.cap or 0, result.value or 0, now))
            return refusal
        case LimitKind.SPEND:
            available = max(0, (result.cap or 0) - (result.value or 0))
            return SpendingLimitExceeded(
                f"spending limit reached: this request may cost up to {format_credits(amount_micro)} credits and "
                f"{format_credits(available)} remain in this key's limit for the period",
                available_micro=available,
            )
        case LimitKind.BALANCE:
            available = max(0, (result.cap or 0) - (result.value or 0))
            return InsufficientCredits(
                f"insufficient credits: this request may cost up to {format_credits(amount_micro)} "
                f"credits and {format_credits(available)} are available",
                available_micro=available,
            )

"""``tollway billing reconcile``: prove the ledger, balances, usage records and counters agree.

Checks, per account:

1. the balance equals the sum of its ledger (grants, debits, refunds) and its latest entry's
   ``balance_after``;
2. every debit has exactly one usage record with the same request id and cost, and every
   billed usage record has exactly one debit (no lost and no double debit);
3. every proxy-function invocation the log says was charged has its usage record at the same
   cost (and so, by check 2, its one debit);
4. with Redis: the mirrored balance plus what its stream still buffers for the database
   equals the database balance, no hold is negative, and each
   key's spend counter for its current period covers exactly what its usage records cost in
   that period (plus what the account holds in flight).

And: no settlement is parked (:mod:`billing.parking`). A parked settlement was served but
the database refused to record it; until an operator replays it the account is not debited,
so reconcile fails while one exists.

Holds in flight are reported, not counted as drift: a busy gateway always has some. Run it on
a quiet system (or twice) to tell a transient from a real drift.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.counters import CounterStore, account_key
from billing.mirror import BALANCE, HELD, PENDING
from billing.models import Account, LedgerEntry, LedgerKind, ParkedSettlement, UsageRecord
from billing.money import format_credits
from billing.periods import period_id, period_start
from functions.models import FunctionInvocation
from keys.models import ApiKey


@dataclass
class ReconcileReport:
    accounts: int = 0
    debits: int = 0
    drift: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift and not self.parked


async def _parked_checks(session: AsyncSession, report: ReconcileReport) -> None:
    for parked in await session.scalars(select(ParkedSettlement).order_by(ParkedSettlement.id)):
        reason = (parked.error.splitlines() or [""])[0][:300]
        report.parked.append(
            f"parked settlement {parked.id}: account {parked.account_id}, request {parked.request_id}, "
            f"{format_credits(parked.cost_micro)} credits not debited: {reason} "
            f"(fix the cause, then: tollway billing replay-parked {parked.id})"
        )


async def _ledger_checks(session: AsyncSession, account: Account, report: ReconcileReport) -> None:
    total = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_micro), 0)).where(LedgerEntry.account_id == account.id)
    )
    if int(total or 0) != account.balance_micro:
        report.drift.append(
            f"account {account.id}: balance {format_credits(account.balance_micro)} but its ledger sums to "
            f"{format_credits(int(total or 0))}"
        )
    latest = await session.scalar(
        select(LedgerEntry.balance_after_micro)
        .where(LedgerEntry.account_id == account.id)
        .order_by(LedgerEntry.id.desc())
        .limit(1)
    )
    if latest is not None and latest != account.balance_micro:
        report.drift.append(
            f"account {account.id}: latest ledger entry says {format_credits(latest)}, "
            f"balance is {format_credits(account.balance_micro)}"
        )


async def _debit_checks(session: AsyncSession, account: Account, report: ReconcileReport) -> None:
    debits = {
        request_id: (count, amount)
        for request_id, count, amount in (
            await session.execute(
                select(LedgerEntry.request_id, func.count(), func.sum(LedgerEntry.amount_micro))
                .where(LedgerEntry.account_id == account.id, LedgerEntry.kind == LedgerKind.DEBIT.value)
                .group_by(LedgerEntry.request_id)
            )
        )
    }
    report.debits += sum(count for count, _ in debits.values())
    billed = {
        request_id: cost
        for request_id, cost in (
            await session.execute(
                select(UsageRecord.request_id, UsageRecord.credits_micro).where(
                    UsageRecord.account_id == account.id, UsageRecord.credits_micro > 0
                )
            )
        )
    }
    for request_id, (count, amount) in debits.items():
        if count != 1:
            report.drift.append(f"account {account.id}: request {request_id} is debited {count} times")
        cost = billed.get(str(request_id))
        if cost is None:
            report.drift.append(f"account {account.id}: debit for {request_id} has no usage record")
        elif -int(amount) != cost:
            report.drift.append(
                f"account {account.id}: request {request_id} debited {format_credits(-int(amount))} "
                f"but its usage record says {format_credits(cost)}"
            )
    for request_id in billed.keys() - {str(r) for r in debits}:
        report.drift.append(f"account {account.id}: request {request_id} was served and billed but never debited")


async def _invocation_checks(session: AsyncSession, account: Account, report: ReconcileReport) -> None:
    """Only the mismatches come back: one indexed pass over the account's charged invocations."""
    rows = await session.execute(
        select(FunctionInvocation.request_id, FunctionInvocation.credits_micro, UsageRecord.credits_micro)
        .outerjoin(UsageRecord, UsageRecord.request_id == FunctionInvocation.request_id)
        .where(
            FunctionInvocation.account_id == account.id,
            FunctionInvocation.credits_micro > 0,
            (UsageRecord.credits_micro.is_(None)) | (UsageRecord.credits_micro != FunctionInvocation.credits_micro),
        )
    )
    for request_id, charged, billed in rows:
        said = "no usage record" if billed is None else f"a usage record of {format_credits(billed)}"
        report.drift.append(
            f"account {account.id}: invocation {request_id} was charged {format_credits(charged)} but has {said}"
        )


async def _counter_checks(
    session: AsyncSession,
    account: Account,
    counters: CounterStore,
    prefix: str,
    now: datetime,
    report: ReconcileReport,
) -> None:
    mirror = await counters.get_all(account_key(prefix, account.id, "balance"))
    held, pending = mirror.get(HELD, 0), mirror.get(PENDING, 0)
    if BALANCE in mirror and mirror[BALANCE] + pending != account.balance_micro:
        report.drift.append(
            f"account {account.id}: counter balance {format_credits(mirror[BALANCE])} "
            f"(+{format_credits(pending)} not yet written), database balance {format_credits(account.balance_micro)}"
        )
    if pending < 0:
        report.drift.append(f"account {account.id}: negative pending sum {format_credits(pending)}")
    if held < 0:
        report.drift.append(f"account {account.id}: negative hold {format_credits(held)}")
    elif held:
        report.notes.append(f"account {account.id}: {format_credits(held)} credits held by requests in flight")
    keys = await session.execute(select(ApiKey.id, ApiKey.spending_period).where(ApiKey.account_id == account.id))
    for key_id, period in keys:
        spent = await counters.get(account_key(prefix, account.id, f"spend:{key_id}:{period_id(now, period)}"), "v")
        if spent is None:
            continue  # no traffic this period (or the counters were lost and will be rebuilt)
        used = int(
            await session.scalar(
                select(func.coalesce(func.sum(UsageRecord.credits_micro), 0)).where(
                    UsageRecord.key_id == key_id, UsageRecord.created_at >= period_start(now, period)
                )
            )
            or 0
        )
        if not used <= spent <= used + max(held, 0):
            report.drift.append(
                f"key {key_id}: spend counter {format_credits(spent)} for this {period} period, "
                f"usage records say {format_credits(used)}"
            )


async def reconcile(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    counters: CounterStore | None,
    prefix: str,
    now: datetime,
    drain_wait_s: float = 5.0,
) -> ReconcileReport:
    report = ReconcileReport()
    if counters is not None:
        # The writers drain the buffers within a moment on a live system: give them that.
        queued = await counters.queued_settlements()
        for _ in range(int(drain_wait_s / 0.1)):
            if not queued:
                break
            await asyncio.sleep(0.1)
            queued = await counters.queued_settlements()
        if queued:
            # Their debits are in the counters but not yet in the database: comparing the two
            # now would show drift that the settlement writer is about to remove.
            report.notes.append(f"{queued} settlements wait for the database; run again once they are written")
            counters = None
    async with sessionmaker() as session:
        await _parked_checks(session, report)
        for account in (await session.scalars(select(Account).order_by(Account.id))).all():
            report.accounts += 1
            await _ledger_checks(session, account, report)
            await _debit_checks(session, account, report)
            await _invocation_checks(session, account, report)
            if counters is not None:
                await _counter_checks(session, account, counters, prefix, now, report)
    return report

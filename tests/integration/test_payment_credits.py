"""billing.payments.credits on both databases: a paid event grants its package once, however
often and however concurrently it arrives; reversals take back in proportion, never twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.accounts import create_account, move_credits
from billing.errors import AccountNotFound
from billing.models import Account, LedgerEntry, LedgerKind, Payment
from billing.payments.credits import record_purchase, record_reversal
from billing.payments.packages import CreditPackage
from billing.payments.provider import Paid, PurchaseNotFound, Reversed, UnknownPackage
from gateway.db import create_engine, create_sessionmaker
from tests.fakes.gateway_fixtures import Backend, migrate_backend

STARTER = CreditPackage(
    id="starter", name="Starter", credits="12000", price="9.00", provider_price_ids={"stripe": "price_starter"}
)
PRO = CreditPackage(id="pro", name="Pro", credits="30000", price="29.00", provider_price_ids={"stripe": "price_pro"})
PACKAGES = [STARTER, PRO]
CREDIT = 1_000_000


@pytest.fixture
async def sessions(backend: Backend) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await migrate_backend(backend.database_url)
    engine = create_engine(backend.database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def new_account(sessions: async_sessionmaker[AsyncSession], name: str = "acme", credits: int = 0) -> int:
    async with sessions() as session:
        account = await create_account(session, name, credits_micro=credits)
        return account.id


def paid(account_id: int, event_id: str = "evt_1", **overrides: Any) -> Paid:
    fields: dict[str, Any] = {
        "event_id": event_id,
        "reference": "pi_1",
        "account_id": account_id,
        "package_id": "starter",
        "price_id": "price_starter",
        "amount_minor": 900,
        "currency": "usd",
    }
    fields.update(overrides)
    return Paid(**fields)


async def purchase(sessions: async_sessionmaker[AsyncSession], notice: Paid) -> Any:
    async with sessions() as session:
        return await record_purchase(session, "stripe", notice, PACKAGES)


async def reverse(sessions: async_sessionmaker[AsyncSession], notice: Reversed) -> Any:
    async with sessions() as session:
        return await record_reversal(session, "stripe", notice)


async def books(sessions: async_sessionmaker[AsyncSession], account_id: int) -> tuple[int, int, int]:
    """Balance, the ledger's sum and the number of payments rows: the first two always agree."""
    async with sessions() as session:
        balance = await session.scalar(select(Account.balance_micro).where(Account.id == account_id))
        ledger = await session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_micro), 0)).where(LedgerEntry.account_id == account_id)
        )
        payments = await session.scalar(select(func.count()).select_from(Payment))
    assert balance == ledger
    return int(balance or 0), int(ledger or 0), int(payments or 0)


async def test_record_purchase_grants_the_package_once_with_its_receipt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(sessions)
    first = await purchase(sessions, paid(account))
    again = await purchase(sessions, paid(account))
    assert (first.duplicate, first.credits_micro) == (False, 12_000 * CREDIT)
    assert first.balance_after_micro == 12_000 * CREDIT
    assert (again.duplicate, again.credits_micro) == (True, 12_000 * CREDIT)
    assert await books(sessions, account) == (12_000 * CREDIT, 12_000 * CREDIT, 1)
    async with sessions() as session:
        row = (await session.scalars(select(Payment))).one()
        entry = await session.get(LedgerEntry, row.ledger_entry_id)
    assert (row.kind, row.package_id, row.amount_minor, row.currency, row.reference) == (
        "purchase",
        "starter",
        900,
        "USD",
        "pi_1",
    )
    assert entry is not None and (entry.kind, entry.amount_micro) == (LedgerKind.PURCHASE.value, 12_000 * CREDIT)


async def test_record_purchase_concurrent_deliveries_grant_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await new_account(sessions)
    outcomes = await asyncio.gather(*(purchase(sessions, paid(account)) for _ in range(5)))
    assert sorted(o.duplicate for o in outcomes) == [False, True, True, True, True]
    assert await books(sessions, account) == (12_000 * CREDIT, 12_000 * CREDIT, 1)


async def test_record_purchase_refuses_a_package_bought_at_another_price(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(sessions)
    with pytest.raises(UnknownPackage):
        await purchase(sessions, paid(account, package_id="pro", price_id="price_starter"))
    with pytest.raises(UnknownPackage):
        await purchase(sessions, paid(account, package_id="platinum"))
    with pytest.raises(AccountNotFound):
        await purchase(sessions, paid(account + 1000))
    assert await books(sessions, account) == (0, 0, 0)


async def test_record_reversal_takes_back_in_proportion_and_never_twice(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(sessions)
    await purchase(sessions, paid(account))
    # A third refunded, then the same running total again under a new event id, then the rest.
    third = await reverse(sessions, Reversed(event_id="evt_r1", reference="pi_1", refunded_total_minor=300))
    same_total = await reverse(sessions, Reversed(event_id="evt_r2", reference="pi_1", refunded_total_minor=300))
    replay = await reverse(sessions, Reversed(event_id="evt_r1", reference="pi_1", refunded_total_minor=300))
    rest = await reverse(sessions, Reversed(event_id="evt_r3", reference="pi_1", refunded_total_minor=900))
    assert third.credits_micro == -4_000 * CREDIT
    assert (same_total.credits_micro, same_total.duplicate) == (0, False)
    assert replay.duplicate
    assert rest.credits_micro == -8_000 * CREDIT
    balance, _, payments = await books(sessions, account)
    assert (balance, payments) == (0, 4)


async def test_record_reversal_of_spent_credits_reports_a_negative_balance(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(sessions)
    await purchase(sessions, paid(account))
    async with sessions() as session:  # most of it spent, as settlements would
        await move_credits(session, account, LedgerKind.DEBIT, -10_000 * CREDIT, "spent", "req_spent")
        await session.commit()
    chargeback = await reverse(
        sessions, Reversed(event_id="evt_dispute", reference="pi_1", refunded_total_minor=None, reason="chargeback")
    )
    assert (chargeback.credits_micro, chargeback.negative_balance) == (-12_000 * CREDIT, True)
    assert chargeback.balance_after_micro == -10_000 * CREDIT
    assert (await books(sessions, account))[0] == -10_000 * CREDIT


async def test_record_reversal_before_its_purchase_asks_for_a_retry(sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await new_account(sessions)
    with pytest.raises(PurchaseNotFound) as refused:
        await reverse(sessions, Reversed(event_id="evt_early", reference="pi_1", refunded_total_minor=900))
    assert refused.value.status_code == 409
    await purchase(sessions, paid(account))
    late = await reverse(sessions, Reversed(event_id="evt_early", reference="pi_1", refunded_total_minor=900))
    assert late.credits_micro == -12_000 * CREDIT
    assert await books(sessions, account) == (0, 0, 2)


async def test_record_reversal_stores_the_money_each_reversal_gave_back(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Providers report a running total; each reversal row holds its increment, so the refunds of
    one purchase add up to what was refunded (never the running totals summed)."""
    account = await new_account(sessions)
    await purchase(sessions, paid(account))
    for event_id, total in (("evt_r1", 300), ("evt_r2", 300), ("evt_r3", 700)):
        await reverse(sessions, Reversed(event_id=event_id, reference="pi_1", refunded_total_minor=total))
    chargeback = Reversed(event_id="evt_cb", reference="pi_1", refunded_total_minor=None, reason="chargeback")
    await reverse(sessions, chargeback)
    async with sessions() as session:
        amounts = list(
            await session.scalars(select(Payment.amount_minor).where(Payment.kind == "reversal").order_by(Payment.id))
        )
    assert amounts == [-300, 0, -400, -200]
    assert (await books(sessions, account))[0] == 0

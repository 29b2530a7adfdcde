"""Payments recorded as a webhook would record them (:mod:`billing.payments.credits`), at a
chosen time: the row and its ledger entry are moved to ``at`` after the real call, so reports
by month can be tested on dates that are not today without touching how payments are written."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.models import LedgerEntry, Payment
from billing.payments.credits import PaymentOutcome, record_purchase, record_reversal
from billing.payments.packages import CreditPackage
from billing.payments.provider import Paid, Reversed

STARTER = CreditPackage(
    id="starter", name="Starter", credits="12000", price="9.00", provider_price_ids={"stripe": "price_starter"}
)
PRO = CreditPackage(id="pro", name="Pro", credits="30000", price="29.00", provider_price_ids={"stripe": "price_pro"})
EURO = CreditPackage(id="euro", name="Euro", credits="10000", price="8.00", currency="EUR")
PACKAGES = [STARTER, PRO, EURO]


def paid(account_id: int, event_id: str, reference: str, package: CreditPackage) -> Paid:
    return Paid(
        event_id=event_id,
        reference=reference,
        account_id=account_id,
        package_id=package.id,
        price_id=package.provider_price_ids.get("stripe", ""),
        amount_minor=package.price_minor,
        currency=package.currency.lower(),
    )


async def _backdate(session: AsyncSession, event_id: str, at: datetime | None) -> None:
    if at is None:
        return
    payment = (await session.scalars(select(Payment).where(Payment.event_id == event_id))).one()
    await session.execute(update(Payment).where(Payment.id == payment.id).values(created_at=at))
    if payment.ledger_entry_id is not None:
        await session.execute(
            update(LedgerEntry).where(LedgerEntry.id == payment.ledger_entry_id).values(created_at=at)
        )
    await session.commit()


async def buy(sessions: async_sessionmaker[AsyncSession], notice: Paid, at: datetime | None = None) -> PaymentOutcome:
    async with sessions() as session:
        outcome = await record_purchase(session, "stripe", notice, PACKAGES)
        await _backdate(session, notice.event_id, at)
    return outcome


async def give_back(
    sessions: async_sessionmaker[AsyncSession], notice: Reversed, at: datetime | None = None
) -> PaymentOutcome:
    async with sessions() as session:
        outcome = await record_reversal(session, "stripe", notice)
        await _backdate(session, notice.event_id, at)
    return outcome

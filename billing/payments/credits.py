"""A verified payment notice becomes credits: exactly once, in one transaction with its ledger entry.

Once per event: ``payments`` has a unique ``(provider, event_id)``. The row, the balance change
and the ledger entry commit together, so two processes handling the same event concurrently
(a provider's retry racing its first delivery) both try, one commits, the other's insert fails
on the unique index and rolls its balance change back — it answers as a duplicate.

Reversals take back credits in proportion to the money refunded so far, minus what earlier
reversals of the same purchase took: partial refunds add up, a repeated running total takes
nothing more. The purchase row is locked while that is computed, so two different reversal
events of one purchase cannot both see "nothing taken yet". A reversal may leave the balance
negative (the credits were already spent); the outcome says so and it is logged.
"""

from __future__ import annotations

import logging

import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.accounts import move_credits
from billing.counters import CounterStore
from billing.grants import sync_after_change
from billing.models import LedgerKind, Payment, PaymentKind
from billing.payments.packages import CreditPackage, find_package
from billing.payments.provider import Paid, PurchaseNotFound, Reversed, UnknownPackage

__all__ = [
    "PaymentOutcome",
    "apply_paid",
    "apply_reversed",
    "record_purchase",
    "record_reversal",
    "refunded_money",
]

log = logging.getLogger("tollway.billing.payments")


class PaymentOutcome(msgspec.Struct, frozen=True):
    """What one notice did. ``duplicate``: the event was handled before, nothing moved now."""

    account_id: int
    credits_micro: int
    duplicate: bool
    balance_after_micro: int | None = None
    negative_balance: bool = False


async def record_purchase(
    session: AsyncSession, provider: str, notice: Paid, packages: list[CreditPackage]
) -> PaymentOutcome:
    """Grant the package a paid event names; commits. Raises :class:`UnknownPackage` when the
    package is not configured or was bought at a price that is not this package's."""
    existing = await _payment(session, provider, notice.event_id)
    if existing is not None:
        return _duplicate(existing)
    package = find_package(packages, notice.package_id)
    if package is None:
        raise UnknownPackage(f"paid event {notice.event_id} names no configured package {notice.package_id!r}")
    expected_price = package.provider_price_ids.get(provider)
    if expected_price and expected_price != notice.price_id:
        # The metadata names the package, the price says what was bought: they must agree, or a
        # buyer who edits a checkout's custom data would get a bigger package for a smaller price.
        raise UnknownPackage(f"paid event {notice.event_id} bought price {notice.price_id!r}, not {package.id!r}'s")
    credits = package.credits_micro
    entry = await move_credits(
        session, notice.account_id, LedgerKind.PURCHASE, credits, f"{package.name} ({provider})", None
    )
    session.add(
        Payment(
            account_id=notice.account_id,
            provider=provider,
            event_id=notice.event_id,
            kind=PaymentKind.PURCHASE.value,
            reference=notice.reference,
            package_id=package.id,
            credits_micro=credits,
            amount_minor=notice.amount_minor,
            currency=notice.currency.upper(),
            ledger_entry_id=entry.id,
        )
    )
    return await _commit_once(session, provider, notice.event_id, notice.account_id, credits, entry.balance_after_micro)


async def record_reversal(session: AsyncSession, provider: str, notice: Reversed) -> PaymentOutcome:
    """Take back the credits a refund or chargeback covers; commits. Raises
    :class:`PurchaseNotFound` when the purchase has not been recorded (yet)."""
    existing = await _payment(session, provider, notice.event_id)
    if existing is not None:
        return _duplicate(existing)
    purchase = await session.scalar(
        select(Payment)
        .where(
            Payment.provider == provider,
            Payment.reference == notice.reference,
            Payment.kind == PaymentKind.PURCHASE.value,
        )
        .order_by(Payment.id)
        .limit(1)
        .with_for_update()
    )
    if purchase is None:
        raise PurchaseNotFound(f"no purchase {notice.reference!r} at {provider} (yet): retry later")
    taken_row = (
        await session.execute(
            select(
                func.coalesce(func.sum(Payment.credits_micro), 0),
                func.coalesce(func.sum(Payment.amount_minor), 0),
            ).where(
                Payment.provider == provider,
                Payment.reference == notice.reference,
                Payment.kind == PaymentKind.REVERSAL.value,
            )
        )
    ).one()
    taken, refunded_before = int(taken_row[0]), -int(taken_row[1])  # earlier reversals are stored negative
    target = reversal_target(purchase.credits_micro, purchase.amount_minor, notice.refunded_total_minor)
    take = max(0, target + taken)
    money = refunded_money(purchase.amount_minor, notice.refunded_total_minor, refunded_before)
    balance_after: int | None = None
    entry_id: int | None = None
    if take:
        entry = await move_credits(
            session, purchase.account_id, LedgerKind.REVERSAL, -take, f"{notice.reason} ({provider})", None
        )
        balance_after, entry_id = entry.balance_after_micro, entry.id
    session.add(
        Payment(
            account_id=purchase.account_id,
            provider=provider,
            event_id=notice.event_id,
            kind=PaymentKind.REVERSAL.value,
            reference=notice.reference,
            package_id=purchase.package_id,
            credits_micro=-take,
            amount_minor=-money,
            currency=purchase.currency,
            ledger_entry_id=entry_id,
        )
    )
    outcome = await _commit_once(session, provider, notice.event_id, purchase.account_id, -take, balance_after)
    if outcome.negative_balance:
        log.warning(
            "a %s at %s left account %d's balance negative: the credits were already spent",
            notice.reason,
            provider,
            purchase.account_id,
        )
    return outcome


def reversal_target(credits_micro: int, paid_minor: int, refunded_total_minor: int | None) -> int:
    """Credits covered by the money refunded so far: all of them for a full (or unknown-amount)
    reversal or a free package, else in proportion, rounded down (never take back more than the
    refund paid for)."""
    if refunded_total_minor is None or paid_minor <= 0 or refunded_total_minor >= paid_minor:
        return credits_micro
    return credits_micro * max(0, refunded_total_minor) // paid_minor


def refunded_money(paid_minor: int, refunded_total_minor: int | None, refunded_before_minor: int) -> int:
    """The money this reversal gives back: the provider's running total (all of it when unknown),
    never more than was paid, less what earlier reversals of the purchase recorded. Stored as an
    increment, so the revenue report sums reversals without counting a running total twice."""
    total = paid_minor if refunded_total_minor is None else min(max(0, refunded_total_minor), paid_minor)
    return max(0, total - refunded_before_minor)


async def apply_paid(
    sessionmaker: async_sessionmaker[AsyncSession],
    counters: CounterStore | None,
    prefix: str,
    provider: str,
    notice: Paid,
    packages: list[CreditPackage],
) -> PaymentOutcome:
    """:func:`record_purchase`, then the counters' mirror follows at once (as for any grant)."""
    async with sessionmaker() as session:
        outcome = await record_purchase(session, provider, notice, packages)
    if counters is not None and not outcome.duplicate:
        await sync_after_change(sessionmaker, counters, prefix, outcome.account_id)
    return outcome


async def apply_reversed(
    sessionmaker: async_sessionmaker[AsyncSession],
    counters: CounterStore | None,
    prefix: str,
    provider: str,
    notice: Reversed,
) -> PaymentOutcome:
    async with sessionmaker() as session:
        outcome = await record_reversal(session, provider, notice)
    if counters is not None and not outcome.duplicate and outcome.credits_micro:
        await sync_after_change(sessionmaker, counters, prefix, outcome.account_id)
    return outcome


async def _payment(session: AsyncSession, provider: str, event_id: str) -> Payment | None:
    return await session.scalar(select(Payment).where(Payment.provider == provider, Payment.event_id == event_id))


def _duplicate(payment: Payment) -> PaymentOutcome:
    return PaymentOutcome(account_id=payment.account_id, credits_micro=payment.credits_micro, duplicate=True)


async def _commit_once(
    session: AsyncSession, provider: str, event_id: str, account_id: int, credits: int, balance_after: int | None
) -> PaymentOutcome:
    try:
        await session.commit()
    except IntegrityError:
        # The same event, handled by another process a moment earlier: its commit won.
        await session.rollback()
        existing = await _payment(session, provider, event_id)
        if existing is None:
            raise
        return _duplicate(existing)
    return PaymentOutcome(
        account_id=account_id,
        credits_micro=credits,
        duplicate=False,
        balance_after_micro=balance_after,
        negative_balance=balance_after is not None and balance_after < 0,
    )

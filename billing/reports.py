"""Read-side queries for an account's money: its ledger (with the receipts of its purchases) and
its usage, paged and grouped; and the operator's revenue by month and package.

Pages go newest first by id (``before_id`` = the last id of the previous page), which stays
stable while new rows arrive. Summaries group in the database; days are UTC calendar days.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Date, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import LedgerEntry, Payment, PaymentKind, UsageRecord

GroupBy = Literal["day", "model", "key", "end_user"]
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class UsageFilter:
    key_id: int | None = None
    model: str | None = None
    end_user_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self, account_id: int) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [UsageRecord.account_id == account_id]
        if self.key_id is not None:
            where.append(UsageRecord.key_id == self.key_id)
        if self.model:
            where.append(UsageRecord.model == self.model)
        if self.end_user_id:
            where.append(UsageRecord.end_user_id == self.end_user_id)
        if self.since is not None:
            where.append(UsageRecord.created_at >= self.since)
        if self.until is not None:
            where.append(UsageRecord.created_at < self.until)
        return where


async def ledger_page(
    session: AsyncSession, account_id: int, *, limit: int, before_id: int | None = None
) -> Sequence[LedgerEntry]:
    query = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_id is not None:
        query = query.where(LedgerEntry.id < before_id)
    return (await session.scalars(query.order_by(LedgerEntry.id.desc()).limit(min(limit, MAX_PAGE)))).all()


async def usage_page(
    session: AsyncSession, account_id: int, usage_filter: UsageFilter, *, limit: int, before_id: int | None = None
) -> Sequence[UsageRecord]:
    query = select(UsageRecord).where(*usage_filter.conditions(account_id))
    if before_id is not None:
        query = query.where(UsageRecord.id < before_id)
    return (await session.scalars(query.order_by(UsageRecord.id.desc()).limit(min(limit, MAX_PAGE)))).all()


def _utc_day(session: AsyncSession) -> Any:
    """The UTC calendar day of a usage record, as the database computes it."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", UsageRecord.created_at), Date)
    return func.date(UsageRecord.created_at)  # SQLite stores UTC text; date() keeps the day


async def usage_summary(
    session: AsyncSession, account_id: int, usage_filter: UsageFilter, group_by: GroupBy
) -> list[dict[str, Any]]:
    day = _utc_day(session)
    group: Any = {
        "day": day,
        "model": UsageRecord.model,
        "key": UsageRecord.key_id,
        "end_user": UsageRecord.end_user_id,
    }[group_by]
    rows = await session.execute(
        select(
            group.label("group"),
            func.count().label("requests"),
            func.coalesce(func.sum(UsageRecord.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(UsageRecord.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(UsageRecord.credits_micro), 0).label("credits_micro"),
        )
        .where(*usage_filter.conditions(account_id))
        .group_by(group)
        .order_by(group)
    )
    return [
        {
            "group": str(row.group) if row.group is not None else None,
            "requests": int(row.requests),
            "input_tokens": int(row.input_tokens),
            "output_tokens": int(row.output_tokens),
            "credits_micro": int(row.credits_micro),
        }
        for row in rows
    ]


SeriesBy = Literal["model", "key"]


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    day: date
    group: str  # the model slug, or the key id as text ("" when the request had no key)
    requests: int
    credits_micro: int


async def usage_series(
    session: AsyncSession, account_id: int, usage_filter: UsageFilter, by: SeriesBy
) -> list[SeriesPoint]:
    """Requests and credits per UTC day and model (or key): one grouped query, so a year of
    records is a few hundred rows per group whatever the number of requests."""
    day = _utc_day(session)
    group: Any = UsageRecord.model if by == "model" else UsageRecord.key_id
    rows = await session.execute(
        select(
            day.label("day"),
            group.label("group"),
            func.count().label("requests"),
            func.coalesce(func.sum(UsageRecord.credits_micro), 0).label("credits_micro"),
        )
        .where(*usage_filter.conditions(account_id))
        .group_by(day, group)
        .order_by(day)
    )
    return [
        SeriesPoint(
            day=row.day if isinstance(row.day, date) else date.fromisoformat(str(row.day)),
            group="" if row.group is None else str(row.group),
            requests=int(row.requests),
            credits_micro=int(row.credits_micro),
        )
        for row in rows
    ]


async def last_used_by_key(session: AsyncSession, account_id: int) -> dict[int, datetime]:
    """When each of the account's keys last made a metered request."""
    rows = await session.execute(
        select(UsageRecord.key_id, func.max(UsageRecord.created_at))
        .where(UsageRecord.account_id == account_id, UsageRecord.key_id.is_not(None))
        .group_by(UsageRecord.key_id)
    )
    found: dict[int, datetime] = {}
    for key_id, last in rows:
        if key_id is not None and last is not None:
            moment = last if isinstance(last, datetime) else datetime.fromisoformat(str(last))
            found[int(key_id)] = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return found


@dataclass(frozen=True, slots=True)
class RevenueRow:
    """One month, package and currency of the operator's takings. Money is in the currency's
    minor unit (cents); credits in micro-credits; refunds and reversed credits as positive
    amounts. ``net_minor`` = gross − refunded."""

    month: str  # "2026-11", the UTC calendar month
    package_id: str
    currency: str
    purchases: int
    gross_minor: int
    refunded_minor: int
    net_minor: int
    credits_sold_micro: int
    credits_reversed_micro: int


def _utc_month(session: AsyncSession) -> Any:
    """The UTC calendar month of a payment as ``YYYY-MM`` text, as the database computes it."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", Payment.created_at), "YYYY-MM")
    return func.strftime("%Y-%m", Payment.created_at)  # SQLite stores UTC text


_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")


def month_start(month: str) -> datetime:
    """``"2026-11"`` → 2026-11-01T00:00Z; raises ValueError for anything else."""
    if not _MONTH.fullmatch(month):  # ASCII digits only: int() would take "२०२६" too
        raise ValueError(f"a month is YYYY-MM, got {month!r}")
    year, number = int(month[:4]), int(month[5:])
    if not (1 <= year <= 9998 and 1 <= number <= 12):
        raise ValueError(f"no such month: {month!r}")
    return datetime(year, number, 1, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


async def revenue_report(
    session: AsyncSession, *, first: str | None = None, last: str | None = None
) -> list[RevenueRow]:
    """Revenue by UTC month, package and currency over every account, from ``first`` to ``last``
    (``YYYY-MM``, both included; open when ``None``). A refund or chargeback counts in the month
    it happened, not the month of its purchase (what the provider paid out that month). One
    grouped query; the sums are integers on both databases."""
    month = _utc_month(session)
    purchase = Payment.kind == PaymentKind.PURCHASE.value
    reversal = Payment.kind == PaymentKind.REVERSAL.value
    query = select(
        month.label("revenue_month"),
        Payment.package_id,
        Payment.currency,
        func.coalesce(func.sum(case((purchase, 1), else_=0)), 0).label("purchases"),
        func.coalesce(func.sum(case((purchase, Payment.amount_minor), else_=0)), 0).label("gross"),
        func.coalesce(func.sum(case((reversal, -Payment.amount_minor), else_=0)), 0).label("refunded"),
        func.coalesce(func.sum(case((purchase, Payment.credits_micro), else_=0)), 0).label("sold"),
        func.coalesce(func.sum(case((reversal, -Payment.credits_micro), else_=0)), 0).label("reversed"),
    )
    if first is not None:
        query = query.where(Payment.created_at >= month_start(first))
    if last is not None:
        query = query.where(Payment.created_at < _next_month(month_start(last)))
    # Grouped by the label: Postgres would not see two renderings of the month expression, each
    # with its own bound parameters, as one expression.
    groups: tuple[Any, ...] = (literal_column("revenue_month"), Payment.package_id, Payment.currency)
    rows = await session.execute(query.group_by(*groups).order_by(*groups))
    return [
        RevenueRow(
            month=str(row.revenue_month),
            package_id=row.package_id,
            currency=row.currency,
            purchases=int(row.purchases),
            gross_minor=int(row.gross),
            refunded_minor=int(row.refunded),
            net_minor=int(row.gross) - int(row.refunded),
            credits_sold_micro=int(row.sold),
            credits_reversed_micro=int(row.reversed),
        )
        for row in rows
    ]


async def receipts_for(session: AsyncSession, account_id: int, entry_ids: Sequence[int]) -> dict[int, Payment]:
    """The payments behind these ledger entries (purchases and reversals), by ledger entry id;
    only the account's own, so one account never reads another's receipts."""
    if not entry_ids:
        return {}
    rows = await session.scalars(
        select(Payment).where(Payment.account_id == account_id, Payment.ledger_entry_id.in_(list(entry_ids)))
    )
    return {int(payment.ledger_entry_id): payment for payment in rows if payment.ledger_entry_id is not None}


async def payments_page(session: AsyncSession, account_id: int, *, limit: int) -> Sequence[Payment]:
    """The account's purchases and reversals, newest first (the Billing page's receipts)."""
    query = select(Payment).where(Payment.account_id == account_id)
    return (await session.scalars(query.order_by(Payment.id.desc()).limit(min(limit, MAX_PAGE)))).all()

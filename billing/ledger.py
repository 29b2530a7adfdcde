"""Writing a settled request: usage record, debit and balance, once per request id.

The usage record's unique ``request_id`` is the idempotency guard: if it exists already the
request was settled before (a retry, a replayed buffer) and nothing is written again.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Account, LedgerEntry, LedgerKind, UsageRecord
from providers.base import Usage


class Settlement(msgspec.Struct, frozen=True):
    """Everything known about a finished request, enough to bill and to report it."""

    request_id: str
    account_id: int
    key_id: int | None
    model: str
    provider: str
    upstream_model: str
    usage: Usage
    cost_micro: int
    latency_ms: int
    status_code: int
    error_code: str = ""
    streamed: bool = False
    cancelled: bool = False
    end_user_id: str = ""


def _insert_usage(dialect: str):  # type: ignore[no-untyped-def]
    return postgresql.insert(UsageRecord) if dialect == "postgresql" else sqlite.insert(UsageRecord)


async def write_settlement(session: AsyncSession, settlement: Settlement) -> bool:
    """Write the usage record and, if it cost anything, the debit; commits.

    Returns ``False`` when this request id was settled before (nothing written).
    """
    dialect = session.get_bind().dialect.name
    usage = settlement.usage
    inserted = await session.scalar(
        _insert_usage(dialect)
        .values(
            request_id=settlement.request_id,
            account_id=settlement.account_id,
            key_id=settlement.key_id,
            model=settlement.model,
            provider=settlement.provider,
            upstream_model=settlement.upstream_model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_input_tokens,
            credits_micro=settlement.cost_micro,
            latency_ms=settlement.latency_ms,
            status_code=settlement.status_code,
            error_code=settlement.error_code,
            streamed=settlement.streamed,
            cancelled=settlement.cancelled,
            end_user_id=settlement.end_user_id,
        )
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(UsageRecord.id)
    )
    if inserted is None:
        await session.rollback()
        return False
    if settlement.cost_micro:
        balance_after = await session.scalar(
            update(Account)
            .where(Account.id == settlement.account_id)
            .values(balance_micro=Account.balance_micro - settlement.cost_micro)
            .returning(Account.balance_micro)
        )
        session.add(
            LedgerEntry(
                account_id=settlement.account_id,
                kind=LedgerKind.DEBIT.value,
                amount_micro=-settlement.cost_micro,
                balance_after_micro=int(balance_after or 0),
                request_id=settlement.request_id,
                reason=settlement.model,
            )
        )
    await session.commit()
    return True

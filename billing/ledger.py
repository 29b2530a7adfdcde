"""Writing a settled request: usage record, debit and balance, once per request id.

The usage record's unique ``request_id`` is the idempotency guard: if it exists already the
request was settled before (a retry, a replayed buffer) and nothing is written again.
"""

from __future__ import annotations

from typing import cast

import msgspec
from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.models import Account, LedgerEntry, LedgerKind, UsageRecord, WebhookEvent, utcnow
from billing.money import format_credits
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


_usage = cast(Table, UsageRecord.__table__)
_ledger = cast(Table, LedgerEntry.__table__)
_accounts = cast(Table, Account.__table__)

# Built once: execute() with parameters hits SQLAlchemy's compiled cache instead of building
# (and cache-keying) a statement per request.
_INSERT_USAGE = {
    "postgresql": postgresql.insert(_usage)
    .on_conflict_do_nothing(index_elements=["request_id"])
    .returning(_usage.c.id),
    "sqlite": sqlite.insert(_usage).on_conflict_do_nothing(index_elements=["request_id"]).returning(_usage.c.id),
}
_DEBIT_BALANCE = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("debit_account_id"))
    .values(balance_micro=_accounts.c.balance_micro - bindparam("debit_micro"))
    .returning(_accounts.c.balance_micro, _accounts.c.low_credit_threshold_micro, _accounts.c.email)
)
_INSERT_LEDGER = insert(_ledger)
_INSERT_EVENT = insert(cast(Table, WebhookEvent.__table__))


async def write_settlement(connection: AsyncConnection, settlement: Settlement) -> bool:
    """Write the usage record and, if it cost anything, the debit, in the caller's transaction.

    Returns ``False`` when this request id was settled before (nothing written).
    """
    usage = settlement.usage
    now = utcnow()
    inserted = await connection.scalar(
        _INSERT_USAGE[connection.dialect.name],
        {
            "request_id": settlement.request_id,
            "account_id": settlement.account_id,
            "key_id": settlement.key_id,
            "model": settlement.model,
            "provider": settlement.provider,
            "upstream_model": settlement.upstream_model,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_input_tokens,
            "credits_micro": settlement.cost_micro,
            "latency_ms": settlement.latency_ms,
            "status_code": settlement.status_code,
            "error_code": settlement.error_code,
            "streamed": settlement.streamed,
            "cancelled": settlement.cancelled,
            "end_user_id": settlement.end_user_id,
            "created_at": now,
        },
    )
    if inserted is None:
        return False
    if settlement.cost_micro:
        debited = (
            await connection.execute(
                _DEBIT_BALANCE, {"debit_account_id": settlement.account_id, "debit_micro": settlement.cost_micro}
            )
        ).first()
        balance_after = int(debited[0]) if debited is not None else 0
        if debited is not None and balance_after < debited[1] <= balance_after + settlement.cost_micro:
            # This debit crossed the account's threshold: the row lock on the account orders
            # debits, so exactly one debit per crossing sees it (PRODUCT.md: once per crossing).
            await connection.execute(
                _INSERT_EVENT,
                {
                    "account_id": settlement.account_id,
                    "key_id": None,
                    "event": "low_credits",
                    "payload": {
                        "event": "low_credits",
                        "user_email": debited[2],
                        "credits_balance": format_credits(balance_after),
                    },
                    "dedupe_key": None,
                    "fanned_out": False,
                    "created_at": now,
                },
            )
        await connection.execute(
            _INSERT_LEDGER,
            {
                "account_id": settlement.account_id,
                "kind": LedgerKind.DEBIT.value,
                "amount_micro": -settlement.cost_micro,
                "balance_after_micro": balance_after,
                "request_id": settlement.request_id,
                "reason": settlement.model,
                "created_at": now,
            },
        )
    return True

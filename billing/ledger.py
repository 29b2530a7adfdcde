"""Writing a settled request: usage record, debit and balance, once per request id.

The usage record's unique ``request_id`` is the idempotency guard: if it exists already the
request was settled before (a retry, a replayed buffer, a batch re-claimed from a writer that
died before acknowledging it) and nothing is written again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

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
    # Why this bill is not simply the upstream's word ("" when nothing was odd): "usage_over_hold"
    # (billed at the hold), "malformed_usage" (billed by the gateway's own count), "nul_in_text".
    anomaly: str = ""


_usage = cast(Table, UsageRecord.__table__)
_ledger = cast(Table, LedgerEntry.__table__)
_accounts = cast(Table, Account.__table__)

# Built once: execute() with parameters hits SQLAlchemy's compiled cache instead of building
# (and cache-keying) a statement per request.
_INSERT_USAGE = {
    "postgresql": postgresql.insert(_usage)
    .on_conflict_do_nothing(index_elements=["request_id"])
    .returning(_usage.c.request_id),
    "sqlite": sqlite.insert(_usage)
    .on_conflict_do_nothing(index_elements=["request_id"])
    .returning(_usage.c.request_id),
}
_DEBIT_BALANCE = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("debit_account_id"))
    .values(balance_micro=_accounts.c.balance_micro - bindparam("debit_micro"))
    .returning(_accounts.c.balance_micro, _accounts.c.low_credit_threshold_micro, _accounts.c.email)
)
_INSERT_LEDGER = insert(_ledger)
_INSERT_EVENT = insert(cast(Table, WebhookEvent.__table__))


async def write_settlements(connection: AsyncConnection, settlements: Sequence[Settlement]) -> int:
    """Write a batch of settled requests in the caller's transaction: their usage records and,
    for those that cost anything, one debit each; returns how many were new.

    A request id already in the database (a retry, a replayed or re-claimed batch) writes
    nothing again. Statements are per batch, not per request: one multi-row insert of usage
    records, one balance update per account, one insert of every ledger entry.
    """
    now = utcnow()
    unique: dict[str, Settlement] = {}
    for settlement in map(storable, settlements):
        unique.setdefault(settlement.request_id, settlement)  # a duplicate in the batch: the first wins
    if not unique:
        return 0
    inserted = {
        str(row[0])
        for row in await connection.execute(
            _INSERT_USAGE[connection.dialect.name],
            [_usage_row(settlement, now) for settlement in unique.values()],
        )
    }
    debits: dict[int, list[Settlement]] = {}
    for request_id, settlement in unique.items():
        if request_id in inserted and settlement.cost_micro:
            debits.setdefault(settlement.account_id, []).append(settlement)
    ledger_rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for account_id in sorted(debits):  # a fixed lock order: concurrent writers never deadlock
        batch = debits[account_id]
        total = sum(settlement.cost_micro for settlement in batch)
        row = (await connection.execute(_DEBIT_BALANCE, {"debit_account_id": account_id, "debit_micro": total})).first()
        if row is None:
            continue  # the account is gone; its usage records stay as the trace
        balance, threshold, email = int(row[0]) + total, row[1], row[2]
        for settlement in batch:
            balance -= settlement.cost_micro
            if balance < threshold <= balance + settlement.cost_micro:
                # This debit crossed the account's threshold. The row lock on the account orders
                # the batches, and within a batch the walk is in order, so exactly one debit per
                # crossing sees it (docs/product-rules.md: once per crossing).
                events.append(_low_credits_event(account_id, email, balance, now))
            ledger_rows.append(
                {
                    "account_id": account_id,
                    "kind": LedgerKind.DEBIT.value,
                    "amount_micro": -settlement.cost_micro,
                    "balance_after_micro": balance,
                    "request_id": settlement.request_id,
                    "reason": settlement.model,
                    "created_at": now,
                }
            )
    if ledger_rows:
        await connection.execute(_INSERT_LEDGER, ledger_rows)
    if events:
        await connection.execute(_INSERT_EVENT, events)
    return len(inserted)


_TEXT_FIELDS = ("request_id", "model", "provider", "upstream_model", "error_code", "end_user_id", "anomaly")


def storable(settlement: Settlement) -> Settlement:
    """The settlement as the database can store it.

    The last line of defence: Postgres refuses NUL in text, and one refused row used to stop a
    whole batch. The door validates what it takes; a NUL that slips past is stored replaced and
    the record flagged, rather than parked (any other data error is parked: billing.metering).
    """
    texts = {name: getattr(settlement, name) for name in _TEXT_FIELDS}
    if not any("\x00" in value for value in texts.values()):
        return settlement
    cleaned = {name: value.replace("\x00", "\ufffd") for name, value in texts.items()}
    cleaned["anomaly"] = ";".join(filter(None, [cleaned["anomaly"], "nul_in_text"]))
    return msgspec.structs.replace(settlement, **cleaned)


def _usage_row(settlement: Settlement, now: datetime) -> dict[str, Any]:
    usage = settlement.usage
    return {
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
        "anomaly": settlement.anomaly,
        "created_at": now,
    }


def _low_credits_event(account_id: int, email: str, balance_after: int, now: datetime) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "key_id": None,
        "event": "low_credits",
        "payload": {"event": "low_credits", "user_email": email, "credits_balance": format_credits(balance_after)},
        "dedupe_key": None,
        "fanned_out": False,
        "created_at": now,
    }

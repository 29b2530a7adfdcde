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

from billing._pgrows import ADAPTER_SUPPORTED, Driver, json_insert
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

# The columns a settlement writes, in the order of the value tuples below (both paths use them).
_USAGE_COLUMNS = (
    "request_id",
    "account_id",
    "key_id",
    "model",
    "provider",
    "upstream_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "credits_micro",
    "latency_ms",
    "status_code",
    "error_code",
    "streamed",
    "cancelled",
    "end_user_id",
    "anomaly",
    "created_at",
)
_LEDGER_COLUMNS = ("account_id", "kind", "amount_micro", "balance_after_micro", "request_id", "reason", "created_at")

# Built once: execute() with parameters hits SQLAlchemy's compiled cache instead of building
# (and cache-keying) a statement per request. SQLite's path (and Postgres on another driver).
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

# Postgres: one SQL text each whatever the batch, run on the asyncpg connection (billing._pgrows):
# asyncpg prepares each once per connection, and no statement is compiled or bound by SQLAlchemy.
_PG_INSERT_USAGE = json_insert(
    _usage,
    _USAGE_COLUMNS,
    suffix=f"ON CONFLICT ({_usage.c.request_id.name}) DO NOTHING RETURNING {_usage.c.request_id.name}",
)
_PG_INSERT_LEDGER = json_insert(_ledger, _LEDGER_COLUMNS)
# The same UPDATE as SQLite's, compiled once to asyncpg's $n style, with its parameters' order.
_pg_debit = _DEBIT_BALANCE.compile(dialect=postgresql.dialect(paramstyle="numeric_dollar"))  # type: ignore[no-untyped-call]
_PG_DEBIT_BALANCE = str(_pg_debit)
_PG_DEBIT_PARAMETERS = tuple(_pg_debit.positiontup or ())


async def write_settlements(connection: AsyncConnection, settlements: Sequence[Settlement]) -> int:
    """Write a batch of settled requests in the caller's transaction: their usage records and,
    for those that cost anything, one debit each; returns how many were new.

    A request id already in the database (a retry, a replayed or re-claimed batch) writes
    nothing again. Statements are per batch, not per request: one insert of every usage record,
    one balance update per account, one insert of every ledger entry. On Postgres (asyncpg)
    they are fixed statements on the driver's connection (:mod:`billing._pgrows`).
    """
    now = utcnow()
    unique: dict[str, Settlement] = {}
    for settlement in map(storable, settlements):
        unique.setdefault(settlement.request_id, settlement)  # a duplicate in the batch: the first wins
    if not unique:
        return 0
    driver = await Driver.of(connection) if _on_asyncpg(connection) else None
    inserted = await _insert_usage(
        connection, driver, [_usage_values(settlement, now) for settlement in unique.values()]
    )
    debits: dict[int, list[Settlement]] = {}
    for request_id, settlement in unique.items():
        if request_id in inserted and settlement.cost_micro:
            debits.setdefault(settlement.account_id, []).append(settlement)
    ledger_rows: list[tuple[Any, ...]] = []
    events: list[dict[str, Any]] = []
    for account_id in sorted(debits):  # a fixed lock order: concurrent writers never deadlock
        batch = debits[account_id]
        total = sum(settlement.cost_micro for settlement in batch)
        row = await _debit(connection, driver, account_id, total)
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
            # In _LEDGER_COLUMNS order.
            ledger_rows.append(
                (account_id, _DEBIT, -settlement.cost_micro, balance, settlement.request_id, settlement.model, now)
            )
    if ledger_rows:
        if driver is None:
            await connection.execute(
                _INSERT_LEDGER, [dict(zip(_LEDGER_COLUMNS, row, strict=True)) for row in ledger_rows]
            )
        else:
            await driver.insert(_PG_INSERT_LEDGER, ledger_rows)
    if events:
        await connection.execute(_INSERT_EVENT, events)
    return len(inserted)


_DEBIT = LedgerKind.DEBIT.value


def _on_asyncpg(connection: AsyncConnection) -> bool:
    dialect = connection.dialect
    return dialect.name == "postgresql" and dialect.driver == "asyncpg" and ADAPTER_SUPPORTED


async def _insert_usage(connection: AsyncConnection, driver: Driver | None, rows: list[tuple[Any, ...]]) -> set[str]:
    """Insert usage records (value tuples in ``_USAGE_COLUMNS`` order) but those whose request
    id exists; returns the request ids inserted."""
    if driver is not None:
        # The rows as one JSON parameter: the statement's text is the same for one row or five hundred.
        return {str(row[0]) for row in await driver.insert(_PG_INSERT_USAGE, rows)}
    values = [dict(zip(_USAGE_COLUMNS, row, strict=True)) for row in rows]
    return {str(row[0]) for row in await connection.execute(_INSERT_USAGE[connection.dialect.name], values)}


async def _debit(connection: AsyncConnection, driver: Driver | None, account_id: int, total: int) -> Any:
    """Take ``total`` off the account's balance; returns (balance after, low-credit threshold,
    email), or ``None`` for an account that is gone."""
    parameters = {"debit_account_id": account_id, "debit_micro": total}
    if driver is not None:
        return await driver.fetchrow(_PG_DEBIT_BALANCE, *(parameters[name] for name in _PG_DEBIT_PARAMETERS))
    return (await connection.execute(_DEBIT_BALANCE, parameters)).first()


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


def _usage_values(settlement: Settlement, now: datetime) -> tuple[Any, ...]:
    """A usage record's values in ``_USAGE_COLUMNS`` order."""
    usage = settlement.usage
    return (
        settlement.request_id,
        settlement.account_id,
        settlement.key_id,
        settlement.model,
        settlement.provider,
        settlement.upstream_model,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        settlement.cost_micro,
        settlement.latency_ms,
        settlement.status_code,
        settlement.error_code,
        settlement.streamed,
        settlement.cancelled,
        settlement.end_user_id,
        settlement.anomaly,
        now,
    )


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

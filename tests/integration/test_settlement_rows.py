"""``write_settlements`` on both backends: on Postgres its rows go through fixed statements on
the asyncpg connection, one JSON parameter each (billing/_pgrows.py), on SQLite through SQLAlchemy; the
same batch must leave the same books, and asyncpg's errors must read as SQLAlchemy's."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from billing._pgrows import ADAPTER_SUPPORTED, Driver
from billing.accounts import create_account
from billing.ledger import (
    _LEDGER_COLUMNS,
    _PG_INSERT_USAGE,
    _USAGE_COLUMNS,
    Settlement,
    _usage_values,
    write_settlements,
)
from billing.models import Account, LedgerEntry, UsageRecord, WebhookEvent, utcnow
from billing.parking import is_refusal
from gateway.db import create_engine, create_sessionmaker, migrate
from providers.base import Usage

# Just above the default low-credit threshold (100 credits): the first debit crosses it.
NEAR_THRESHOLD = 100_000_500


def settlement(account: int, request_id: str, cost: int, **changes: Any) -> Settlement:
    served = Settlement(
        request_id=request_id,
        account_id=account,
        key_id=7,
        model="fake/gpt",
        provider="fake",
        upstream_model="gpt",
        usage=Usage(input_tokens=10, output_tokens=3, cached_input_tokens=2),
        cost_micro=cost,
        latency_ms=5,
        status_code=200,
    )
    return msgspec.structs.replace(served, **changes)


async def _books(engine: AsyncEngine) -> dict[str, Any]:
    """Everything a batch wrote, keyed by account name (ids and times left out)."""
    async with create_sessionmaker(engine)() as session:
        names = {account.id: account.name for account in await session.scalars(select(Account))}
        balances = {account.name: account.balance_micro for account in await session.scalars(select(Account))}
        usage = [
            (
                record.request_id,
                names[record.account_id],
                record.key_id,
                record.model,
                record.input_tokens,
                record.output_tokens,
                record.cached_tokens,
                record.credits_micro,
                record.latency_ms,
                record.status_code,
                record.error_code,
                record.streamed,
                record.cancelled,
                record.end_user_id,
                record.anomaly,
                record.created_at is not None,
            )
            for record in await session.scalars(select(UsageRecord).order_by(UsageRecord.request_id))
        ]
        ledger = [
            (names[entry.account_id], entry.kind, entry.amount_micro, entry.balance_after_micro, entry.request_id)
            for entry in await session.scalars(select(LedgerEntry).order_by(LedgerEntry.id))
        ]
        events = [
            (names[event.account_id], event.event, event.payload)
            for event in await session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))
        ]
    return {"balances": balances, "usage": usage, "ledger": ledger, "events": events}


async def _write_the_batch(database_url: str) -> tuple[list[int], dict[str, Any]]:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            acme = (await create_account(session, "acme", credits_micro=10_000_000)).id
            beta = (await create_account(session, "beta", email="ops@beta.test", credits_micro=NEAR_THRESHOLD)).id
            gamma = (await create_account(session, "gamma", credits_micro=10_000_000)).id
        async with engine.begin() as connection:
            first = await write_settlements(connection, [settlement(acme, "req_before", 400)])
        batch = [
            settlement(acme, "req_a1", 1_000),
            settlement(acme, "req_a1", 9_999, model="second/copy"),  # a duplicate in the batch: the first wins
            settlement(acme, "req_before", 400),  # written by an earlier batch: nothing again
            settlement(beta, "req_b1", 700, key_id=None, end_user_id="user-9", streamed=True),  # crosses
            settlement(beta, "req_b2", 0, status_code=502, error_code="upstream_error", cancelled=True),
            settlement(beta, "req_b3", 200),  # below the threshold already: no second event
            settlement(gamma, "req_g1", 300, model="nul\x00model"),  # stored replaced, flagged
            settlement(acme, "req_a2", 2_000, anomaly="usage_over_hold"),
        ]
        async with engine.begin() as connection:
            second = await write_settlements(connection, batch)
        async with engine.begin() as connection:
            replayed = await write_settlements(connection, batch)  # a re-claimed batch
        return [first, second, replayed], await _books(engine)
    finally:
        await engine.dispose()


async def test_write_settlements_on_postgres_leaves_the_books_sqlite_leaves(sqlite_url: str, postgres_url: str) -> None:
    on_sqlite = await _write_the_batch(sqlite_url)
    on_postgres = await _write_the_batch(postgres_url)
    assert on_postgres == on_sqlite
    written, books = on_postgres
    assert written == [1, 6, 0]
    assert books["balances"] == {"acme": 10_000_000 - 3_400, "beta": NEAR_THRESHOLD - 900, "gamma": 10_000_000 - 300}
    debits = {
        (name, request_id, amount) for name, kind, amount, _after, request_id in books["ledger"] if kind == "debit"
    }
    assert debits == {
        ("acme", "req_before", -400),
        ("acme", "req_a1", -1_000),
        ("acme", "req_a2", -2_000),
        ("beta", "req_b1", -700),
        ("beta", "req_b3", -200),
        ("gamma", "req_g1", -300),
    }
    usage = {row[0]: row for row in books["usage"]}
    assert usage["req_a1"][3] == "fake/gpt" and usage["req_a1"][2] == 7
    assert usage["req_b1"][2] is None and usage["req_b1"][11] is True and usage["req_b1"][13] == "user-9"
    assert usage["req_b2"][7] == 0 and usage["req_b2"][10] == "upstream_error" and usage["req_b2"][12] is True
    assert usage["req_g1"][3] == "nul\ufffdmodel" and usage["req_g1"][14] == "nul_in_text"
    assert [(name, event) for name, event, _payload in books["events"]] == [("beta", "low_credits")]
    assert books["events"][0][2]["user_email"] == "ops@beta.test"


async def test_write_settlements_on_postgres_prepares_one_statement_whatever_the_batch_size(postgres_url: str) -> None:
    await migrate(postgres_url)
    engine = create_engine(postgres_url)
    try:
        async with create_sessionmaker(engine)() as session:
            account = (await create_account(session, "acme", credits_micro=10_000_000)).id
        async with engine.connect() as connection:
            for size in range(1, 12):
                await write_settlements(connection, [settlement(account, f"req_{size}_{n}", 10) for n in range(size)])
                await connection.commit()
            prepared = (
                await connection.execute(
                    text("SELECT statement FROM pg_prepared_statements WHERE statement ILIKE 'INSERT INTO%'")
                )
            ).all()
        statements = [str(row[0]) for row in prepared]
        # Eleven batch sizes, one statement each (the account's own grant went through SQLAlchemy).
        assert [s for s in statements if s.startswith("INSERT INTO usage_records")] == [_PG_INSERT_USAGE]
        assert (
            len([s for s in statements if s.startswith("INSERT INTO credit_ledger") and "jsonb_array_elements" in s])
            == 1
        )
        async with create_sessionmaker(engine)() as session:
            assert len(list(await session.scalars(select(UsageRecord)))) == sum(range(1, 12))
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("changes", "sqlstate_class"),
    [
        ({"end_user_id": "u" * 300}, "22"),  # too long for its column
        ({"provider": "nul\x00slipped"}, "22"),  # past storable: Postgres refuses NUL in text
        ({"latency_ms": 2**31}, "22"),  # out of an INTEGER column's range
        ({"key_id": 2**64}, "22"),  # out of a BIGINT's
        ({"account_id": 424242}, "23"),  # no such account
    ],
)
async def test_driver_raises_a_refused_row_as_sqlalchemys_refusal(
    postgres_url: str, changes: dict[str, Any], sqlstate_class: str
) -> None:
    await migrate(postgres_url)
    engine = create_engine(postgres_url)
    try:
        async with create_sessionmaker(engine)() as session:
            account = (await create_account(session, "acme", credits_micro=1_000)).id
        with pytest.raises(DBAPIError) as refused:
            async with engine.begin() as connection:
                driver = await Driver.of(connection)
                await driver.insert(
                    _PG_INSERT_USAGE, [_usage_values(settlement(account, "req_bad", 10, **changes), utcnow())]
                )
        assert is_refusal(refused.value)
        assert str(getattr(refused.value.orig, "sqlstate", "")).startswith(sqlstate_class)
        assert not refused.value.connection_invalidated
        async with engine.begin() as connection:  # the connection is fine for the next transaction
            assert await write_settlements(connection, [settlement(account, "req_ok", 10)]) == 1
    finally:
        await engine.dispose()


async def test_driver_raises_a_killed_connection_as_an_outage_and_the_next_transaction_reconnects(
    postgres_url: str,
) -> None:
    await migrate(postgres_url)
    engine = create_engine(postgres_url)
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with create_sessionmaker(engine)() as session:
            account = (await create_account(session, "acme", credits_micro=1_000)).id
        with pytest.raises(DBAPIError) as lost:
            async with engine.begin() as connection:
                assert await write_settlements(connection, [settlement(account, "req_1", 10)]) == 1
                raw = await connection.get_raw_connection()
                await admin.execute("SELECT pg_terminate_backend($1)", raw.driver_connection.get_server_pid())  # type: ignore[union-attr]
                await write_settlements(connection, [settlement(account, "req_2", 10)])
        assert not is_refusal(lost.value) and lost.value.connection_invalidated
        async with engine.begin() as connection:
            # The first transaction never committed: both are new.
            assert await write_settlements(connection, [settlement(account, f"req_{n}", 10) for n in (1, 2)]) == 2
    finally:
        await admin.close()
        await engine.dispose()


async def test_an_outage_while_handling_a_refusal_is_still_an_outage(postgres_url: str) -> None:
    """The writer retries the halves of a refused batch inside its ``except``: asyncpg's error
    must not carry the refusal along as its context, or the outage would read as one."""
    await migrate(postgres_url)
    engine = create_engine(postgres_url)
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with create_sessionmaker(engine)() as session:
            account = (await create_account(session, "acme", credits_micro=1_000)).id
        try:
            async with engine.begin() as connection:
                await write_settlements(connection, [settlement(account, "req_bad", 10, latency_ms=2**31)])
        except DBAPIError as refusal:
            assert is_refusal(refusal)
            with pytest.raises(DBAPIError) as lost:
                async with engine.begin() as connection:
                    raw = await connection.get_raw_connection()
                    pid = raw.driver_connection.get_server_pid()  # type: ignore[union-attr]
                    assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
                    await write_settlements(connection, [settlement(account, "req_ok", 10)])
            assert not is_refusal(lost.value)
        else:
            pytest.fail("the out-of-range row was taken")
    finally:
        await admin.close()
        await engine.dispose()


def test_the_fixed_statements_write_every_column_but_the_id() -> None:
    """A column added to the models but not to the raw statements would get no Python-side
    default on Postgres, and every row could be refused: the lists must cover the tables."""
    for table, columns in ((UsageRecord.__table__, _USAGE_COLUMNS), (LedgerEntry.__table__, _LEDGER_COLUMNS)):
        assert sorted(columns) == sorted(column.name for column in table.columns if column.name != "id")


def test_the_installed_sqlalchemy_has_what_the_driver_path_needs() -> None:
    """Else the writer quietly takes SQLAlchemy's slower path: a SQLAlchemy upgrade that changed
    its asyncpg adapter must show here, not only in a benchmark."""
    assert ADAPTER_SUPPORTED

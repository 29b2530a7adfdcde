"""Migrations run up, down and up again on SQLite and Postgres, and match the models."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.db import alembic_config, downgrade, migrate

TABLES = {"accounts", "users", "memberships", "api_keys", "credit_ledger", "usage_records", "audit_events"}


async def table_names(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_migrations_up_down_up_without_drift(database_url: str) -> None:
    asyncio.run(migrate(database_url))
    assert asyncio.run(table_names(database_url)) >= TABLES
    downgrade(database_url, "base")
    assert not TABLES & asyncio.run(table_names(database_url))
    asyncio.run(migrate(database_url))
    assert asyncio.run(table_names(database_url)) >= TABLES
    # `alembic check` raises if autogenerate would emit any operation: models == migrations.
    command.check(alembic_config(database_url))


def test_migrations_are_idempotent(database_url: str) -> None:
    asyncio.run(migrate(database_url))
    asyncio.run(migrate(database_url))
    assert asyncio.run(table_names(database_url)) >= TABLES

"""Alembic environment: async engines on SQLite (batch mode) and Postgres alike.

The URL comes from the Config built by :func:`gateway.db.alembic_config`, never from a file,
so ``tollway migrate`` works from an installed wheel.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import functions.models  # noqa: F401  (registers the tables on Base.metadata)
import keys.models  # noqa: F401
from billing.models import Base

target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "gateway.db.alembic_config sets sqlalchemy.url"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
    finally:
        await engine.dispose()


def run() -> None:
    existing = context.config.attributes.get("connection")
    if existing is not None:
        _configure(existing)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `tollway migrate`")
run()

"""Database engine, sessions and migrations.

Engines are built by the app's lifespan or the CLI, never at import time. Migrations run in a
worker thread because Alembic's command API is synchronous and our env.py drives an async
engine with its own event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.settings import sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_ID = 7_210_114_111_108
# The settlement writer's multi-row inserts were a new SQL text (and prepared statement, ~100 KiB)
# for every batch size; at SQLAlchemy's default of 100 per pooled connection they grew a soak's
# RSS by 35 MiB in 150 s (bench/RESULTS.md). On asyncpg they are fixed statements now
# (billing/_pgrows.py); any other multi-row insert still varies, and what repeats stays in this LRU.
PREPARED_STATEMENTS_PER_CONNECTION = 16


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while the server writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the database; it fsyncs at checkpoints instead of at
    # every commit, which is what makes one write per request affordable on the embedded default.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(database_url: str) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        path = sqlite_path(database_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(database_url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return _postgres_engine(database_url, pool_size=10, max_overflow=20, pre_ping=True)


def create_writer_engine(database_url: str) -> AsyncEngine | None:
    """An engine of its own for the write-behind settlement writer on Postgres (``None`` on
    SQLite: the writer shares the one engine).

    Without ``pool_pre_ping``: the request path's engine pings at every checkout, a round trip
    the writer paid once per round. A connection that died while idle instead fails the round
    that takes it (its settlements stay buffered, the connection is invalidated) and the next
    round connects afresh. One connection stays pooled (a round is one transaction at a time);
    the overflow serves the rare burst of direct writes while the counters are unreachable.
    """
    if database_url.startswith("sqlite"):
        return None
    return _postgres_engine(database_url, pool_size=1, max_overflow=4, pre_ping=False)


def _postgres_engine(database_url: str, *, pool_size: int, max_overflow: int, pre_ping: bool) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        connect_args={"prepared_statement_cache_size": PREPARED_STATEMENTS_PER_CONNECTION},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    # Alembic (and Mako under it) is imported here, not at the top: a server worker never
    # migrates, and a few MiB per worker is what the import costs.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    config.set_main_option(
        "file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s"
    )
    return config


def _upgrade_with_lock(database_url: str, revision: str) -> None:
    from alembic import command

    config = alembic_config(database_url)
    if database_url.startswith("postgresql"):
        # Replicas starting together must not migrate concurrently: serialise on an advisory lock.
        asyncio.run(_locked_upgrade(database_url, config, revision))
        return
    command.upgrade(config, revision)


async def _locked_upgrade(database_url: str, config: Config, revision: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            try:

                def upgrade(sync_connection: object) -> None:
                    from alembic import command

                    config.attributes["connection"] = sync_connection
                    command.upgrade(config, revision)

                await connection.run_sync(upgrade)
                await connection.commit()
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                await connection.commit()
    finally:
        await engine.dispose()


async def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (creating the SQLite file if needed)."""
    path = sqlite_path(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_upgrade_with_lock, database_url, revision)


def downgrade(database_url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)

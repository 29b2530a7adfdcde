"""Shared fixtures: the real Postgres and Redis on 127.0.0.1, and which backends to run.

Integration tests run once per backend (``sqlite`` = SQLite file + embedded counters,
``postgres`` = Postgres + Redis). ``TOLLWAY_TEST_BACKENDS=sqlite`` narrows a local run.
Under CI (``CI=true``) an unreachable Postgres or Redis fails the run instead of skipping.

Under pytest-xdist (``scripts/test`` runs ``-n 2``) every worker is its own process with its own
session fixtures: its own temporary directories, Postgres databases (random names), fake
servers (each binds its own port) and Redis database (``tests/fakes/services.py``).

Passwords hash at a low scrypt cost in this process (:data:`TEST_PASSWORD_LOG2_N`): hundreds of
tests sign in, and the production cost is ~0.2 s of CPU and 64 MiB per hash. Processes the tests
spawn (``tollway serve``) keep the production cost; tests/unit/test_identity.py checks it.
Every httpx client here shares one verifying SSL context (``tests/fakes/ssl_contexts.py``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from keys.passwords import set_test_work_factor
from tests.fakes.services import POSTGRES_ADMIN_URL, REDIS_URL, UNDER_CI
from tests.fakes.ssl_contexts import share_verifying_ssl_context

pytest_plugins = [
    "tests.fakes.gateway_fixtures",
    "tests.fakes.redis_cluster",
    "tests.fakes.cli_runs",
    "tests.fakes.exclusive",
]

T = TypeVar("T")

TEST_PASSWORD_LOG2_N = 10  # 1 MiB, about a millisecond
set_test_work_factor(TEST_PASSWORD_LOG2_N)
share_verifying_ssl_context()


def service_missing(what: str, error: BaseException) -> None:
    """Skip locally, fail loudly under CI: CI must never pass by skipping a backend."""
    message = f"{what} is not reachable: {error!r}"
    if UNDER_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` that also works when the caller is inside a running event loop
    (a session fixture first requested by an async test)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _redis_ping(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        run_in_thread(_redis_ping(REDIS_URL))
    except Exception as error:
        service_missing("Redis", error)
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to one test, so tests never see each other's counters."""
    return f"twtest:{secrets.token_hex(4)}:"


async def _create_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _asyncpg_url(admin_url: str, database: str) -> str:
    base = admin_url.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{database}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable Postgres (skips or fails when there is none)."""

    async def ping() -> None:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        await conn.close()

    try:
        run_in_thread(ping())
    except Exception as error:
        service_missing("Postgres", error)
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty Postgres database for one test (SQLAlchemy asyncpg URL), dropped after."""
    name = f"tollway_test_{secrets.token_hex(5)}"
    run_in_thread(_create_database(name))
    try:
        yield _asyncpg_url(postgres_server, name)
    finally:
        run_in_thread(_drop_database(name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file migrated to head once per session, copied where a test needs a migrated one."""
    from gateway.db import migrate

    path = tmp_path_factory.mktemp("sqlite-template") / "tollway.db"
    run_in_thread(migrate(f"sqlite+aiosqlite:///{path}"))
    # Alembic's engine does not set WAL; should that change, fold the log into the file we copy.
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return os.fspath(path)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite+aiosqlite:///{os.fspath(tmp_path)}/tollway.db"

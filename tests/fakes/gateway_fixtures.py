"""Fixtures: a real gateway on a real socket, per backend, in front of a fake OpenAI upstream."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from sqlalchemy import func, select

from billing.accounts import account_balance, create_account
from billing.counters import RedisCounterStore
from billing.models import LedgerEntry, UsageRecord
from billing.money import ceil_micro
from gateway.app import create_app
from gateway.db import create_engine, create_sessionmaker, migrate
from gateway.settings import ModelSettings, ProviderSettings, Settings
from keys.service import create_key
from tests.conftest import _asyncpg_url, _create_database, _drop_database, run_in_thread
from tests.fakes.asgi import serve_lifespan
from tests.fakes.clock import SkippingClock
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer
from tests.fakes.services import BACKENDS, POSTGRES_ADMIN_URL

FAKE_MODEL = "fake/gpt-4o-mini"
ADMIN_TOKEN = "operator-secret-for-tests-0123456789abcdef"
INPUT_PER_MTOK = Decimal("0.15")
OUTPUT_PER_MTOK = Decimal("0.60")
CACHED_PER_MTOK = Decimal("0.075")


def expected_cost_micro(prompt: int, completion: int, cached: int = 0, credits_per_usd: int = 1000) -> int:
    """The price of a usage block, computed independently of billing.pricing."""
    rate = Decimal(credits_per_usd)
    return ceil_micro(
        (prompt - cached) * INPUT_PER_MTOK * rate
        + cached * CACHED_PER_MTOK * rate
        + completion * OUTPUT_PER_MTOK * rate
    )


@dataclass
class Backend:
    name: str
    database_url: str
    redis_url: str
    redis_prefix: str


@dataclass
class _BackendHome:
    """Where every test's backend lives: the same SQLite path, Postgres database and Redis prefix
    for the whole session, reset before each test. Identical settings from test to test let
    ``start_gateway`` reuse the built app instead of paying ``create_app`` (about a second on
    this machine) for every test; each test still gets its own lifespan, data and keys."""

    token: str
    directory: Path


@pytest.fixture(scope="session")
def _backend_home(tmp_path_factory: pytest.TempPathFactory) -> _BackendHome:
    return _BackendHome(secrets.token_hex(4), tmp_path_factory.mktemp("backend"))


@pytest.fixture(scope="session")
def _postgres_backend_database(postgres_server: str, _backend_home: _BackendHome) -> Iterator[str]:
    """The backends' Postgres database, migrated once; tests empty it instead of dropping it
    (DROP DATABASE waits for a checkpoint: seconds on a busy machine, per test)."""
    name = f"tollway_gw_{_backend_home.token}"
    run_in_thread(_create_database(name))
    try:
        run_in_thread(migrate(_asyncpg_url(postgres_server, name)))
        yield name
    finally:
        run_in_thread(_drop_database(name))


async def _empty_postgres_database(name: str) -> None:
    """Every table but Alembic's emptied and every sequence restarted: a just-migrated database."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", timeout=5)
    try:
        # A connection the last test left behind could hold a lock TRUNCATE waits for.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS t FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(row['t'] for row in tables)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, _backend_home: _BackendHome) -> Iterator[Backend]:
    """A database already migrated to head and holding no rows, and a Redis prefix holding no keys."""
    prefix = f"twtest:{_backend_home.token}:gw:"
    if request.param == "sqlite":
        directory = _backend_home.directory / "sqlite"
        shutil.rmtree(directory, ignore_errors=True)  # the last test's database, WAL and key file
        directory.mkdir()
        shutil.copyfile(str(request.getfixturevalue("sqlite_template")), directory / "tollway.db")
        url = f"sqlite+aiosqlite:///{directory}/tollway.db"
        _AT_HEAD.add(url)
        try:
            yield Backend("sqlite", url, "", prefix)
        finally:
            _AT_HEAD.discard(url)
        return
    postgres_server = str(request.getfixturevalue("postgres_server"))
    redis_url = str(request.getfixturevalue("redis_url"))
    name = str(request.getfixturevalue("_postgres_backend_database"))
    run_in_thread(_empty_postgres_database(name))
    run_in_thread(_delete_redis_prefix(redis_url, prefix))  # in case an aborted test left keys
    url = _asyncpg_url(postgres_server, name)
    _AT_HEAD.add(url)
    try:
        yield Backend("postgres", url, redis_url, prefix)
    finally:
        _AT_HEAD.discard(url)
        run_in_thread(_delete_redis_prefix(redis_url, prefix))


# Backend databases nobody has touched since they were reset to head: the first gateway on one
# skips Alembic (loading every revision to find nothing to do costs a tenth of a second).
_AT_HEAD: set[str] = set()


async def migrate_backend(database_url: str) -> None:
    if database_url in _AT_HEAD:
        _AT_HEAD.discard(database_url)
        return
    await migrate(database_url)


async def _delete_redis_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class _CurrentFake:
    """One socket for every test's fake upstream: it serves whichever ``FakeOpenAI`` the running
    test made, so the upstream URL (part of the gateway's settings) stays the same all session."""

    def __init__(self) -> None:
        self.fake: FakeOpenAI | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        fake = self.fake
        if fake is None:  # a request from no test's gateway: nobody may answer it
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await fake(scope, receive, send)


@pytest.fixture(scope="session")
def _fake_openai_server() -> Iterator[tuple[_CurrentFake, ThreadedServer]]:
    current = _CurrentFake()
    server = ThreadedServer(current).start()
    try:
        yield current, server
    finally:
        server.stop()


@pytest.fixture
def fake_openai(_fake_openai_server: tuple[_CurrentFake, ThreadedServer]) -> Iterator[FakeOpenAI]:
    current, server = _fake_openai_server
    fake = FakeOpenAI()
    fake.url = server.url  # type: ignore[attr-defined]
    current.fake = fake
    try:
        yield fake
    finally:
        current.fake = None


def gateway_settings(backend: Backend, fake: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": backend.database_url,
        "redis_url": backend.redis_url,
        "redis_prefix": backend.redis_prefix,
        "bootstrap": False,
        "balance_refresh_s": 0.3,
        "admin_token": ADMIN_TOKEN,
        "providers": {
            "fake": ProviderSettings(
                kind="openai",
                base_url=fake.url + "/v1",  # type: ignore[attr-defined]
                api_key=fake.api_key,
                read_timeout_s=5.0,
            )
        },
        "models": {
            FAKE_MODEL: ModelSettings(
                provider="fake",
                upstream_model="gpt-4o-mini",
                input_per_mtok=Decimal(INPUT_PER_MTOK),
                output_per_mtok=Decimal(OUTPUT_PER_MTOK),
                cached_input_per_mtok=Decimal(CACHED_PER_MTOK),
                max_output_tokens=16384,
            )
        },
    }
    # Proxy functions: a fixed key ring (both backends read the same one) and the fake
    # third-party APIs on loopback allowed past the SSRF guard.
    values["function_secret_keys"] = {"test": TEST_SECRET_KEY}
    values["function_allow_hosts"] = ["127.0.0.1/32", "::1/128"]
    values.update(overrides)
    return Settings(**values)


TEST_SECRET_KEY = "dGVzdC1rZXktcmluZy1mb3ItdG9sbHdheS10ZXN0cyE="  # 32 bytes, tests only


@dataclass
class Gateway:
    url: str
    key: str
    account_id: int
    settings: Settings
    fake: FakeOpenAI
    # The gateway's clocks: advance it to let a TTL pass instead of sleeping (tests/fakes/clock.py).
    clock: SkippingClock = field(default_factory=SkippingClock)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def settled(self, timeout_s: float = 10.0) -> None:
        """Wait until the settlement writers have put every finished request in the database
        (with Redis they write behind the response; the embedded store writes before it)."""
        if self.settings.redis_url:
            self.run(wait_for_writers(self.settings.redis_url, self.settings.redis_prefix, timeout_s))

    def balance_micro(self) -> int:
        self.settled()
        return int(self.run(_with_session(self.settings, lambda s: account_balance(s, self.account_id))))

    def usage_records(self) -> list[UsageRecord]:
        self.settled()

        async def load(session: Any) -> list[UsageRecord]:
            return list(await session.scalars(select(UsageRecord).order_by(UsageRecord.id)))

        return list(self.run(_with_session(self.settings, load)))

    def awaited_usage_records(self, timeout_s: float = 20.0) -> list[UsageRecord]:
        """The usage records once there is at least one: a stream the client dropped is settled
        after the client has gone, so a test waits for its record (generous: CI shares two cores)."""
        deadline = time.monotonic() + timeout_s
        while not (records := self.usage_records()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return records

    def debit_counts(self) -> dict[str, int]:
        """How many debits each request id has, for every debited request."""
        self.settled()
        return dict(self.run(_with_session(self.settings, debits_per_request)))

    def debit_count(self, request_id: str) -> int:
        return self.debit_counts().get(request_id, 0)


async def debits_per_request(session: Any) -> dict[str, int]:
    """How many debits the ledger holds for each request id (every one should have one)."""
    rows = await session.execute(
        select(LedgerEntry.request_id, func.count()).where(LedgerEntry.kind == "debit").group_by(LedgerEntry.request_id)
    )
    return {str(request_id): int(count) for request_id, count in rows}


async def buffered_settlements(redis_url: str, prefix: str) -> int:
    """How many settlements wait in Redis for the database writers."""
    store = RedisCounterStore.from_url(redis_url, prefix=prefix)
    try:
        return await store.queued_settlements()
    finally:
        await store.close()


async def wait_for_writers(redis_url: str, prefix: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while queued := await buffered_settlements(redis_url, prefix):
        assert time.monotonic() < deadline, f"{queued} settlements never reached the database"
        await asyncio.sleep(0.02)


async def _with_session(settings: Settings, work: Any) -> Any:
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


async def _prepare(settings: Settings, credits_micro: int) -> tuple[int, str]:
    await migrate_backend(settings.database_url)

    async def work(session: Any) -> tuple[int, str]:
        account = await create_account(session, "acme", email="ops@acme.test", credits_micro=credits_micro)
        _key, plaintext = await create_key(session, account.id, "test key")
        return account.id, plaintext

    result: tuple[int, str] = await _with_session(settings, work)
    return result


def start_gateway(
    settings: Settings, fake: FakeOpenAI, credits_micro: int = 500_000_000
) -> tuple[Gateway, ThreadedServer]:
    account_id, key = asyncio.run(_prepare(settings, credits_micro))
    server = ThreadedServer(_app_for(settings)).start()
    _SERVED[id(server.app)] = server
    clock = SkippingClock().install(server.app)
    return Gateway(server.url, key, account_id, settings, fake, clock), server


# Built apps by their settings, most recently used last. An app holds nothing between runs that
# its lifespan does not rebuild (app.state.gateway: engine, counters, caches, clocks), so a test
# starting a gateway with settings an earlier test used gets the same app with a fresh state.
_APPS: OrderedDict[bytes, Litestar] = OrderedDict()
_SERVED: dict[int, ThreadedServer] = {}  # id(app) -> its last server, to never run an app twice at once
_APPS_KEPT = 4


def _app_for(settings: Settings) -> Litestar:
    key = msgspec.json.encode(settings)
    app = _APPS.pop(key, None)
    last = _SERVED.get(id(app)) if app is not None else None
    if app is None or (last is not None and last.thread.is_alive()):
        app = create_app(settings, env={})
    _APPS[key] = app
    while len(_APPS) > _APPS_KEPT:
        _SERVED.pop(id(_APPS.popitem(last=False)[1]), None)
    return app


@pytest.fixture
def gateway(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    settings = gateway_settings(backend, fake_openai)
    gw, server = start_gateway(settings, fake_openai)
    try:
        yield gw
    finally:
        server.stop()

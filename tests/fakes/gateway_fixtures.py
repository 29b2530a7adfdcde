"""Fixtures: a real gateway on a real socket, per backend, in front of a fake OpenAI upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from billing.accounts import account_balance, create_account
from billing.counters import RedisCounterStore
from billing.models import LedgerEntry, UsageRecord
from billing.money import ceil_micro
from gateway.app import create_app
from gateway.db import create_engine, create_sessionmaker, migrate
from gateway.settings import ModelSettings, ProviderSettings, Settings
from keys.service import create_key
from tests.fakes.clock import SkippingClock
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer
from tests.fakes.services import BACKENDS

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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any, redis_prefix: str) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/tollway.db", "", redis_prefix)
        return
    postgres_url = request.getfixturevalue("postgres_url")
    redis_url = request.getfixturevalue("redis_url")
    yield Backend("postgres", postgres_url, redis_url, redis_prefix)
    asyncio.run(_delete_redis_prefix(redis_url, redis_prefix))


async def _delete_redis_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    server = ThreadedServer(fake).start()
    fake.url = server.url  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        server.stop()


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
    await migrate(settings.database_url)

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
    server = ThreadedServer(create_app(settings, env={})).start()
    clock = SkippingClock().install(server.app)
    return Gateway(server.url, key, account_id, settings, fake, clock), server


@pytest.fixture
def gateway(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    settings = gateway_settings(backend, fake_openai)
    gw, server = start_gateway(settings, fake_openai)
    try:
        yield gw
    finally:
        server.stop()

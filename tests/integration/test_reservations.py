"""Each limit kind of a reservation refuses with its own error and gives back exactly what it
took (the embedded store on SQLite: the reservation logic, not the backend, is under test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from billing.accounts import create_account
from billing.counters import EmbeddedCounterStore
from billing.errors import InsufficientCredits, RateLimitExceeded, SpendingLimitExceeded
from billing.ledger import Settlement
from billing.metering import KeyLimits, Meter
from gateway.db import create_engine, create_sessionmaker, migrate
from providers.base import Usage

NOW = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
async def meter(sqlite_url: str) -> AsyncIterator[tuple[Meter, int]]:
    await migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        account = await create_account(session, "acme", email="ops@acme.test", credits_micro=10_000)
    yield Meter(EmbeddedCounterStore(), engine, sessionmaker, prefix="t:", refresh_s=60.0), account.id
    await engine.dispose()


def served(account_id: int, request_id: str, cost: int, tokens: int) -> Settlement:
    return Settlement(
        request_id=request_id,
        account_id=account_id,
        key_id=5,
        model="fake/gpt",
        provider="fake",
        upstream_model="gpt",
        usage=Usage(input_tokens=tokens, output_tokens=0),
        cost_micro=cost,
        latency_ms=1,
        status_code=200,
    )


async def test_reservation_refuses_each_limit_kind_with_its_own_error(meter: tuple[Meter, int]) -> None:
    m, account_id = meter
    with pytest.raises(RateLimitExceeded, match="100 tokens per minute"):
        await m.reserve(account_id, 1, "req_tpm", limits=KeyLimits(5, tpm_limit=100), tokens=101, now=NOW)
    with pytest.raises(SpendingLimitExceeded, match=r"0\.000051 credits and 0\.00005 remain") as spend:
        await m.reserve(account_id, 51, "req_spend", limits=KeyLimits(5, spending_limit_micro=50), now=NOW)
    assert spend.value.available_micro == 50
    with pytest.raises(InsufficientCredits, match=r"0\.01 are available"):
        await m.reserve(account_id, 10_001, "req_balance", limits=KeyLimits(5), now=NOW)
    await m.reserve(account_id, 1, "req_rpm_1", limits=KeyLimits(5, rpm_limit=1), now=NOW)
    with pytest.raises(RateLimitExceeded, match="1 requests per minute") as rpm:
        await m.reserve(account_id, 1, "req_rpm_2", limits=KeyLimits(5, rpm_limit=1), now=NOW)
    assert rpm.value.headers == {  # the rest of the minute, and the limit that refused in OpenAI's names
        "Retry-After": "30",
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "30s",
    }
    assert await m.available_micro(account_id) == 10_000 - 1  # refusals took nothing


async def test_reservation_settle_gives_back_the_hold_and_counts_what_was_used(meter: tuple[Meter, int]) -> None:
    m, account_id = meter
    limits = KeyLimits(5, spending_limit_micro=5_000, tpm_limit=1_000)
    reservation = await m.reserve(account_id, 3_000, "req_1", limits=limits, tokens=800, now=NOW)
    assert await m.available_micro(account_id) == 7_000
    assert await m.key_spend_micro(account_id, 5, "monthly", NOW) == 3_000
    with pytest.raises(RateLimitExceeded):  # the 800 tokens are held in this minute's window
        await m.reserve(account_id, 1, "req_2", limits=limits, tokens=201, now=NOW)
    await m.settle(reservation, served(account_id, "req_1", 1_200, tokens=150))
    assert await m.available_micro(account_id) == 8_800
    assert await m.key_spend_micro(account_id, 5, "monthly", NOW) == 1_200
    await m.reserve(account_id, 1, "req_3", limits=limits, tokens=850, now=NOW)  # 150 used + 850 fits

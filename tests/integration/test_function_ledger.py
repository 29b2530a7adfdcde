"""The invocation ledger, driven directly (no ``/fn`` runtime), on both backends: each call lands
once through the settlement writer, never on the request path, and a priced call reserves and
settles the exact micro-credits with reconcile clean afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.accounts import account_balance, create_account
from billing.counters import CounterStore, EmbeddedCounterStore, RedisCounterStore
from billing.metering import Meter
from billing.models import LedgerEntry, ParkedSettlement, UsageRecord
from functions.config import ResolvedFunction
from functions.directory import load_function
from functions.invocations import ErrorType, InvocationLedger, InvocationRefused
from functions.ledger import FunctionLedger, Ticket
from functions.models import FunctionInvocation
from gateway.cli import main
from gateway.db import create_engine, create_sessionmaker, migrate
from gateway.reconcile import reconcile
from tests.fakes.function_rows import add_function, add_project, fixed_keyring
from tests.fakes.gateway_fixtures import Backend

OPENING = 10_000_000  # 10 credits
PRICE = 250_000  # 0.25 credits a call
ADMITTED_AT = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


class WallClock:
    """The meter's wall clock (hold expiry), moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@dataclass
class Books:
    backend: Backend
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: CounterStore
    account_id: int
    function: ResolvedFunction
    wall: WallClock

    @property
    def redis(self) -> bool:
        return self.backend.name == "postgres"

    def meter(self, consumer: str = "writer-a") -> Meter:
        return Meter(
            self.store,
            self.engine,
            self.sessionmaker,
            prefix=self.backend.redis_prefix,
            refresh_s=60.0,
            reservation_ttl_s=60.0,
            consumer=consumer,
            wall_clock=self.wall,
        )

    def ledger(self, meter: Meter, price_micro: int = 0) -> InvocationLedger:
        ledger: InvocationLedger = FunctionLedger(meter, price_micro=price_micro, now=lambda: ADMITTED_AT)
        return ledger

    async def calls(self) -> list[FunctionInvocation]:
        async with self.sessionmaker() as session:
            return list(await session.scalars(select(FunctionInvocation).order_by(FunctionInvocation.id)))

    async def usage(self) -> list[UsageRecord]:
        async with self.sessionmaker() as session:
            return list(await session.scalars(select(UsageRecord).order_by(UsageRecord.id)))

    async def debits(self) -> dict[str, int]:
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(LedgerEntry.request_id, func.sum(LedgerEntry.amount_micro))
                .where(LedgerEntry.kind == "debit")
                .group_by(LedgerEntry.request_id)
            )
            return {str(request_id): int(amount) for request_id, amount in rows}

    async def balance(self) -> int:
        async with self.sessionmaker() as session:
            return await account_balance(session, self.account_id)

    async def assert_reconciles(self) -> None:
        report = await reconcile(
            self.sessionmaker, counters=self.store, prefix=self.backend.redis_prefix, now=datetime.now(UTC)
        )
        assert report.ok, (report.drift, report.parked)


async def _account_with_function(sessionmaker: async_sessionmaker[AsyncSession], credits_micro: int) -> tuple[int, str]:
    async with sessionmaker() as session:
        account = await create_account(session, "acme", email="ops@acme.test", credits_micro=credits_micro)
        _project, environments = await add_project(session, account.id)
        row, _token = await add_function(
            session, fixed_keyring(), environments[2], "https://api.example.com/send", name="Send", slug="send"
        )
        await session.commit()
        return account.id, row.id


async def _books(backend: Backend, credits_micro: int) -> AsyncIterator[Books]:
    await migrate(backend.database_url)
    engine = create_engine(backend.database_url)
    sessionmaker = create_sessionmaker(engine)
    store: CounterStore = (
        RedisCounterStore.from_url(backend.redis_url, prefix=backend.redis_prefix)
        if backend.redis_url
        else EmbeddedCounterStore()
    )
    account_id, function_id = await _account_with_function(sessionmaker, credits_micro)
    async with sessionmaker() as session:
        function = await load_function(session, function_id, fixed_keyring())
    assert function is not None
    try:
        yield Books(backend, engine, sessionmaker, store, account_id, function, WallClock())
    finally:
        await store.close()
        await engine.dispose()


@pytest.fixture
async def books(backend: Backend) -> AsyncIterator[Books]:
    async for made in _books(backend, OPENING):
        yield made


@pytest.fixture
async def poor_books(backend: Backend) -> AsyncIterator[Books]:
    async for made in _books(backend, PRICE - 1):
        yield made


async def _call(
    ledger: InvocationLedger,
    function: ResolvedFunction,
    request_id: str,
    *,
    status: int = 200,
    error_type: ErrorType = ErrorType.NONE,
    latency_ms: int = 42,
    origin: str = "https://app.example.com",
) -> None:
    ticket = await ledger.admit(function, request_id)
    await ledger.finish(ticket, function, status=status, latency_ms=latency_ms, error_type=error_type, origin=origin)


async def test_function_ledger_free_call_lands_once_when_the_writer_runs(books: Books) -> None:
    meter = books.meter()
    ledger = books.ledger(meter)
    origin = "https://app.example.com\x00\r\n\x85" + "x" * 400
    await _call(ledger, books.function, "req_free_1", status=201, latency_ms=37, origin=origin)
    # Never a database write on the request path, on either store: a free call's row waits for
    # the writer (with Redis in the account's stream; in the embedded store in its buffer).
    assert await books.calls() == []
    assert await meter.write_pending() == 1
    [call] = await books.calls()
    assert (call.request_id, call.account_id, call.function_id) == ("req_free_1", books.account_id, books.function.id)
    assert (call.project_id, call.environment_id) == (books.function.project_id, books.function.environment_id)
    assert (call.status, call.latency_ms, call.error_type, call.credits_micro) == (201, 37, "", 0)
    assert call.origin == ("https://app.example.com" + "x" * 400)[:300]
    assert call.requested_at.replace(tzinfo=UTC) == ADMITTED_AT
    # A free call is no usage record and no debit: the invocation log is its record.
    assert await books.usage() == [] and await books.debits() == {}
    assert await meter.write_pending() == 0
    assert len(await books.calls()) == 1
    await books.assert_reconciles()


async def test_function_ledger_same_request_id_twice_is_one_row(books: Books) -> None:
    meter = books.meter()
    ledger = books.ledger(meter)
    for _ in range(2):  # a replay: the same call buffered twice
        await ledger.refused(
            books.function, request_id="req_twice", status=429, error_type=ErrorType.RATE_LIMITED, origin=""
        )
    await _call(ledger, books.function, "req_other")
    await meter.write_pending()
    calls = await books.calls()
    assert sorted(call.request_id for call in calls) == ["req_other", "req_twice"]
    refused = next(call for call in calls if call.request_id == "req_twice")
    assert (refused.status, refused.error_type, refused.latency_ms, refused.credits_micro) == (
        429,
        "rate_limited",
        0,
        0,
    )
    # And a later batch carrying it again (a re-claimed or replayed buffer) inserts nothing.
    await ledger.refused(
        books.function, request_id="req_twice", status=429, error_type=ErrorType.RATE_LIMITED, origin=""
    )
    await meter.write_pending()
    assert len(await books.calls()) == 2


async def test_function_ledger_buffer_rewritten_from_memory_is_written_once(books: Books) -> None:
    if not books.redis:
        pytest.skip("only a durable store keeps what a process buffered for a later rewrite")
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    await _call(ledger, books.function, "req_mem_1")
    await _call(ledger, books.function, "req_mem_2", status=504, error_type=ErrorType.TIMEOUT)
    # Redis lost its data after the commit? Either way the process rewrites from memory, then
    # the stream (if it survived) is written again: each call once, each debit once.
    await meter.writer.replay_unwritten()
    assert len(await books.calls()) == 2
    await meter.write_pending()
    assert len(await books.calls()) == 2
    assert await books.debits() == {"req_mem_1": -PRICE}
    assert await books.balance() == OPENING - PRICE


async def test_function_ledger_priced_call_reserves_and_settles_the_exact_price(books: Books) -> None:
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    ticket = await ledger.admit(books.function, "req_paid")
    assert await meter.available_micro(books.account_id) == OPENING - PRICE  # held
    assert "req_paid" in await books.store.holds(meter.holds_key(books.account_id))
    await ledger.finish(
        ticket, books.function, status=200, latency_ms=12, error_type=ErrorType.NONE, origin="https://a.example"
    )
    assert await books.store.holds(meter.holds_key(books.account_id)) == {}
    if books.redis:
        # Settled in the counters at once, in the database only when the writer runs.
        assert await books.calls() == [] and await books.usage() == [] and await books.debits() == {}
        assert await meter.available_micro(books.account_id) == OPENING - PRICE
        await meter.write_pending()
    # (The embedded store writes a settlement before the call answers, as for /v1.)
    [call] = await books.calls()
    assert (call.request_id, call.credits_micro, call.status) == ("req_paid", PRICE, 200)
    [usage] = await books.usage()
    assert (usage.request_id, usage.model, usage.provider, usage.upstream_model) == (
        "req_paid",
        "fn/send",
        "fn",
        books.function.id,
    )
    assert (usage.credits_micro, usage.key_id, usage.status_code, usage.input_tokens) == (PRICE, None, 200, 0)
    assert await books.debits() == {"req_paid": -PRICE}
    assert await books.balance() == OPENING - PRICE
    await meter.refresh_balance(books.account_id, force=True)
    assert await meter.available_micro(books.account_id) == OPENING - PRICE
    await books.assert_reconciles()


async def test_function_ledger_charges_only_when_the_target_answered(books: Books) -> None:
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    outcomes = {
        "req_ok": (200, ErrorType.NONE),
        "req_client_error": (404, ErrorType.NONE),
        "req_target_5xx": (503, ErrorType.TARGET_ERROR),
        "req_unreachable": (502, ErrorType.UNREACHABLE),
        "req_timeout": (504, ErrorType.TIMEOUT),
        "req_stalled_stream": (200, ErrorType.TIMEOUT),  # the target had answered, then stalled
        "req_runtime_500": (500, ErrorType.NONE),  # an answer the runtime made, not the target
    }
    for request_id, (status, error_type) in outcomes.items():
        await _call(ledger, books.function, request_id, status=status, error_type=error_type)
    await meter.write_pending()
    charged = {"req_ok", "req_client_error", "req_target_5xx", "req_stalled_stream"}
    assert {call.request_id: call.credits_micro for call in await books.calls()} == {
        request_id: PRICE if request_id in charged else 0 for request_id in outcomes
    }
    # Every priced call has its usage record (free ones at 0, with the reason); only the
    # charged ones are debited, once.
    usage = {record.request_id: (record.credits_micro, record.error_code) for record in await books.usage()}
    assert usage["req_unreachable"] == (0, "unreachable") and usage["req_timeout"] == (0, "timeout")
    assert usage["req_target_5xx"] == (PRICE, "target_error") and len(usage) == len(outcomes)
    assert await books.debits() == {request_id: -PRICE for request_id in charged}
    assert await books.balance() == OPENING - 4 * PRICE
    assert await books.store.holds(meter.holds_key(books.account_id)) == {}
    await meter.refresh_balance(books.account_id, force=True)
    assert await meter.available_micro(books.account_id) == OPENING - 4 * PRICE
    await books.assert_reconciles()


async def test_function_ledger_poor_account_is_refused_and_logged(poor_books: Books) -> None:
    books = poor_books
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    with pytest.raises(InvocationRefused) as refused:
        await ledger.admit(books.function, "req_poor")
    assert refused.value.status_code == 402
    assert "0.25 credits" in str(refused.value) and "0.249999 are available" in str(refused.value)
    assert await books.store.holds(meter.holds_key(books.account_id)) == {}
    assert await meter.available_micro(books.account_id) == PRICE - 1
    await ledger.refused(
        books.function, request_id="req_poor", status=402, error_type=ErrorType.PAYMENT_REQUIRED, origin=""
    )
    await meter.write_pending()
    [call] = await books.calls()
    assert (call.status, call.error_type, call.credits_micro) == (402, "payment_required", 0)
    assert await books.usage() == [] and await books.debits() == {}
    assert await books.balance() == PRICE - 1
    await books.assert_reconciles()


async def test_function_ledger_hold_of_a_dead_process_expires(books: Books) -> None:
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    await ledger.admit(books.function, "req_orphan")  # the process dies before finish
    assert await meter.available_micro(books.account_id) == OPENING - PRICE
    books.wall.now += 61  # past reservation_ttl_s
    assert await meter.sweep_expired(books.account_id) == 1
    assert await meter.available_micro(books.account_id) == OPENING
    await meter.write_pending()
    assert await books.calls() == [] and await books.debits() == {}
    assert await books.balance() == OPENING
    await books.assert_reconciles()


async def test_function_ledger_finishing_twice_settles_once(books: Books) -> None:
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    ticket = await ledger.admit(books.function, "req_once")
    for _ in range(2):
        await ledger.finish(ticket, books.function, status=200, latency_ms=1, error_type=ErrorType.NONE, origin="")
    assert isinstance(ticket, Ticket) and ticket.finished
    await meter.write_pending()
    assert len(await books.calls()) == 1 and await books.debits() == {"req_once": -PRICE}
    await meter.refresh_balance(books.account_id, force=True)
    assert await meter.available_micro(books.account_id) == OPENING - PRICE
    await books.assert_reconciles()


async def test_function_ledger_record_of_an_unknown_kind_is_parked_then_replayed(books: Books, tmp_path: Path) -> None:
    """A writer that does not know invocation records (an older process, or one that never built
    the ledger) parks them, losing nothing; replay-parked writes them once their kind is known."""
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    await _call(ledger, books.function, "req_unknown_kind")
    await _call(books.ledger(meter), books.function, "req_unknown_free")
    # (The embedded store wrote the priced call's record before answering, its kind known; the
    # free one waits for a writer.)
    stranger = books.meter("writer-stranger")  # no FunctionLedger: no kind registered
    await stranger.write_pending(accounts=[books.account_id])
    async with books.sessionmaker() as session:
        parked = list(await session.scalars(select(ParkedSettlement).order_by(ParkedSettlement.id)))
    assert parked, "an unknown kind is parked"
    assert all("no writer knows records of kind 'fn'" in entry.error for entry in parked)
    report = await reconcile(
        books.sessionmaker, counters=None, prefix=books.backend.redis_prefix, now=datetime.now(UTC)
    )
    assert not report.ok and report.parked
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "{books.backend.database_url}"\nredis_url = "{books.backend.redis_url}"\n'
        f'redis_prefix = "{books.backend.redis_prefix}"\n'
    )
    for entry in parked:  # the operator's way: the CLI knows invocation records
        assert await asyncio.to_thread(main, ["--config", str(config), "billing", "replay-parked", str(entry.id)]) == 0
    assert sorted(call.request_id for call in await books.calls()) == ["req_unknown_free", "req_unknown_kind"]
    assert {call.request_id: call.credits_micro for call in await books.calls()} == {
        "req_unknown_free": 0,
        "req_unknown_kind": PRICE,
    }
    assert await books.debits() == {"req_unknown_kind": -PRICE}
    assert await books.balance() == OPENING - PRICE
    await books.assert_reconciles()


async def test_function_ledger_records_ride_the_same_batch_as_settlements(books: Books) -> None:
    """Invocation records and ordinary settlements in one stream: one writer round takes both."""
    from billing.ledger import Settlement
    from providers.base import Usage

    meter = books.meter()
    ledger = books.ledger(meter)
    reservation = await meter.reserve(books.account_id, 5_000, "req_chat")
    await _call(ledger, books.function, "req_fn")
    chat = Settlement(
        request_id="req_chat",
        account_id=books.account_id,
        key_id=None,
        model="fake/gpt",
        provider="fake",
        upstream_model="gpt",
        usage=Usage(input_tokens=3, output_tokens=4),
        cost_micro=1_234,
        latency_ms=9,
        status_code=200,
    )
    await meter.settle(reservation, chat)
    await meter.write_pending()
    assert [call.request_id for call in await books.calls()] == ["req_fn"]
    assert [record.request_id for record in await books.usage()] == ["req_chat"]
    assert await books.debits() == {"req_chat": -1_234}
    await books.assert_reconciles()


async def test_function_ledger_reconcile_names_a_charged_call_without_its_usage(books: Books) -> None:
    meter = books.meter()
    ledger = books.ledger(meter, PRICE)
    await _call(ledger, books.function, "req_lost")
    await meter.write_pending()
    async with books.sessionmaker() as session:  # the log says charged, the books no longer agree
        await session.execute(update(UsageRecord).where(UsageRecord.request_id == "req_lost").values(credits_micro=1))
        await session.commit()
    report = await reconcile(
        books.sessionmaker, counters=None, prefix=books.backend.redis_prefix, now=datetime.now(UTC)
    )
    drift = f"account {books.account_id}: invocation req_lost was charged 0.25 but has a usage record of 0.000001"
    assert drift in report.drift

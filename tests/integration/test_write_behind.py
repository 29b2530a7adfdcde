"""Write-behind settlement against the real Postgres and Redis: the request path buffers, writers
drain in batches, and no crash point loses or doubles a debit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

import billing.mirror
from billing.accounts import account_balance, create_account
from billing.counters import Enqueue, RedisCounterStore
from billing.errors import BillingUnavailable
from billing.ledger import Settlement, write_settlements
from billing.metering import BALANCE, PENDING, KeyLimits, Meter
from billing.mirror import REFRESHED
from billing.models import ParkedSettlement, UsageRecord
from gateway.cli import main
from gateway.db import create_engine, create_sessionmaker, create_writer_engine, migrate
from gateway.reconcile import reconcile
from providers.base import Usage
from tests.fakes.gateway_fixtures import debits_per_request

OPENING = 10_000_000


@dataclass
class Books:
    engine: AsyncEngine
    store: RedisCounterStore
    account_id: int
    prefix: str
    redis_url: str
    database_url: str
    writer_engine: AsyncEngine  # the writer's own pool, without pre-ping, as the gateway builds it

    def meter(self, consumer: str, claim_idle_s: float = 30.0) -> Meter:
        return Meter(
            self.store,
            self.engine,
            create_sessionmaker(self.engine),
            prefix=self.prefix,
            refresh_s=60.0,
            consumer=consumer,
            claim_idle_s=claim_idle_s,
            writer_engine=self.writer_engine,
        )

    async def balance(self) -> int:
        async with create_sessionmaker(self.engine)() as session:
            return await account_balance(session, self.account_id)

    async def debits(self) -> dict[str, int]:
        async with create_sessionmaker(self.engine)() as session:
            return await debits_per_request(session)

    async def mirror(self) -> dict[str, int]:
        """The mirror's fields but its refresh mark (random by design: see billing.mirror)."""
        fields = await self.store.get_all(f"{self.prefix}{{a{self.account_id}}}:balance")
        fields.pop(REFRESHED, None)
        return fields

    async def reconciles(self) -> bool:
        report = await reconcile(
            create_sessionmaker(self.engine),
            counters=self.store,
            prefix=self.prefix,
            now=datetime.now(UTC),
            drain_wait_s=0,
        )
        assert report.ok, report.drift
        return report.ok


@pytest.fixture
async def books(postgres_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Books]:
    await migrate(postgres_url)
    engine = create_engine(postgres_url)
    async with create_sessionmaker(engine)() as session:
        account = await create_account(session, "acme", email="ops@acme.test", credits_micro=OPENING)
    store = RedisCounterStore.from_url(redis_url, prefix=redis_prefix)
    writer_engine = create_writer_engine(postgres_url)
    assert writer_engine is not None
    yield Books(engine, store, account.id, redis_prefix, redis_url, postgres_url, writer_engine)
    await store.close()
    await writer_engine.dispose()
    await engine.dispose()
    await _forget_redis(redis_url, redis_prefix)


async def _forget_redis(redis_url: str, prefix: str) -> None:
    """Everything under the prefix vanishes, as when Redis restarts without persistence."""
    client = aioredis.Redis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def settlement(account_id: int, request_id: str, cost: int) -> Settlement:
    return Settlement(
        request_id=request_id,
        account_id=account_id,
        key_id=None,
        model="fake/gpt",
        provider="fake",
        upstream_model="gpt",
        usage=Usage(input_tokens=10, output_tokens=cost // 10),
        cost_micro=cost,
        latency_ms=5,
        status_code=200,
    )


async def serve(meter: Meter, account_id: int, request_id: str, cost: int) -> None:
    reservation = await meter.reserve(account_id, cost * 2, request_id)
    await meter.settle(reservation, settlement(account_id, request_id, cost))


async def test_settling_buffers_and_a_writer_batch_lands_each_debit_once(books: Books) -> None:
    meter = books.meter("writer-a")
    for i in range(5):
        await serve(meter, books.account_id, f"req_{i}", 1_000)
    # Nothing is in the database yet, but the mirror already counts every debit.
    assert await books.debits() == {} and await books.balance() == OPENING
    assert await books.mirror() == {BALANCE: OPENING - 5_000, "held": 0, "gen": 5, PENDING: 5_000}
    await meter.refresh_balance(books.account_id, force=True)  # a refresh keeps what is pending
    assert (await books.mirror())[BALANCE] == OPENING - 5_000
    assert await meter.write_pending() == 5
    assert await books.debits() == {f"req_{i}": 1 for i in range(5)}
    assert await books.balance() == OPENING - 5_000
    assert (await books.mirror())[PENDING] == 0
    assert await books.reconciles()


async def test_a_batch_written_but_never_acknowledged_is_not_debited_twice(books: Books) -> None:
    """The crash point between a writer's commit and its acknowledgement."""
    dead = books.meter("writer-dead")
    for i in range(3):
        await serve(dead, books.account_id, f"req_{i}", 2_000)
    stream = dead.stream_key(books.account_id)
    claimed = await books.store.claim_settlements(stream, dead.consumer, 100)
    async with books.engine.begin() as connection:  # what its writer did before it died
        await write_settlements(connection, [_decode(entry.data) for entry in claimed])
    survivor = books.meter("writer-b", claim_idle_s=0.05)
    await asyncio.sleep(0.1)
    assert await survivor.discover_buffers() == 1
    assert await survivor.write_pending(claim_stale=True) == 3  # written again: nothing new
    assert await books.debits() == {f"req_{i}": 1 for i in range(3)}
    assert await books.balance() == OPENING - 6_000
    assert (await books.mirror())[PENDING] == 0 and await books.store.queued_settlements() == 0
    assert await books.reconciles()


async def test_a_process_that_died_before_its_writer_ran_is_written_by_another(books: Books) -> None:
    """The crash point right after answering: buffered, never claimed. Another process's writer
    finds the stream on its periodic scan and takes the entries as new ones."""
    dead = books.meter("writer-dead")
    for i in range(4):
        await serve(dead, books.account_id, f"req_{i}", 250)
    survivor = books.meter("writer-b")
    assert await survivor.write_pending() == 0  # it fed no stream itself
    assert await survivor.discover_buffers() == 1
    assert await survivor.write_pending() == 4
    assert await books.debits() == {f"req_{i}": 1 for i in range(4)}
    assert await books.balance() == OPENING - 1_000
    assert await books.reconciles()


async def test_redis_losing_its_data_loses_no_buffered_settlement(books: Books) -> None:
    meter = books.meter("writer-a")
    for i in range(3):
        await serve(meter, books.account_id, f"req_{i}", 1_500)
    await _forget_redis(books.redis_url, books.prefix)  # the stream and the mirror are gone
    # The next reservation finds the mirror missing: the process rewrites what it buffered
    # before it trusts the database's balance again.
    await serve(meter, books.account_id, "req_after", 500)
    assert await books.debits() == {"req_0": 1, "req_1": 1, "req_2": 1}
    assert await meter.write_pending() == 1
    assert await books.balance() == OPENING - 5_000
    assert (await books.mirror())[BALANCE] == OPENING - 5_000
    assert await books.reconciles()


async def test_concurrent_writers_share_one_stream_without_double_debits(books: Books) -> None:
    first, second = books.meter("writer-a"), books.meter("writer-b")
    await asyncio.gather(*(serve((first, second)[i % 2], books.account_id, f"req_{i}", 100) for i in range(60)))
    # Both drain the same account's stream at once, and read-your-writes drains it too.
    results = await asyncio.gather(
        first.write_pending(), second.write_pending(), first.settled(books.account_id), second.write_pending()
    )
    assert results[2] is True
    assert await books.debits() == {f"req_{i}": 1 for i in range(60)}
    assert await books.balance() == OPENING - 6_000
    assert await books.reconciles()


def _decode(data: bytes) -> Settlement:
    return msgspec.json.decode(data, type=Settlement)


async def _reserve_and_settle(meter: Meter, served: Settlement) -> None:
    """What the request path does, with a settlement the door's validation never saw."""
    reservation = await meter.reserve(served.account_id, served.cost_micro * 2, served.request_id)
    await meter.settle(reservation, served)


async def test_writer_parks_a_refused_entry_and_writes_every_other_account(books: Books, tmp_path: Path) -> None:
    """One entry the database refuses used to fail the whole multi-account batch forever."""
    others = []
    async with create_sessionmaker(books.engine)() as session:
        for name in ("beta", "gamma"):
            others.append((await create_account(session, name, credits_micro=OPENING)).id)
    meter = books.meter("writer-a")
    for i, account_id in enumerate([books.account_id, *others]):
        await serve(meter, account_id, f"req_ok_{i}", 1_000)
    too_long = msgspec.structs.replace(settlement(others[0], "req_poison", 700), end_user_id="u" * 300)
    with_nul = msgspec.structs.replace(settlement(others[1], "req_nul", 300), end_user_id="a\x00b")
    await _reserve_and_settle(meter, too_long)
    await _reserve_and_settle(meter, with_nul)
    await serve(meter, books.account_id, "req_ok_late", 1_000)

    assert await meter.write_pending() == 6  # nothing raised: the round went through
    debits = await books.debits()
    assert debits == {"req_ok_0": 1, "req_ok_1": 1, "req_ok_2": 1, "req_ok_late": 1, "req_nul": 1}
    async with create_sessionmaker(books.engine)() as session:
        nul = await session.scalar(select(UsageRecord).where(UsageRecord.request_id == "req_nul"))
        parked = list(await session.scalars(select(ParkedSettlement)))
    assert nul is not None and nul.end_user_id == "a\ufffdb" and nul.anomaly == "nul_in_text"
    assert [(p.account_id, p.request_id, p.cost_micro) for p in parked] == [(others[0], "req_poison", 700)]
    assert "StringDataRightTruncation" in parked[0].error
    assert msgspec.json.decode(parked[0].data.encode(), type=Settlement) == too_long  # kept whole, replayable
    assert await books.store.queued_settlements() == 0  # acknowledged: nothing blocks the streams

    # The writer keeps going, and reconcile names the parked entry and fails until it is replayed.
    await serve(meter, others[0], "req_after", 500)
    assert await meter.write_pending() == 1
    assert (await books.debits())["req_after"] == 1
    report = await reconcile(
        create_sessionmaker(books.engine), counters=books.store, prefix=books.prefix, now=datetime.now(UTC)
    )
    assert not report.ok and report.drift == [] and len(report.parked) == 1 and "req_poison" in report.parked[0]

    # The operator replays it: refused again as parked, written once corrected; the books close.
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "{books.database_url}"\nredis_url = "{books.redis_url}"\nredis_prefix = "{books.prefix}"\n'
    )
    replay = ["--config", str(config), "billing", "replay-parked", str(parked[0].id)]
    assert await asyncio.to_thread(main, replay) == 2
    corrected = tmp_path / "corrected.json"
    corrected.write_bytes(msgspec.json.encode(msgspec.structs.replace(too_long, end_user_id="u" * 10)))
    assert await asyncio.to_thread(main, [*replay, "--data-file", str(corrected)]) == 0
    assert (await books.debits())["req_poison"] == 1
    assert await books.reconciles()


async def test_writer_parks_numbers_out_of_range_and_writes_the_rest(books: Books) -> None:
    """Rows sent as one JSON parameter (billing/_pgrows.py) are refused per entry as before."""
    meter = books.meter("writer-a")
    await serve(meter, books.account_id, "req_ok", 1_000)
    await _reserve_and_settle(
        meter, msgspec.structs.replace(settlement(books.account_id, "req_int4", 100), latency_ms=2**31)
    )
    await _reserve_and_settle(
        meter, msgspec.structs.replace(settlement(books.account_id, "req_int8", 100), key_id=2**63)
    )
    await serve(meter, books.account_id, "req_ok_late", 1_000)
    assert await meter.write_pending() == 4
    assert await books.debits() == {"req_ok": 1, "req_ok_late": 1}
    async with create_sessionmaker(books.engine)() as session:
        parked = {p.request_id: p.error for p in await session.scalars(select(ParkedSettlement))}
    assert sorted(parked) == ["req_int4", "req_int8"]
    assert all("NumericValueOutOfRange" in error for error in parked.values())
    assert await books.store.queued_settlements() == 0


async def test_a_writer_connection_killed_fails_one_round_and_the_next_reconnects(books: Books) -> None:
    """The writer's pool pings nothing: a connection that died idle fails the round that takes
    it, the round's entries stay buffered, and the next round connects afresh."""
    meter = books.meter("writer-a")
    await serve(meter, books.account_id, "req_0", 1_000)
    assert await meter.write_pending() == 1
    async with books.writer_engine.connect() as connection:  # the one pooled connection
        raw = await connection.get_raw_connection()
        pid = raw.driver_connection.get_server_pid()  # type: ignore[union-attr]
    admin = await asyncpg.connect(books.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await admin.close()
    await serve(meter, books.account_id, "req_1", 1_000)
    with pytest.raises(BillingUnavailable):
        await meter.write_pending()
    assert await books.store.queued_settlements() == 1 and await books.debits() == {"req_0": 1}
    assert await meter.write_pending() == 1
    assert await books.debits() == {"req_0": 1, "req_1": 1}
    assert await books.reconciles()


async def test_an_unreadable_buffered_entry_is_parked_not_dropped(books: Books) -> None:
    meter = books.meter("writer-a")
    await serve(meter, books.account_id, "req_ok", 1_000)
    await books.store.release(
        meter.holds_key(books.account_id),
        "req_garbled",
        if_held=[],
        always=[],
        enqueue=Enqueue(meter.stream_key(books.account_id), meter.balance_key(books.account_id), PENDING, b"{", 40),
    )
    meter.writer.mark(books.account_id)
    assert await meter.write_pending() == 2
    assert await books.debits() == {"req_ok": 1}
    async with create_sessionmaker(books.engine)() as session:
        parked = list(await session.scalars(select(ParkedSettlement)))
    assert [(p.account_id, p.cost_micro, p.data) for p in parked] == [(books.account_id, 40, "{")]


class PausingStore(RedisCounterStore):
    """The Redis store with a seam at the two moments the mirror race lives in: ``after_read``
    runs once right after a read of a balance mirror (a refresh has read the generation and the
    pending sum, not yet the database), ``before_ack`` once right before a writer's ack (its
    batch is committed, its pending sum not yet lowered)."""

    after_read: Callable[[], Awaitable[object]] | None = None
    before_ack: Callable[[], Awaitable[object]] | None = None

    async def get_all(self, key: str) -> dict[str, int]:
        fields = await super().get_all(key)
        hook, self.after_read = self.after_read, None
        if hook is not None:
            await hook()
        return fields

    async def ack_settlements(self, *args: Any, **kwargs: Any) -> int:
        hook, self.before_ack = self.before_ack, None
        if hook is not None:
            await hook()
        return await super().ack_settlements(*args, **kwargs)


def pausing_meter(books: Books, consumer: str) -> tuple[Meter, PausingStore]:
    store = PausingStore(aioredis.Redis.from_url(books.redis_url), prefix=books.prefix)
    meter = Meter(
        store,
        books.engine,
        create_sessionmaker(books.engine),
        prefix=books.prefix,
        refresh_s=60.0,
        writer_engine=books.writer_engine,
    )
    meter.consumer = consumer
    return meter, store


async def test_a_refresh_straddling_a_writers_commit_and_ack_leaves_the_mirror_right(books: Books) -> None:
    """The race CI found: a refresh reads the pending sum, a writer commits and acknowledges,
    the refresh reads the balance: (db − X) − pending_old, low by X with nothing pending."""
    writer = books.meter("writer-a")
    refresher, store = pausing_meter(books, "writer-b")
    try:
        for i in range(8):
            await serve(writer, books.account_id, f"req_{i}", 1_000)
        store.after_read = writer.write_pending
        await refresher.refresh_balance(books.account_id, force=True)
        assert await books.balance() == OPENING - 8_000
        assert await books.mirror() == {BALANCE: OPENING - 8_000, "held": 0, "gen": 9, PENDING: 0}
        assert await books.reconciles()
    finally:
        await store.close()


async def test_a_refresh_between_a_writers_commit_and_its_ack_is_corrected_by_the_writer(books: Books) -> None:
    """The window no guard sees: the database already debited, the pending sum not yet lowered.
    The writer re-syncs after its ack, so the mirror is right without another request."""
    refresher = books.meter("writer-b")
    writer, store = pausing_meter(books, "writer-a")
    try:
        for i in range(8):
            await serve(writer, books.account_id, f"req_{i}", 1_000)
        store.before_ack = lambda: refresher.refresh_balance(books.account_id, force=True)
        assert await writer.write_pending() == 8
        mirror = await books.mirror()
        assert (mirror[BALANCE], mirror[PENDING]) == (OPENING - 8_000, 0)
        assert await books.reconciles()
    finally:
        await store.close()


def count_resyncs(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The accounts of each mirror re-sync the writers run from now on."""
    calls: list[list[int]] = []
    real = billing.mirror.resync_mirrors

    async def counted(*args: Any, **kwargs: Any) -> set[int]:
        calls.append(sorted(args[3]))
        return await real(*args, **kwargs)

    monkeypatch.setattr("billing.writer.resync_mirrors", counted)
    return calls


async def test_a_writer_re_syncs_only_when_a_refresh_set_the_mirror_since_its_last_look(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-sync costs a database query per batch; it is needed only when a refresh set the
    mirror while the batch was between commit and ack, which the refresh mark tells."""
    resyncs = count_resyncs(monkeypatch)
    writer = books.meter("writer-a")
    for round_number in range(3):
        for i in range(4):
            await serve(writer, books.account_id, f"req_{round_number}_{i}", 1_000)
        assert await writer.write_pending() == 4
    # The first batch re-syncs (the writer has not seen the mark yet); the next two find it as
    # they left it and skip the query.
    assert resyncs == [[books.account_id]]
    await writer.refresh_balance(books.account_id, force=True)  # a refresh moves the mark
    await serve(writer, books.account_id, "req_after_refresh", 1_000)
    assert await writer.write_pending() == 1
    assert resyncs == [[books.account_id], [books.account_id]]
    mirror = await books.mirror()
    assert (mirror[BALANCE], mirror[PENDING]) == (OPENING - 13_000, 0)
    assert await books.reconciles()


async def test_a_refresh_between_a_later_batchs_commit_and_ack_is_still_corrected(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of issue 10 item 8 once the writer knows the mark: the refresh inside the batch
    moves it, so the writer re-syncs and the mirror is not left low."""
    resyncs = count_resyncs(monkeypatch)
    refresher = books.meter("writer-b")
    writer, store = pausing_meter(books, "writer-a")
    try:
        await serve(writer, books.account_id, "req_first", 1_000)
        assert await writer.write_pending() == 1
        for i in range(8):
            await serve(writer, books.account_id, f"req_{i}", 1_000)
        store.before_ack = lambda: refresher.refresh_balance(books.account_id, force=True)
        assert await writer.write_pending() == 8
        assert len(resyncs) == 2
        mirror = await books.mirror()
        assert (mirror[BALANCE], mirror[PENDING]) == (OPENING - 9_000, 0)
        assert await books.reconciles()
    finally:
        await store.close()


async def test_a_busy_writer_still_runs_one_round_per_batch_window(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At low load a settlement arrives while the previous round runs; starting the next round
    at once (as before) made every settlement pay for its own transaction. Round starts are at
    least a window apart however the machine is loaded, so the bound below cannot flake."""
    meter = books.meter("writer-a")
    rounds: list[float] = []
    real = meter.writer.write_pending

    async def counted(**kwargs: Any) -> int:
        rounds.append(asyncio.get_running_loop().time())
        return await real(**kwargs)

    monkeypatch.setattr(meter.writer, "write_pending", counted)
    window = 0.05
    async with meter.writer.running(poll_s=1.0, batch_window_s=window, scan_s=3600.0):
        await asyncio.sleep(0)  # the writer's first round (its scan) runs now
        started = asyncio.get_running_loop().time()
        for i in range(30):
            await serve(meter, books.account_id, f"req_{i}", 1_000)
            await asyncio.sleep(0.005)
        elapsed = asyncio.get_running_loop().time() - started
    # 30 settlements over ``elapsed``: at most one round per window (+ the first and the final
    # drain on close), where each settlement used to start one.
    during = [at for at in rounds if at >= started]
    assert len(during) <= elapsed / window + 2, (len(during), elapsed)
    assert await books.debits() == {f"req_{i}": 1 for i in range(30)}
    assert await books.reconciles()


async def test_a_round_cancelled_mid_commit_is_written_by_the_stopping_writers_final_drain(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping a writer cancels its round; one cancelled after it claimed its entries used to
    forget their account, so the final drain wrote nothing and the debits waited for another
    process's scan (30 s) instead of landing on a graceful stop."""
    meter = books.meter("writer-a")
    for i in range(4):
        await serve(meter, books.account_id, f"req_{i}", 1_000)
    claimed, release = asyncio.Event(), asyncio.Event()
    real_commit = meter.writer._commit

    async def blocked_commit(*args: Any, **kwargs: Any) -> int:
        claimed.set()
        await release.wait()
        return await real_commit(*args, **kwargs)

    monkeypatch.setattr(meter.writer, "_commit", blocked_commit)
    round_ = asyncio.create_task(meter.write_pending())
    await claimed.wait()  # the entries are claimed by this writer, not yet written
    round_.cancel()
    with pytest.raises(asyncio.CancelledError):
        await round_
    assert await books.debits() == {}
    monkeypatch.setattr(meter.writer, "_commit", real_commit)
    assert meter.writer.has_buffered
    assert await meter.write_pending() == 4  # the final drain's call: default targets
    assert await books.debits() == {f"req_{i}": 1 for i in range(4)}
    assert await books.balance() == OPENING - 4_000
    assert await books.reconciles()


async def test_redis_losing_its_data_rebuilds_spend_counters_after_the_replay(books: Books) -> None:
    """The spend counter is rebuilt from usage records: before the lost buffers were rewritten,
    it missed them and stayed low (a key could spend past its limit, and reconcile drifted)."""
    meter = books.meter("writer-a")
    limits = KeyLimits(key_id=77, spending_limit_micro=1_000_000)
    now = datetime.now(UTC)

    async def serve_key(request_id: str, cost: int) -> None:
        reservation = await meter.reserve(books.account_id, cost * 2, request_id, limits=limits, now=now)
        served = msgspec.structs.replace(settlement(books.account_id, request_id, cost), key_id=77)
        await meter.settle(reservation, served)

    for i in range(3):
        await serve_key(f"req_{i}", 1_500)
    await _forget_redis(books.redis_url, books.prefix)
    await serve_key("req_after", 500)
    assert await meter.key_spend_micro(books.account_id, 77, "monthly", now) == 5_000
    await meter.write_pending()
    assert await books.debits() == {"req_0": 1, "req_1": 1, "req_2": 1, "req_after": 1}


async def test_a_mirror_re_sync_leaves_nothing_for_the_collector(books: Books) -> None:
    """A serving process collects garbage rarely (gateway/collector.py), and writers re-sync
    mirrors as often as every round (with two workers, each refresh of one moves the mark the
    other's writer reads): a statement built per call left SQLAlchemy's cycles behind, 28 a
    second, +13 MiB a worker over a 2-worker soak."""
    import gc

    sessionmaker = create_sessionmaker(books.engine)
    await books.meter("writer-a").refresh_balance(books.account_id, force=True)  # the mirror loaded
    await billing.mirror.resync_mirrors(books.store, sessionmaker, books.prefix, [books.account_id])
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            done = await billing.mirror.resync_mirrors(books.store, sessionmaker, books.prefix, [books.account_id])
            assert done == {books.account_id}
        gc.collect()
        left = {f"{type(item).__module__}.{type(item).__qualname__}" for item in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not {kind for kind in left if kind.startswith(("sqlalchemy.", "billing."))}, left

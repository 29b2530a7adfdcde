"""Every script Tollway runs on Redis touches keys of one hash slot, so each runs whole on one
Redis Cluster node: the keys each call hands the counter store are recorded here, through the
real domain code (reserve, settle, checkpoint, expiry, the writer's ack, browser tokens, the
function rate limit, sign-in throttling, the balance mirror), and their slots computed with
redis-py's own ``key_slot``. No network: the embedded store stands in for Redis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.crc import key_slot

from billing.counters import (
    Adjust,
    ApplyResult,
    Check,
    EmbeddedCounterStore,
    Enqueue,
    Hold,
    QueuedSettlement,
    WindowHit,
)
from billing.expiry import ExpirySweep
from billing.layout import SPENT, CounterKeys
from billing.ledger import Settlement
from billing.mirror import BALANCE
from billing.refresh import BalanceRefresher
from billing.reservations import KeyLimits, Reservations
from billing.writer import SettlementWriter
from functions.ratelimit import RateLimiter
from gateway.db import create_engine, create_sessionmaker
from keys.browser_tokens import BrowserTokens
from providers.base import Usage

PREFIX = "tw:"
ACCOUNTS = [1, 2, 42, 1_000_003]
NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)


class RecordingStore(EmbeddedCounterStore):
    """The embedded store, noting the keys of every call that Redis runs as one script."""

    durable = True  # the writer then leaves settlements in their streams, as with Redis

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[str]]] = []

    async def apply(self, checks: Sequence[Check], hold: Hold | None = None) -> ApplyResult:
        if checks:  # Redis runs no script for none (billing/counters/redis.py)
            self.calls.append(("apply", [c.key for c in checks] + ([hold.key] if hold else [])))
        return await super().apply(checks, hold)

    async def adjust(self, adjustments: Sequence[Adjust]) -> None:
        if adjustments:
            self.calls.append(("adjust", [a.key for a in adjustments]))
        await super().adjust(adjustments)

    async def release(
        self,
        holds_key: str,
        field: str,
        *,
        if_held: Sequence[Adjust],
        always: Sequence[Adjust],
        enqueue: Enqueue | None = None,
    ) -> bool:
        keys = [holds_key, *(a.key for a in (*if_held, *always))]
        if enqueue is not None:
            keys += [enqueue.stream, enqueue.pending_key]
        self.calls.append(("release", keys))
        return await super().release(holds_key, field, if_held=if_held, always=always, enqueue=enqueue)

    async def ack_settlements(
        self,
        stream: str,
        pending_key: str,
        pending_field: str,
        entries: Sequence[QueuedSettlement],
        generation_field: str = "",
    ) -> int:
        self.calls.append(("ack", [stream, pending_key]))
        return await super().ack_settlements(stream, pending_key, pending_field, entries, generation_field)

    async def set_if(self, key: str, values: Mapping[str, int], guard_field: str, guard_value: int | None) -> bool:
        self.calls.append(("set_if", [key]))
        return await super().set_if(key, values, guard_field, guard_value)

    async def update_hold(self, holds_key: str, field: str, value: str) -> bool:
        self.calls.append(("update_hold", [holds_key]))
        return await super().update_hold(holds_key, field, value)

    async def hit_window(self, key: str, limit: int, ttl_ms: int) -> WindowHit:
        self.calls.append(("hit_window", [key]))
        return await super().hit_window(key, limit, ttl_ms)


class FreshMirror(BalanceRefresher):
    """The balance mirror counts as loaded (the test loads it), so reserving needs no database."""

    def due(self, account_id: int) -> bool:
        return False


def _slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


def _settlement(account_id: int, request_id: str, cost: int) -> Settlement:
    return Settlement(
        request_id=request_id,
        account_id=account_id,
        key_id=7,
        model="fake/gpt",
        provider="fake",
        upstream_model="gpt",
        usage=Usage(input_tokens=10, output_tokens=4),
        cost_micro=cost,
        latency_ms=5,
        status_code=200,
    )


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


async def test_counter_key_slots_every_script_of_an_account_stays_in_its_slot(store: RecordingStore) -> None:
    engine = create_engine("sqlite+aiosqlite://")  # never connected: nothing below reads the database
    sessionmaker = create_sessionmaker(engine)
    keys = CounterKeys(PREFIX)
    wall = [NOW.timestamp()]
    writer = SettlementWriter(store, engine, sessionmaker, keys)
    expiry = ExpirySweep(store, keys, writer, wall_clock=lambda: wall[0])
    refresher = FreshMirror(store, sessionmaker, keys, expiry, writer, refresh_s=60)
    reservations = Reservations(
        store, sessionmaker, keys, refresher, writer, reservation_ttl_s=60, wall_clock=lambda: wall[0]
    )
    limits = KeyLimits(key_id=7, spending_limit_micro=10**9, spending_period="daily", rpm_limit=100, tpm_limit=10**6)
    try:
        for account in ACCOUNTS:
            await store.adjust([Adjust(keys.balance(account), BALANCE, 10**9)])
            await store.adjust([Adjust(keys.spend(account, 7, "daily", NOW), SPENT, 0)])
            settled = await reservations.reserve(account, 5_000, f"r{account}", limits=limits, tokens=50, now=NOW)
            await reservations.settle(settled, _settlement(account, f"r{account}", 1_000))
            await reservations.record(_settlement(account, f"free{account}", 0))
            # A stream whose process died: checkpointed, then released and billed by the expiry.
            died = await reservations.reserve(account, 5_000, f"d{account}", limits=limits, tokens=50, now=NOW)
            await reservations.checkpoint(died, _settlement(account, f"d{account}", 700))
            wall[0] += 120
            assert await expiry.sweep_expired(account) == 1
            wall[0] -= 120
            queued = await store.claim_settlements(keys.stream(account), "writer", 10)
            await writer._acknowledge(account, queued)
    finally:
        await engine.dispose()
    scripts = {name for name, _keys in store.calls}
    assert scripts >= {"apply", "adjust", "release", "update_hold", "ack"}
    for name, called in store.calls:
        assert len(_slots(called)) == 1, (name, called)
    for account in ACCOUNTS:  # and that slot is the account's own hash tag
        mine = [k for _name, called in store.calls for k in called if f"{{a{account}}}" in k]
        assert mine and _slots(mine) == {key_slot(f"a{account}".encode())}


async def test_counter_key_slots_single_key_scripts_name_one_key(store: RecordingStore) -> None:
    """Browser tokens, the function rate limit: one key per script (any slot will do)."""
    tokens = BrowserTokens(store, prefix=PREFIX, clock=lambda: NOW.timestamp())
    minted = await tokens.mint(42, 7, 600)
    assert await tokens.resolve(minted.token) is not None
    await tokens.revoke_all(42, 7)
    assert await tokens.revoke(minted.token)
    limiter = RateLimiter(store, prefix=PREFIX, clock=lambda: NOW.timestamp())
    assert (await limiter.hit("fn_abc", 5)).allowed
    calls: list[tuple[str, list[Any]]] = list(store.calls)
    assert {name for name, _keys in calls} == {"adjust", "hit_window"}
    for name, called in calls:
        assert len(set(called)) == 1, (name, called)


@pytest.mark.parametrize("account", ACCOUNTS)
def test_counter_key_slots_layout_keys_share_the_account_tag(account: int) -> None:
    keys = CounterKeys(PREFIX)
    names = [
        keys.balance(account),
        keys.holds(account),
        keys.stream(account),
        *(keys.spend(account, 7, period, NOW) for period in ("daily", "weekly", "monthly")),
        keys.window(account, "rpm", 7, 29_000_000),
        keys.window(account, "tpm", 7, 29_000_000),
    ]
    assert _slots(names) == {key_slot(f"a{account}".encode())}

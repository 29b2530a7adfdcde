"""One contract, two backends: the embedded store and Redis must behave identically."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from billing.counters import (
    Adjust,
    Check,
    CounterStore,
    CounterStoreUnavailable,
    EmbeddedCounterStore,
    Enqueue,
    Hold,
    RedisCounterStore,
    account_key,
    settlement_stream,
)
from tests.fakes.redis_cluster import delete_prefix


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["embedded", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[CounterStore]:
    if request.param == "embedded":
        yield EmbeddedCounterStore()
        return
    if request.param == "redis-cluster":
        cluster_url = request.getfixturevalue("redis_cluster_url")
        cluster_store = RedisCounterStore.from_url(cluster_url, prefix=redis_prefix)
        yield cluster_store
        await cluster_store.close()
        await delete_prefix(cluster_url, redis_prefix)
        return
    redis_store = RedisCounterStore.from_url(request.getfixturevalue("redis_url"), prefix=redis_prefix)
    yield redis_store
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    keys = [key async for key in client.scan_iter(match=redis_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await redis_store.close()


@pytest.fixture
def key(redis_prefix: str) -> str:
    return account_key(redis_prefix, 42, "balance")


async def test_counter_store_apply_within_bound(store: CounterStore, key: str) -> None:
    result = await store.apply([Check(key, "spend", 30, limit=100)])
    assert result.ok
    assert await store.get(key, "spend") == 30


async def test_counter_store_apply_returns_every_count_after_it(store: CounterStore, key: str) -> None:
    """A success answers each check's value after the apply, in order (the rate-limit headers
    read them from here), including a check with no bound."""
    await store.adjust([Adjust(key, "rpm", 2)])
    result = await store.apply([Check(key, "rpm", 1, limit=5), Check(key, "held", 30), Check(key, "tpm", 7, limit=9)])
    assert result.ok and result.counts == (3, 30, 7)
    refused = await store.apply([Check(key, "rpm", 3, limit=5)])
    assert not refused.ok and refused.counts == ()


async def test_counter_store_refusal_changes_nothing(store: CounterStore, key: str, redis_prefix: str) -> None:
    other = account_key(redis_prefix, 42, "key7")
    await store.adjust([Adjust(key, "spend", 90)])
    result = await store.apply([Check(other, "spend", 5, limit=100), Check(key, "spend", 20, limit=100)])
    assert not result.ok
    assert (result.failed, result.missing, result.value, result.cap) == (1, False, 90, 100)
    assert await store.get(other, "spend") is None
    assert await store.get(key, "spend") == 90


async def test_counter_store_first_failing_check_is_reported(store: CounterStore, key: str) -> None:
    result = await store.apply([Check(key, "a", 5, limit=1), Check(key, "b", 5, limit=1)])
    assert (result.ok, result.failed) == (False, 0)


async def test_counter_store_limit_field_caps_by_another_field(store: CounterStore, key: str) -> None:
    await store.adjust([Adjust(key, "bal", 100)])
    assert (await store.apply([Check(key, "held", 60, limit_field="bal")])).ok
    refused = await store.apply([Check(key, "held", 41, limit_field="bal")])
    assert (refused.ok, refused.value, refused.cap) == (False, 60, 100)
    assert (await store.apply([Check(key, "held", 40, limit_field="bal")])).ok
    assert await store.get_all(key) == {"bal": 100, "held": 100}


async def test_counter_store_missing_fields(store: CounterStore, key: str) -> None:
    must = await store.apply([Check(key, "bal", 1, must_exist=True)])
    assert (must.ok, must.missing, must.value) == (False, True, None)
    cap_missing = await store.apply([Check(key, "held", 1, limit_field="bal")])
    assert (cap_missing.ok, cap_missing.missing) == (False, True)
    assert await store.get_all(key) == {}


async def test_counter_store_negative_delta_always_allowed(store: CounterStore, key: str) -> None:
    await store.adjust([Adjust(key, "spend", 500)])
    result = await store.apply([Check(key, "spend", -100, limit=10)])
    assert result.ok
    assert await store.get(key, "spend") == 400


async def test_counter_store_checks_see_values_before_the_apply(store: CounterStore, key: str) -> None:
    # Two checks on one field are each judged against the value before either delta.
    result = await store.apply([Check(key, "n", 6, limit=10), Check(key, "n", 6, limit=10)])
    assert result.ok
    assert await store.get(key, "n") == 12


async def test_counter_store_ttl_set_on_creation_only(store: CounterStore, key: str) -> None:
    if isinstance(store, EmbeddedCounterStore):
        clock = FakeClock()
        store = EmbeddedCounterStore(clock=clock)
        assert (await store.apply([Check(key, "rpm", 1, limit=5, ttl_ms=60_000)])).ok
        clock.now += 30
        assert (await store.apply([Check(key, "rpm", 1, limit=5, ttl_ms=60_000)])).ok
        clock.now += 31  # 61 s after creation: the window the first apply opened is over
        assert await store.get(key, "rpm") is None
        return
    # Redis keeps real time: no assertion here depends on how busy the machine is. A second
    # apply with a longer TTL leaves the first one's expiry alone (PTTL read directly), and the
    # window ends on its own within a generous deadline.
    assert isinstance(store, RedisCounterStore)
    assert (await store.apply([Check(key, "rpm", 1, limit=5, ttl_ms=60_000)])).ok
    assert (await store.apply([Check(key, "rpm", 1, limit=5, ttl_ms=600_000)])).ok
    assert 0 < await store._client.pttl(key) <= 60_000  # not extended to the second apply's 600 s
    await store.delete(key)
    assert (await store.apply([Check(key, "rpm", 1, limit=5, ttl_ms=300)])).ok
    deadline = time.monotonic() + 30
    while await store.get(key, "rpm") is not None:
        assert time.monotonic() < deadline, "the window never expired"
        await asyncio.sleep(0.05)


async def test_counter_store_hit_window_counts_up_to_the_limit_and_refusals_count_nothing(
    store: CounterStore, redis_prefix: str
) -> None:
    window = f"{redis_prefix}fn:abc:rl:1"
    hits = [await store.hit_window(window, 3, 60_000) for _ in range(5)]
    assert [(hit.allowed, hit.count) for hit in hits] == [(True, 1), (True, 2), (True, 3), (False, 3), (False, 3)]
    assert all(0 < hit.ttl_ms <= 60_000 for hit in hits)
    assert await store.get(window, "hits") == 3  # the refused hits left no trace
    refused = await store.hit_window(f"{redis_prefix}fn:abc:rl:2", 0, 60_000)
    assert (refused.allowed, refused.count) == (False, 0)


async def test_counter_store_hit_window_is_atomic_under_concurrency(store: CounterStore, redis_prefix: str) -> None:
    window = f"{redis_prefix}fn:abc:rl:1"
    hits = await asyncio.gather(*(store.hit_window(window, 40, 60_000) for _ in range(150)))
    assert sum(hit.allowed for hit in hits) == 40
    assert sorted(hit.count for hit in hits if hit.allowed) == list(range(1, 41))
    assert await store.get(window, "hits") == 40


async def test_counter_store_hit_window_ends_after_its_ttl(store: CounterStore, redis_prefix: str) -> None:
    window = f"{redis_prefix}fn:abc:rl:1"
    if isinstance(store, EmbeddedCounterStore):
        clock = FakeClock()
        store = EmbeddedCounterStore(clock=clock)
        assert (await store.hit_window(window, 1, 60_000)).allowed
        clock.now += 30
        refused = await store.hit_window(window, 1, 600_000)
        assert (refused.allowed, refused.ttl_ms) == (False, 30_000)  # a later hit never extends it
        clock.now += 31
        assert (await store.hit_window(window, 1, 60_000)).allowed  # a new window
        return
    assert isinstance(store, RedisCounterStore)
    assert (await store.hit_window(window, 1, 60_000)).allowed
    assert not (await store.hit_window(window, 1, 600_000)).allowed
    assert 0 < await store._client.pttl(window) <= 60_000
    await store.delete(window)
    assert (await store.hit_window(window, 1, 300)).allowed
    deadline = time.monotonic() + 30
    while not (await store.hit_window(window, 1, 300)).allowed:
        assert time.monotonic() < deadline, "the window never ended"
        await asyncio.sleep(0.05)


async def test_counter_store_adjust_creates_and_adds(store: CounterStore, key: str) -> None:
    await store.adjust([Adjust(key, "held", 10), Adjust(key, "bal", -3), Adjust(key, "held", 5)])
    assert await store.get_all(key) == {"held": 15, "bal": -3}


async def test_counter_store_set_if_guards(store: CounterStore, key: str) -> None:
    assert await store.set_if(key, {"bal": 100}, "gen", None)
    assert not await store.set_if(key, {"bal": 1}, "gen", 3)
    await store.adjust([Adjust(key, "gen", 1)])
    assert not await store.set_if(key, {"bal": 2}, "gen", None)
    assert await store.set_if(key, {"bal": 200}, "gen", 1)
    assert await store.get_all(key) == {"bal": 200, "gen": 1}


async def test_counter_store_delete(store: CounterStore, key: str) -> None:
    await store.adjust([Adjust(key, "x", 1)])
    await store.delete(key)
    assert await store.get_all(key) == {}
    await store.ping()


async def test_counter_store_concurrent_reservations_never_overshoot(store: CounterStore, key: str) -> None:
    results = await asyncio.gather(*(store.apply([Check(key, "spend", 7, limit=500)]) for _ in range(200)))
    assert sum(r.ok for r in results) == 71
    assert await store.get(key, "spend") == 497


async def test_counter_store_redis_down_fails_fast() -> None:
    store = RedisCounterStore.from_url("redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(CounterStoreUnavailable):
        await store.apply([Check("k", "f", 1, limit=1)])
    with pytest.raises(CounterStoreUnavailable):
        await store.hit_window("k", 1, 1000)
    with pytest.raises(CounterStoreUnavailable):
        await store.ping()
    # Refused at once here; the bound only proves a dead Redis does not hang a request (its
    # timeouts are 2 s), with room for a busy machine.
    assert time.monotonic() - started < 30
    await store.close()


async def test_counter_store_holds_are_recorded_with_the_apply_and_released_once(
    store: CounterStore, key: str, redis_prefix: str
) -> None:
    holds = account_key(redis_prefix, 42, "holds")
    spend = account_key(redis_prefix, 42, "spend:1:2026-11")
    await store.adjust([Adjust(key, "bal", 100)])
    refused = await store.apply([Check(key, "held", 500, limit_field="bal")], Hold(holds, "req_x", "{}"))
    assert not refused.ok and await store.holds(holds) == {}  # a refused apply records nothing
    taken = await store.apply(
        [Check(spend, "v", 30), Check(key, "held", 30, limit_field="bal")], Hold(holds, "req_1", '{"a":30}')
    )
    assert taken.ok and await store.holds(holds) == {"req_1": '{"a":30}'}
    back = [Adjust(key, "held", -30), Adjust(spend, "v", -30)]
    charge = [Adjust(key, "bal", -7), Adjust(spend, "v", 7)]
    assert await store.release(holds, "req_1", if_held=back, always=charge) is True
    assert await store.release(holds, "req_1", if_held=back, always=[]) is False  # the sweeper, too late
    assert await store.get_all(key) == {"bal": 93, "held": 0}
    assert await store.get(spend, "v") == 7
    assert await store.holds(holds) == {}


async def test_counter_store_release_buffers_a_settlement_with_its_counters(
    store: CounterStore, key: str, redis_prefix: str
) -> None:
    holds = account_key(redis_prefix, 42, "holds")
    stream = settlement_stream(redis_prefix, 42)
    await store.adjust([Adjust(key, "bal", 100)])
    assert (await store.apply([Check(key, "held", 30, limit_field="bal")], Hold(holds, "req_1", "{}"))).ok
    settle = Enqueue(stream, key, "pend", b"settled req_1", 7)
    assert await store.release(holds, "req_1", if_held=[Adjust(key, "held", -30)], always=[], enqueue=settle)
    assert await store.get_all(key) == {"bal": 100, "held": 0, "pend": 7}
    # The sweeper's bill goes in only if it is the one that removed the hold: here it is too late.
    late = Enqueue(stream, key, "pend", b"checkpoint req_1", 5, only_if_held=True)
    assert not await store.release(holds, "req_1", if_held=[], always=[], enqueue=late)
    assert await store.queued_settlements(stream) == 1
    assert await store.queued_settlements() == 1
    assert await store.settlement_streams() == [stream]
    assert [entry.data for entry in await store.claim_settlements(stream, "writer-a", 10)] == [b"settled req_1"]


async def test_counter_store_settlement_streams_are_claimed_acknowledged_and_taken_over(
    store: CounterStore, key: str, redis_prefix: str
) -> None:
    stream = settlement_stream(redis_prefix, 42)
    holds = account_key(redis_prefix, 42, "holds")
    assert await store.queued_settlements() == 0 and await store.settlement_streams() == []
    for name, cost in (("one", 3), ("two", 4)):
        enqueue = Enqueue(stream, key, "pend", name.encode(), cost)
        await store.release(holds, name, if_held=[], always=[], enqueue=enqueue)
    assert await store.get(key, "pend") == 7
    first = await store.claim_settlements(stream, "writer-a", 10)
    assert [(entry.data, entry.cost) for entry in first] == [(b"one", 3), (b"two", 4)]
    again = await store.claim_settlements(stream, "writer-a", 10)  # not acknowledged: still ours
    assert [entry.data for entry in again] == [b"one", b"two"]
    assert await store.claim_settlements(stream, "writer-b", 10) == []  # not another writer's
    assert await store.ack_settlements(stream, key, "pend", first[:1]) == 3
    assert await store.ack_settlements(stream, key, "pend", first[:1]) == 0  # a second ack counts nothing
    assert await store.get(key, "pend") == 4
    assert await store.queued_settlements(stream) == 1
    # Another writer takes over what a dead one left, once it has been idle long enough.
    assert await store.claim_settlements(stream, "writer-b", 10, idle_ms=60_000) == []
    await asyncio.sleep(0.05)
    taken = await store.claim_settlements(stream, "writer-b", 10, idle_ms=10)
    assert [entry.data for entry in taken] == [b"two"]
    assert await store.claim_settlements(stream, "writer-a", 10) == []  # no longer writer-a's
    assert await store.ack_settlements(stream, key, "pend", taken) == 4
    assert await store.ack_settlements(stream, key, "pend", again[1:]) == 0  # the dead writer wakes up: nothing
    assert await store.get(key, "pend") == 0
    assert await store.queued_settlements() == 0 and await store.settlement_streams() == []


async def test_counter_store_an_ack_bumps_the_generation_once(store: CounterStore, key: str, redis_prefix: str) -> None:
    """A refresh guarded by the generation must see that an ack lowered the pending sum."""
    stream = settlement_stream(redis_prefix, 42)
    holds = account_key(redis_prefix, 42, "holds")
    await store.release(holds, "one", if_held=[], always=[], enqueue=Enqueue(stream, key, "pend", b"one", 3))
    await store.adjust([Adjust(key, "gen", 5)])
    claimed = await store.claim_settlements(stream, "writer-a", 10)
    assert await store.ack_settlements(stream, key, "pend", claimed, "gen") == 3
    assert await store.ack_settlements(stream, key, "pend", claimed, "gen") == 0  # nothing acked: no bump
    assert await store.get_all(key) == {"pend": 0, "gen": 6}


async def test_counter_store_update_hold_never_resurrects(store: CounterStore, key: str, redis_prefix: str) -> None:
    holds = account_key(redis_prefix, 42, "holds")
    await store.adjust([Adjust(key, "bal", 100)])
    assert (await store.apply([Check(key, "held", 10, limit_field="bal")], Hold(holds, "req_1", "v1"))).ok
    assert await store.update_hold(holds, "req_1", "v2") is True
    assert await store.holds(holds) == {"req_1": "v2"}
    await store.release(holds, "req_1", if_held=[Adjust(key, "held", -10)], always=[])
    assert await store.update_hold(holds, "req_1", "v3") is False  # a late checkpoint after settling
    assert await store.holds(holds) == {}


async def test_redis_store_reloads_scripts_the_server_forgot(redis_url: str, redis_prefix: str) -> None:
    """After a Redis restart (or SCRIPT FLUSH) the scripts are loaded again on first use."""
    import redis.asyncio as aioredis

    store = RedisCounterStore.from_url(redis_url, prefix=redis_prefix)
    key = account_key(redis_prefix, 42, "balance")
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert (await store.apply([Check(key, "n", 1, limit=5)])).ok
        await client.script_flush()
        assert (await store.apply([Check(key, "n", 1, limit=5)])).ok
        assert await store.get(key, "n") == 2
    finally:
        await client.delete(key)
        await client.aclose()
        await store.close()


async def test_redis_store_shares_round_trips_between_concurrent_scripts(redis_url: str, redis_prefix: str) -> None:
    """Scripts called in the same event-loop turn go out as one pipeline, and each keeps its own
    answer: refusals, results and errors reach the caller that made the call."""
    store = RedisCounterStore.from_url(redis_url, prefix=redis_prefix)
    key = account_key(redis_prefix, 7, "balance")
    sent: list[int] = []
    original = store._scripts._send

    async def counting(batch: Any) -> None:
        sent.append(len(batch))
        await original(batch)

    store._scripts._send = counting  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(*(store.apply([Check(key, "n", 1, limit=10)]) for _ in range(25)))
        assert [r.ok for r in results].count(True) == 10
        assert all(r.value == 10 and r.cap == 10 for r in results if not r.ok)
        assert sum(sent) == 25 and len(sent) < 25  # fewer round trips than scripts
        release = store.release(account_key(redis_prefix, 7, "holds"), "nobody", if_held=[], always=[])
        assert list(await asyncio.gather(store.get(key, "n"), release)) == [10, False]
    finally:
        await store.delete(key)
        await store.close()

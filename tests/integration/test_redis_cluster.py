"""Tollway on a real Redis Cluster: two ``tollway serve`` processes share one three-master
cluster (``tests/fakes/redis_cluster.py``), the test Postgres and a fake OpenAI upstream.

Accounts 1 to 4 hash to all three masters (the hash tags ``{a1}``, ``{a2}`` and ``{a4}`` fall in
the three thirds of the slots; :func:`test_redis_cluster_accounts_of_the_tests_span_every_master`
checks it), so the scripts, streams and scans below run on every node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing.counters import Adjust, CounterStoreUnavailable, Enqueue, RedisCounterStore, account_key
from billing.counters.redis import ScriptBatcher
from billing.layout import CounterKeys
from billing.writer import SettlementWriter
from gateway.db import create_engine, create_sessionmaker
from tests.fakes.gateway_fixtures import ADMIN_TOKEN
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.redis_cluster import RedisCluster, delete_prefix, free_ports
from tests.fakes.servers import ThreadedServer
from tests.integration import test_two_processes as two_processes
from tests.integration.test_two_processes import _all_ledger, auth, reconciles, start_gateways, stop, wait_refused

# Never beside test_two_processes.py on another worker (tests/fakes/exclusive.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("alone_among_workers")]

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODEL = "fake/gpt"
# A worst case of ~0.12 credits reserved per call; the fake's answer costs ~0.006.
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 200}


@dataclass
class Gateways:
    urls: list[str]
    config: Path  # the same settings, for the CLI (reconcile)
    cluster_url: str
    prefix: str


def _config(postgres_url: str, cluster_url: str, prefix: str, upstream: str, api_key: str) -> str:
    return (
        f'database_url = "{postgres_url}"\nredis_url = "{cluster_url}"\nredis_prefix = "{prefix}"\n'
        f'bootstrap = false\nadmin_token = "{ADMIN_TOKEN}"\ndemo_provider = false\n'
        "balance_refresh_s = 0.5\nsettlement_scan_s = 0.5\n"
        f'[providers.fake]\nkind = "openai"\nbase_url = "{upstream}/v1"\napi_key = "{api_key}"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\nupstream_model = "gpt-4o-mini"\n'
    )


@pytest.fixture
def cluster_gateways(
    tmp_path: Path, postgres_url: str, redis_cluster_url: str, redis_prefix: str
) -> Iterator[Gateways]:
    fake = FakeOpenAI(response_delay_s=0.01)  # long enough for concurrent calls to overlap
    upstream = ThreadedServer(fake).start()
    text = _config(postgres_url, redis_cluster_url, redis_prefix, upstream.url, fake.api_key)
    try:
        urls, processes = start_gateways(text, tmp_path)
        try:
            yield Gateways(urls, tmp_path / "tollway.toml", redis_cluster_url, redis_prefix)
        finally:
            stop(processes)
    finally:
        upstream.stop()
        asyncio.run(delete_prefix(redis_cluster_url, redis_prefix))


def _account(url: str, name: str, credits: str) -> tuple[int, str]:
    """A new account and a key that manages it."""
    account = httpx.post(url + "/api/admin/accounts/", json={"name": name, "credits": credits}, headers=ADMIN).json()
    key = httpx.post(url + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "m"}, headers=ADMIN).json()
    return int(account["id"]), str(key["key"])


async def _fire(urls: list[str], count: int, key: str) -> list[httpx.Response]:
    """``count`` calls at once, alternating between the two processes."""
    # The timeout only catches a hang (the suite's other worker shares the two cores): 180 s.
    async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=100)) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(urls[i % len(urls)] + "/v1/chat/completions", json=BODY, headers=auth(key))
                    for i in range(count)
                )
            )
        )


def _spent(responses: list[httpx.Response]) -> Decimal:
    return sum((Decimal(r.json()["_tollway"]["credits_used"]) for r in responses if r.status_code == 200), Decimal(0))


def _masters(cluster: RedisCluster, accounts: list[int]) -> set[int]:
    """The masters that hold these accounts' keys."""
    return {cluster.port_of(account_key("tw:", account, "balance")) for account in accounts}


def test_redis_cluster_accounts_of_the_tests_span_every_master(redis_cluster: RedisCluster) -> None:
    assert _masters(redis_cluster, [1, 2, 3, 4]) == set(redis_cluster.ports)


def test_redis_cluster_two_gateways_share_balances_limits_and_the_write_behind(cluster_gateways: Gateways) -> None:
    """Across two processes on the cluster: no overspend on a small balance, a key's spending
    limit and rpm hold, every served call is debited exactly once (the write-behind loses and
    doubles nothing, on streams on every master), and reconcile is clean afterwards."""
    first, second = urls = cluster_gateways.urls
    accounts = [_account(first, f"acct{i}", "0.5") for i in range(4)]
    assert [account_id for account_id, _key in accounts] == [1, 2, 3, 4]  # on all three masters
    served: dict[str, list[httpx.Response]] = {}
    for _account_id, key in accounts:
        # A small balance raced by 100 calls at once over both processes: about four fit at a
        # time, and even served one by one 100 × ~0.006 exceeds 0.5, so 402s come whatever the
        # timing (60 fitted whole once when the calls happened not to overlap).
        responses = asyncio.run(_fire(urls, 100, key))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 402} and statuses.count(200) > 0 and statuses.count(402) > 0, statuses
        served[key] = responses

    # A key's spending limit, across both processes.
    _id, manager = accounts[0]
    capped = httpx.post(
        first + "/api/keys/", json={"name": "capped", "spending_limit": "0.05"}, headers=auth(manager)
    ).json()["key"]
    limited = asyncio.run(_fire(urls, 30, capped))
    assert {r.status_code for r in limited} <= {200, 402} and any(r.status_code == 402 for r in limited)
    assert _spent(limited) <= Decimal("0.05")
    served[manager] += limited

    # A key's requests per minute, counted in one window shared by both processes.
    _id, other = accounts[3]
    paced = httpx.post(first + "/api/keys/", json={"name": "paced", "rpm_limit": 4}, headers=auth(other)).json()
    for _attempt in range(3):
        minute = int(time.time() // 60)
        calls = [
            httpx.post(urls[i % 2] + "/v1/chat/completions", json=BODY, headers=auth(paced["key"]), timeout=120)
            for i in range(10)
        ]
        if int(time.time() // 60) == minute:  # one window: a minute boundary would open another
            break
    statuses = [r.status_code for r in calls]
    assert statuses.count(200) == 4 and statuses.count(429) == 6, statuses
    served[other] += calls

    for account_id, key in accounts:
        answered = [r for r in served[key] if r.status_code == 200]
        credits = httpx.get(second + "/api/credits/", headers=auth(key)).json()
        assert Decimal(credits["balance"]) >= 0, account_id  # never below zero
        assert Decimal(credits["balance"]) == Decimal("0.5") - _spent(answered), account_id
        debits = [e["request_id"] for e in _all_ledger(second, key) if e["kind"] == "debit"]
        assert sorted(debits) == sorted(r.headers["x-request-id"] for r in answered), account_id
    asyncio.run(_streams_drain(cluster_gateways))
    reconciles(cluster_gateways.config)


async def _streams_drain(gateways: Gateways, seconds: float = 30.0) -> None:
    """Every settlement stream, on every master, ends empty: the writers took all of it."""
    store = RedisCounterStore.from_url(gateways.cluster_url, prefix=gateways.prefix)
    try:
        deadline = time.monotonic() + seconds
        while (queued := await store.queued_settlements()) != 0:
            assert time.monotonic() < deadline, f"{queued} settlements never written"
            await asyncio.sleep(0.2)
    finally:
        await store.close()


def test_redis_cluster_two_gateways_see_browser_token_revocations(cluster_gateways: Gateways) -> None:
    first, second = cluster_gateways.urls
    _id, manager = _account(first, "acme", "5")
    key_id = httpx.post(first + "/api/keys/", json={"name": "browser"}, headers=auth(manager)).json()["id"]

    def mint() -> str:
        minted = httpx.post(first + "/api/keys/ephemeral/", json={"key_id": key_id, "ttl": 600}, headers=auth(manager))
        assert minted.status_code in (200, 201), minted.text
        return str(minted.json()["data"]["token"])

    one, two, three = mint(), mint(), mint()
    for url in cluster_gateways.urls:
        for token in (one, two, three):
            response = httpx.post(url + "/v1/chat/completions", json=BODY, headers=auth(token), timeout=120)
            assert response.status_code == 200, response.text
    # One token, revoked through the second process: refused by both.
    revoked = httpx.post(second + "/api/keys/ephemeral/revoke/", json={"token": one}, headers=auth(manager))
    assert revoked.status_code in (200, 204), revoked.text
    wait_refused(first, one)
    wait_refused(second, one)
    assert httpx.post(first + "/v1/chat/completions", json=BODY, headers=auth(two), timeout=120).status_code == 200
    # Every token of the key at once (its generation), through the first: refused by both.
    assert httpx.post(first + f"/api/keys/{key_id}/revoke-tokens/", headers=auth(manager)).status_code in (200, 204)
    for token in (two, three):
        wait_refused(second, token)
        wait_refused(first, token)


async def test_redis_cluster_writer_discovers_streams_on_every_master(
    redis_cluster: RedisCluster, redis_cluster_url: str, redis_prefix: str
) -> None:
    """A writer finds the buffers that processes which died left behind, whichever master holds
    them: one SCAN would see a third of them."""
    store = RedisCounterStore.from_url(redis_cluster_url, prefix=redis_prefix)
    keys = CounterKeys(redis_prefix)
    engine = create_engine("sqlite+aiosqlite://")  # never reached: discovery reads only Redis
    writer = SettlementWriter(store, engine, create_sessionmaker(engine), keys)
    accounts = list(range(1, 13))
    assert _masters(redis_cluster, accounts) == set(redis_cluster.ports)
    try:
        for account in accounts:
            enqueue = Enqueue(keys.stream(account), keys.balance(account), "pend", b"left behind", 1)
            await store.release(keys.holds(account), "r", if_held=[], always=[], enqueue=enqueue)
        assert await writer.discover_buffers() == len(accounts)
        assert sorted(await store.settlement_streams()) == sorted(keys.stream(a) for a in accounts)
        assert await store.queued_settlements() == len(accounts)
    finally:
        await store.close()
        await engine.dispose()


async def test_redis_cluster_scripts_reload_on_every_node_and_batches_split_by_node(
    redis_cluster: RedisCluster, redis_cluster_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that forgot its scripts (restart, failover, SCRIPT FLUSH) gets them again; calls made
    in one event-loop turn for accounts on different masters go out as one pipeline per master,
    and each caller gets its own answer."""
    import redis.asyncio as aioredis

    store = RedisCounterStore.from_url(redis_cluster_url, prefix=redis_prefix)
    pipelines: list[set[int]] = []  # the masters of the keys each pipeline carried
    send = ScriptBatcher._send

    async def recording(self: ScriptBatcher, batch: Any) -> None:
        pipelines.append({redis_cluster.port_of(keys[0]) for _script, keys, _args, _result in batch})
        await send(self, batch)

    monkeypatch.setattr(ScriptBatcher, "_send", recording)
    accounts = list(range(1, 10))
    try:
        for _round in range(2):
            for node in redis_cluster.plain_urls:
                client = aioredis.Redis.from_url(node)
                await client.script_flush()
                await client.aclose()
            pipelines.clear()
            await asyncio.gather(
                *(store.adjust([Adjust(account_key(redis_prefix, a, "balance"), "bal", a)]) for a in accounts)
            )
            assert sorted(next(iter(masters)) for masters in pipelines) == sorted(redis_cluster.ports)
            assert all(len(masters) == 1 for masters in pipelines)  # never two masters in one pipeline
        values = await asyncio.gather(*(store.get(account_key(redis_prefix, a, "balance"), "bal") for a in accounts))
        assert values == [2 * a for a in accounts]  # each applied exactly once per round
    finally:
        await store.close()


@pytest.fixture
def own_cluster(tmp_path: Path, redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    """A cluster of its own, to kill a master of; the cluster waits a minute before it fails a
    silent node, so the live masters keep answering meanwhile (``redis_cluster``: the skip)."""
    cluster = RedisCluster(tmp_path, redis_cluster.server, node_timeout_ms=60_000)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


async def test_redis_cluster_a_dead_master_fails_its_own_calls_and_applies_nothing_twice(
    own_cluster: RedisCluster,
) -> None:
    """A master dies while a batch for accounts on every master is sent: its accounts' calls
    fail closed (``CounterStoreUnavailable``) and no script runs twice. (Sent as one cluster
    pipeline, redis-py retries the whole pipeline and reruns every script whose answer was 0:
    one adjust applied eleven times here, and every caller told it failed.)"""
    import redis.asyncio as aioredis

    from billing.counters import CounterStoreUnavailable
    from billing.counters.redis import _ADJUST

    store = RedisCounterStore.from_url(own_cluster.url, prefix="tw:")
    accounts = list(range(1, 10))
    keys = [account_key("tw:", account, "balance") for account in accounts]
    dead = own_cluster.ports[1]
    try:
        await store._client.initialize()  # the slots known; no connection to the dead one yet
        for url in own_cluster.plain_urls:  # the script known everywhere (no NOSCRIPT round)
            client = aioredis.Redis.from_url(url)
            await client.script_load(_ADJUST)
            await client.aclose()
        own_cluster.processes[1].kill()
        own_cluster.processes[1].wait(timeout=10)
        results = await asyncio.gather(*(store.adjust([Adjust(key, "n", 1)]) for key in keys), return_exceptions=True)
        for key, result in zip(keys, results, strict=True):
            if own_cluster.port_of(key) == dead:
                assert isinstance(result, CounterStoreUnavailable), key
                continue
            applied = await store.get(key, "n")
            assert applied in (None, 1), (key, applied)  # at most once
            if result is None:  # told it was applied: it was
                assert applied == 1, key
            else:
                assert isinstance(result, CounterStoreUnavailable), (key, result)
        assert any(result is None for result in results)  # the live masters still answered
    finally:
        await store.close()


# The two-process scenarios of test_two_processes.py, on the cluster (called through the module,
# so that pytest does not collect them here a second time on the plain Redis).


def test_redis_cluster_a_process_killed_mid_batch_loses_no_debit(
    tmp_path: Path, postgres_url: str, redis_cluster_url: str, redis_prefix: str
) -> None:
    """The survivor's writer finds the dead writer's stream by scanning every master, takes over
    its claimed entries and writes each exactly once."""
    try:
        two_processes.test_a_process_killed_mid_batch_loses_no_debit(
            tmp_path, postgres_url, redis_cluster_url, redis_prefix
        )
    finally:
        asyncio.run(delete_prefix(redis_cluster_url, redis_prefix))


def test_redis_cluster_a_killed_process_does_not_hold_credits_forever(
    tmp_path: Path, postgres_url: str, redis_cluster_url: str, redis_prefix: str
) -> None:
    try:
        two_processes.test_a_killed_process_does_not_hold_credits_forever(
            tmp_path, postgres_url, redis_cluster_url, redis_prefix
        )
    finally:
        asyncio.run(delete_prefix(redis_cluster_url, redis_prefix))


async def test_redis_cluster_a_dead_first_seed_is_passed_over(redis_cluster: RedisCluster, redis_prefix: str) -> None:
    """``redis+cluster://a,b``: a gateway starting while the first seed is down learns the
    cluster from the next; named alone, the dead seed fails closed."""
    (dead,) = free_ports(1)
    key = account_key(redis_prefix, 1, "balance")
    seeded = RedisCounterStore.from_url(
        f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{redis_cluster.ports[1]}", prefix=redis_prefix
    )
    alone = RedisCounterStore.from_url(f"redis+cluster://127.0.0.1:{dead}", prefix=redis_prefix)
    try:
        await seeded.ping()
        await seeded.adjust([Adjust(key, "bal", 5)])
        assert await seeded.get(key, "bal") == 5
        with pytest.raises(CounterStoreUnavailable):
            await alone.ping()
    finally:
        await seeded.close()
        await alone.close()

"""The opt-in response cache through the real app with the official ``openai`` client, on both
backends (SQLite + the embedded store, Postgres + Redis): one upstream call for two identical
requests, two usage rows, the hit priced as configured to the micro-credit, the books clean."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import update

from billing.accounts import create_account
from billing.counters import RedisCounterStore
from gateway.cache import RedisResponseStore
from gateway.db import create_engine, create_sessionmaker
from gateway.pipeline.cached import CACHE_HIT, hit_price_micro
from gateway.reconcile import reconcile
from gateway.settings import ResponseCacheSettings
from keys.models import ApiKey
from keys.service import create_key
from tests.fakes.gateway_fixtures import (
    FAKE_MODEL,
    Backend,
    Gateway,
    _with_session,
    expected_cost_micro,
    gateway_settings,
    start_gateway,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

OPENING = 500_000_000
TTL_S = 600
COST = expected_cost_micro(prompt=21, completion=5)
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]

Start = Callable[..., tuple[Gateway, ThreadedServer]]


@pytest.fixture
def start(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Start]:
    """Start a gateway with these response_cache settings (the server is returned for tests
    that reach into its state)."""
    servers: list[ThreadedServer] = []

    def started(**cache: Any) -> tuple[Gateway, ThreadedServer]:
        settings = gateway_settings(backend, fake_openai, response_cache=ResponseCacheSettings(**cache))
        gateway, server = start_gateway(settings, fake_openai, credits_micro=OPENING)
        servers.append(server)
        return gateway, server

    yield started
    for server in servers:
        server.stop()


def client(gateway: Gateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key or gateway.key, max_retries=0)


def enable_cache(gateway: Gateway, ttl_s: int = TTL_S) -> None:
    """The key's owner turns the cache on through the key API, as the dashboard form does."""
    response = httpx.get(gateway.url + "/api/keys/", headers={"Authorization": f"Bearer {gateway.key}"})
    (key,) = response.json()["keys"]
    assert key["cache_ttl_s"] == 0
    patched = httpx.patch(
        gateway.url + f"/api/keys/{key['id']}",
        json={"cache_ttl_s": ttl_s},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["cache_ttl_s"] == ttl_s
    gateway.clock.advance(gateway.settings.key_cache_ttl_s + 0.1)  # past the resolver's cache


def upstream_calls(gateway: Gateway) -> int:
    return sum(1 for request in gateway.fake.received if request.path == "/v1/chat/completions")


def ask(gateway: Gateway, key: str | None = None, **headers: str) -> tuple[Any, Any]:
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model=FAKE_MODEL, messages=MESSAGES, extra_headers=headers or None
    )
    return raw.parse(), raw.headers


def assert_reconciles(gateway: Gateway) -> None:
    """``tollway billing reconcile``'s checks (called directly: the CLI would set up logging)."""
    gateway.settled()
    settings = gateway.settings

    async def check() -> None:
        counters = (
            RedisCounterStore.from_url(settings.redis_url, prefix=settings.redis_prefix) if settings.redis_url else None
        )
        engine = create_engine(settings.database_url)
        try:
            report = await reconcile(
                create_sessionmaker(engine), counters=counters, prefix=settings.redis_prefix, now=datetime.now(UTC)
            )
        finally:
            await engine.dispose()
            if counters is not None:
                await counters.close()
        assert report.ok and report.debits >= 1, (report.drift, report.parked)

    gateway.run(check())


@pytest.mark.parametrize("per_mille", [0, 250])
def test_response_cache_second_call_is_a_priced_hit(start: Start, per_mille: int) -> None:
    gateway, _server = start(price_per_mille=per_mille)
    enable_cache(gateway)
    first, first_headers = ask(gateway)
    second, second_headers = ask(gateway)

    assert upstream_calls(gateway) == 1
    assert first_headers["x-tollway-cache"] == "miss" and second_headers["x-tollway-cache"] == "hit"
    assert second.choices[0].message.content == first.choices[0].message.content == "Hello from the fake upstream"
    price = hit_price_micro(COST, per_mille)
    assert price == (0 if per_mille == 0 else -(-COST // 4))  # a quarter, rounded up to the micro-credit
    meta = second.model_extra["_tollway"]
    assert meta["cache"] == "hit" and meta["request_id"] == second_headers["x-request-id"]
    assert (meta["input_tokens"], meta["output_tokens"], meta["model_used"]) == (21, 5, FAKE_MODEL)
    assert "cache" not in first.model_extra["_tollway"]

    missed, hit = gateway.usage_records()
    assert (missed.credits_micro, missed.error_code, missed.status_code) == (COST, "", 200)
    assert (hit.request_id, hit.credits_micro, hit.error_code, hit.status_code) == (
        second_headers["x-request-id"],
        price,
        CACHE_HIT,
        200,
    )
    assert gateway.balance_micro() == OPENING - COST - price
    assert gateway.debit_count(hit.request_id) == (1 if price else 0)
    assert_reconciles(gateway)


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no_usage"])
def test_response_cache_stream_is_replayed_as_a_stream(start: Start, include_usage: bool) -> None:
    gateway, _server = start(price_per_mille=100)
    enable_cache(gateway)

    def streamed() -> tuple[list[Any], Any]:
        with client(gateway).chat.completions.with_streaming_response.create(
            model=FAKE_MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": include_usage},
        ) as response:
            return list(response.parse()), response.headers

    live, live_headers = streamed()
    replayed, replayed_headers = streamed()
    assert upstream_calls(gateway) == 1
    assert (live_headers["x-tollway-cache"], replayed_headers["x-tollway-cache"]) == ("miss", "hit")
    assert replayed_headers["content-type"].startswith("text/event-stream")

    def text(chunks: list[Any]) -> str:
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    assert text(replayed) == text(live) == "Hello from the fake upstream"
    assert len(replayed) == len(live)
    assert [chunk.model for chunk in replayed] == [chunk.model for chunk in live]
    last = replayed[-1]
    if include_usage:
        assert last.usage is not None and last.usage.prompt_tokens == 21 and not last.choices
    else:  # as live: no usage-only chunk for a client that did not ask, the cost on the last chunk
        assert all(chunk.choices for chunk in replayed) and "_tollway" in live[-1].model_extra
    price = hit_price_micro(COST, 100)
    meta = last.model_extra["_tollway"]
    assert meta["cache"] == "hit" and meta["request_id"] == replayed_headers["x-request-id"]
    live_record, hit = gateway.usage_records()
    assert live_record.streamed and hit.streamed and hit.error_code == CACHE_HIT and hit.credits_micro == price
    assert gateway.balance_micro() == OPENING - COST - price
    # A plain request is not served from the stream's entry: each shape replays as it was sent.
    ask(gateway)
    assert upstream_calls(gateway) == 2
    assert_reconciles(gateway)


def test_response_cache_never_shared_across_accounts(start: Start) -> None:
    gateway, _server = start()
    enable_cache(gateway)

    async def second_account(session: Any) -> str:
        account = await create_account(session, "globex", email="ops@globex.test", credits_micro=OPENING)
        key, plaintext = await create_key(session, account.id, "other key")
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(cache_ttl_s=TTL_S))
        await session.commit()
        return plaintext

    other = gateway.run(_with_session(gateway.settings, second_account))
    ask(gateway)
    _, headers = ask(gateway, key=other)
    assert headers["x-tollway-cache"] == "miss"
    assert upstream_calls(gateway) == 2
    _, headers = ask(gateway, key=other)  # the other account's own entry
    assert headers["x-tollway-cache"] == "hit" and upstream_calls(gateway) == 2


def test_response_cache_off_for_a_key_without_it(start: Start) -> None:
    gateway, _server = start()
    ask(gateway)
    _, headers = ask(gateway, **{"X-Tollway-Cache": "true"})  # a request cannot widen its key
    assert upstream_calls(gateway) == 2 and "x-tollway-cache" not in headers
    assert [record.error_code for record in gateway.usage_records()] == ["", ""]


def test_response_cache_request_headers_refresh_and_bypass(start: Start) -> None:
    gateway, _server = start()
    enable_cache(gateway)
    _, headers = ask(gateway, **{"X-Tollway-Cache": "no-store"})
    assert headers["x-tollway-cache"] == "bypass" and upstream_calls(gateway) == 1
    _, headers = ask(gateway)  # no-store stored nothing
    assert headers["x-tollway-cache"] == "miss" and upstream_calls(gateway) == 2
    _, headers = ask(gateway, **{"X-Tollway-Cache": "no-cache"})
    assert headers["x-tollway-cache"] == "refresh" and upstream_calls(gateway) == 3
    _, headers = ask(gateway)
    assert headers["x-tollway-cache"] == "hit" and upstream_calls(gateway) == 3
    with pytest.raises(openai.BadRequestError) as refused:
        ask(gateway, **{"X-Tollway-Cache": "sometimes"})
    assert refused.value.status_code == 400 and "X-Tollway-Cache" in refused.value.message
    with pytest.raises(openai.BadRequestError):
        ask(gateway, **{"X-Tollway-Cache-TTL": "-5"})


def test_response_cache_expired_entry_goes_upstream(start: Start, backend: Backend) -> None:
    gateway, _server = start()
    enable_cache(gateway, ttl_s=60)
    _, headers = ask(gateway, **{"X-Tollway-Cache-TTL": "30"})  # shorter than the key allows
    ask(gateway)
    assert upstream_calls(gateway) == 1
    if backend.redis_url:
        ttl = gateway.run(_entry_ttls(gateway))
        assert len(ttl) == 1 and 0 < ttl[0] <= 30  # SET … EX 30
        gateway.run(_delete_entries(gateway))  # Redis keeps its own time: the entry is dropped as EX would
    else:
        gateway.clock.advance(31)
    _, headers = ask(gateway)
    assert headers["x-tollway-cache"] == "miss" and upstream_calls(gateway) == 2


def test_response_cache_store_down_goes_upstream(start: Start) -> None:
    gateway, server = start()
    enable_cache(gateway)
    state = server.app.state.gateway
    working, state.responses = state.responses, RedisResponseStore.from_url("redis://127.0.0.1:1/0")  # nothing listens
    try:
        for _ in range(2):
            answer, _headers = ask(gateway)
            assert answer.choices[0].message.content == "Hello from the fake upstream"
    finally:
        down, state.responses = state.responses, working
        gateway.run(down.close())
    assert upstream_calls(gateway) == 2
    assert [record.status_code for record in gateway.usage_records()] == [200, 200]


def test_response_cache_concurrent_identical_requests_stay_whole(start: Start) -> None:
    gateway, _server = start()
    enable_cache(gateway)
    gateway.fake.response_delay_s = 0.3  # usually both are in flight before either is stored
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: ask(gateway)[0], range(2)))
    gateway.fake.response_delay_s = 0.0
    went_upstream = upstream_calls(gateway)
    assert went_upstream in (1, 2)  # both may miss; neither fails nor reads half an entry
    replayed, headers = ask(gateway)
    assert headers["x-tollway-cache"] == "hit" and upstream_calls(gateway) == went_upstream
    assert {a.choices[0].message.content for a in [*answers, replayed]} == {"Hello from the fake upstream"}


def test_response_cache_large_request_is_not_cached(start: Start) -> None:
    gateway, _server = start(max_entry_bytes=4096)
    enable_cache(gateway)
    big: list[Any] = [{"role": "user", "content": "x" * 10_000}]
    for _ in range(2):
        raw = client(gateway).chat.completions.with_raw_response.create(model=FAKE_MODEL, messages=big)
        assert raw.headers["x-tollway-cache"] == "bypass"
    assert upstream_calls(gateway) == 2


async def _entry_keys(gateway: Gateway) -> list[bytes]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(gateway.settings.redis_url)
    try:
        return [key async for key in client.scan_iter(match=gateway.settings.redis_prefix + "*:rc:*")]
    finally:
        await client.aclose()


async def _entry_ttls(gateway: Gateway) -> list[int]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(gateway.settings.redis_url)
    try:
        return [int(await client.ttl(key)) for key in await _entry_keys(gateway)]
    finally:
        await client.aclose()


async def _delete_entries(gateway: Gateway) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(gateway.settings.redis_url)
    try:
        keys = await _entry_keys(gateway)
        assert keys
        await client.delete(*keys)
    finally:
        await client.aclose()


def test_response_cache_browser_token_inherits_its_key(start: Start) -> None:
    gateway, _server = start()
    enable_cache(gateway)
    key_id = httpx.get(gateway.url + "/api/keys/", headers={"Authorization": f"Bearer {gateway.key}"}).json()["keys"][
        0
    ]["id"]
    minted = httpx.post(
        gateway.url + "/api/keys/ephemeral/",
        json={"key_id": key_id, "ttl": 600},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    token = str(minted.json()["data"]["token"])
    ask(gateway)
    _, headers = ask(gateway, key=token)  # the same account and the key's own cache
    assert headers["x-tollway-cache"] == "hit" and upstream_calls(gateway) == 1

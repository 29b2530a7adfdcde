"""Postgres goes away for 30 s under load and comes back: calls keep being served (keys from
the cache, money from the mirrored balance in Redis), their settlements wait in the Redis
streams, and once the database is back every one of them is written exactly once and reconcile
passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.cli import main
from tests.fakes.gateway_fixtures import (
    FAKE_MODEL,
    Backend,
    Gateway,
    buffered_settlements,
    expected_cost_micro,
    gateway_settings,
    start_gateway,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.tcp_proxy import TcpProxy

OPENING = 500_000_000


@pytest.fixture
def proxied(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, TcpProxy]]:
    if backend.name != "postgres":
        pytest.skip("the outage is of Postgres; the embedded default has no network database")
    parts = urlsplit(backend.database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    url = backend.database_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    settings = gateway_settings(backend, fake_openai, database_url=url, balance_refresh_s=1.0, key_cache_ttl_s=0.5)
    gateway, server = start_gateway(settings, fake_openai)
    try:
        yield gateway, proxy
    finally:
        server.stop()
        proxy.stop()


def chat(gateway: Gateway, key: str | None = None) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key or gateway.key}"},
        timeout=15,
    )


OUTAGE_S = 30.0


def queued(gateway: Gateway) -> int:
    return int(asyncio.run(buffered_settlements(gateway.settings.redis_url, gateway.settings.redis_prefix)))


def load(gateway: Gateway, seconds: float, clients: int = 3) -> list[httpx.Response]:
    """Steady traffic from a few clients for ``seconds``."""

    async def client_loop(client: httpx.AsyncClient, until: float) -> list[httpx.Response]:
        answers = []
        while time.monotonic() < until:
            answers.append(
                await client.post(
                    gateway.v1 + "/chat/completions",
                    json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {gateway.key}"},
                )
            )
            await asyncio.sleep(0.05)
        return answers

    async def run() -> list[httpx.Response]:
        until = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=15) as client:
            batches = await asyncio.gather(*(client_loop(client, until) for _ in range(clients)))
        return [answer for batch in batches for answer in batch]

    return asyncio.run(run())


def test_a_database_outage_loses_no_debit(proxied: tuple[Gateway, TcpProxy], tmp_path: Path) -> None:
    gateway, proxy = proxied
    assert all(chat(gateway).status_code == 200 for _ in range(3))
    gateway.settled()
    proxy.cut()
    during = load(gateway, OUTAGE_S)  # the key's cache entry and the balance refresh go stale meanwhile
    assert len(during) > 50 and {r.status_code for r in during} == {200}
    assert queued(gateway) == len(during)  # every one of them waits in Redis
    unknown = chat(gateway, "prx-" + "1" * 48)  # not cached: nothing to vouch for it
    assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "keys_unavailable"

    proxy.restore()
    started = time.monotonic()
    while queued(gateway):
        assert time.monotonic() - started < 15, "the buffered settlements never reached the database"
        time.sleep(0.1)
    records = [r for r in gateway.usage_records() if r.status_code == 200]
    served = 3 + len(during)
    upstream_served = sum(1 for r in gateway.fake.received if r.path == "/v1/chat/completions")
    assert len(records) == served == upstream_served
    assert gateway.debit_counts() == {r.request_id: 1 for r in records}
    assert gateway.balance_micro() == OPENING - served * expected_cost_micro(21, 5)
    config = tmp_path / "reconcile.toml"
    settings = gateway.settings
    config.write_text(
        f'database_url = "{settings.database_url}"\nredis_url = "{settings.redis_url}"\n'
        f'redis_prefix = "{settings.redis_prefix}"\n'
    )
    assert main(["--config", str(config), "billing", "reconcile"]) == 0

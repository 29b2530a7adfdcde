"""A burst above ``max_in_flight_requests`` is shed with 503 ``overloaded`` and the process
recovers as soon as the requests in flight finish (gateway/overload.py).

The upstream holds every request at a gate the test opens, so "N requests in flight" is a
fact the test waits for, never a timing guess.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

HELD = 2
BODY = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


class GatedUpstream:
    """The fake OpenAI behind a gate: each request waits until the test opens it."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.gate = threading.Event()
        self.arrived = 0
        self._arrivals = threading.Condition()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with self._arrivals:
                self.arrived += 1
                self._arrivals.notify_all()
            await asyncio.to_thread(self.gate.wait)
        await self.fake(scope, receive, send)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        with self._arrivals:
            assert self._arrivals.wait_for(lambda: self.arrived >= count, timeout=timeout_s), self.arrived


@pytest.fixture
def gated(backend: Backend) -> Iterator[tuple[Gateway, GatedUpstream]]:
    fake = FakeOpenAI()
    upstream = GatedUpstream(fake)
    upstream_server = ThreadedServer(upstream).start()
    fake.url = upstream_server.url  # type: ignore[attr-defined]
    gw, server = start_gateway(gateway_settings(backend, fake, max_in_flight_requests=HELD), fake)
    try:
        yield gw, upstream
    finally:
        upstream.gate.set()
        server.stop()
        upstream_server.stop()


async def test_overload_sheds_past_the_cap_and_recovers(gated: tuple[Gateway, GatedUpstream]) -> None:
    gw, upstream = gated
    headers = {"Authorization": f"Bearer {gw.key}"}
    async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as client:
        held = [asyncio.create_task(client.post("/v1/chat/completions", json=BODY)) for _ in range(HELD)]
        await asyncio.to_thread(upstream.wait_for, HELD)

        refused = await client.post("/v1/chat/completions", json=BODY)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-request-id"].startswith("req_")
        error = refused.json()["error"]
        assert error["code"] == "overloaded"
        assert error["type"] == "server_error"
        assert isinstance(error["message"], str) and error["message"]
        # Our own API is shed too, but liveness is not: a balancer must not think the process dead.
        assert (await client.get("/api/keys/")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200
        assert upstream.arrived == HELD  # the refused call never reached the upstream

        upstream.gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * HELD
        after = await client.post("/v1/chat/completions", json=BODY)
        assert after.status_code == 200
        assert after.json()["usage"]["completion_tokens"] == len(gw.fake.reply_words)

    # Only the served calls were metered: a shed request reserves and records nothing.
    records = await asyncio.to_thread(gw.usage_records)
    assert len(records) == HELD + 1
    assert {record.status_code for record in records} == {200}
    debits = await asyncio.to_thread(gw.debit_counts)
    assert sorted(debits.values()) == [1] * (HELD + 1)


async def test_overload_cap_counts_a_stream_until_its_end(gated: tuple[Gateway, GatedUpstream]) -> None:
    gw, upstream = gated
    headers = {"Authorization": f"Bearer {gw.key}"}
    stream_body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as client:
        held = [asyncio.create_task(client.post("/v1/chat/completions", json=stream_body)) for _ in range(HELD)]
        await asyncio.to_thread(upstream.wait_for, HELD)
        assert (await client.post("/v1/chat/completions", json=BODY)).status_code == 503
        upstream.gate.set()
        for response in await asyncio.gather(*held):
            assert response.status_code == 200
            assert response.text.rstrip().endswith("data: [DONE]")
        assert (await client.post("/v1/chat/completions", json=stream_body)).status_code == 200

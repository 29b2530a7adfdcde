"""A Redis that answers but refuses to write (full at ``maxmemory`` with ``noeviction``, as the
compose file configures it): money checks fail closed with a 503 in the OpenAI error shape, not
a 500, and a request already served is still billed once, its settlement written to the
database directly or through the stream. Redis refuses a script only at its first write that
may grow memory, so a refused script did nothing.

A Redis server of the test's own (``maxmemory`` is server-wide: the shared one serves other
tests), started from Debian's ``redis-server`` as the cluster tests do."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.redis_cluster import free_ports, missing_redis, redis_cli

BODY: dict[str, object] = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.port = free_ports(1)[0]
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while redis_cli(self.port, "ping").strip() != "PONG":
            assert time.monotonic() < deadline, "the private redis-server did not answer"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def full(self, full: bool) -> None:
        """At ``maxmemory`` 1 byte every write is refused with OOM; 0 lifts the limit."""
        assert redis_cli(self.port, "config", "set", "maxmemory", "1" if full else "0").strip() == "OK"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing_redis("redis-server / redis-cli not found: cannot start a private Redis")
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def full_redis_gateway(
    backend: Backend, fake_openai: FakeOpenAI, private_redis: PrivateRedis
) -> Iterator[tuple[Gateway, PrivateRedis]]:
    settings = gateway_settings(backend, fake_openai, redis_url=private_redis.url)
    gateway, server = start_gateway(settings, fake_openai)
    try:
        yield gateway, private_redis
    finally:
        server.stop()


def _post(gateway: Gateway, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30
    )


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_full_redis_refuses_calls_with_a_503_and_they_pass_again_once_it_has_room(
    full_redis_gateway: tuple[Gateway, PrivateRedis],
) -> None:
    gateway, redis = full_redis_gateway
    assert _post(gateway, BODY).status_code == 200  # the balance mirror is loaded
    redis.full(True)
    refused = _post(gateway, BODY)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "billing_unavailable" and error["type"] == "api_error"
    assert "OOM" not in error["message"] and "maxmemory" not in error["message"]
    redis.full(False)
    assert _post(gateway, BODY).status_code == 200
    records = gateway.usage_records()
    assert [record.status_code for record in records if record.credits_micro] == [200, 200]
    assert all(record.status_code == 503 for record in records if not record.credits_micro)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_stream_served_while_redis_filled_up_is_billed_once(
    full_redis_gateway: tuple[Gateway, PrivateRedis],
) -> None:
    gateway, redis = full_redis_gateway
    assert _post(gateway, BODY).status_code == 200  # the mirror loaded, the settlement stream made
    before = gateway.balance_micro()
    gateway.fake.chunk_delay_s = 0.05
    with httpx.stream(
        "POST",
        gateway.v1 + "/chat/completions",
        json={**BODY, "stream": True},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        redis.full(True)  # reserved before, settled after: the release script is refused
        assert "data: [DONE]" in list(lines)
    # Still full: the release ran (its first write frees memory, and a script is refused only at
    # its first write) or went to the database; either way the writer bills it once.
    streamed = [record for record in gateway.usage_records() if record.request_id == request_id]
    assert len(streamed) == 1 and streamed[0].credits_micro > 0
    assert gateway.debit_count(request_id) == 1
    assert gateway.balance_micro() == before - streamed[0].credits_micro
    redis.full(False)
    assert _post(gateway, BODY).status_code == 200
    assert gateway.debit_count(request_id) == 1

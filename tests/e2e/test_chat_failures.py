"""Failure paths of a chat call: timeouts, dead upstreams, disconnects, suspended accounts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import openai
import pytest
from sqlalchemy import update

from billing.models import Account
from gateway.app import create_app
from tests.fakes.gateway_fixtures import (
    FAKE_MODEL,
    Backend,
    Gateway,
    _with_session,
    gateway_settings,
    start_gateway,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer, free_port

OPENING = 500_000_000


@pytest.fixture
def slow_gateway(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    """A gateway whose provider read timeout is short, to exercise 504s."""
    settings = gateway_settings(backend, fake_openai)
    fast = msgspec.structs.replace(settings.providers["fake"], read_timeout_s=0.3)
    settings = msgspec.structs.replace(settings, providers={"fake": fast})
    gw, server = start_gateway(settings, fake_openai)
    try:
        yield gw
    finally:
        server.stop()


def chat(gateway: Gateway, **extra: Any) -> Any:
    client = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)
    return client.chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}], **extra)


def test_chat_upstream_timeout_is_504_and_free(slow_gateway: Gateway) -> None:
    slow_gateway.fake.response_delay_s = 1.0
    with pytest.raises(openai.APIStatusError) as caught:
        chat(slow_gateway)
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert slow_gateway.balance_micro() == OPENING
    (record,) = slow_gateway.usage_records()
    assert (record.status_code, record.credits_micro) == (504, 0)


def test_chat_stream_idle_timeout_ends_stream_with_error(slow_gateway: Gateway) -> None:
    slow_gateway.fake.chunk_delay_s = 1.0
    with pytest.raises(openai.APIError) as caught:
        list(chat(slow_gateway, stream=True))
    assert caught.value.code == "upstream_timeout"
    (record,) = slow_gateway.usage_records()
    assert record.status_code == 504 and record.streamed


def test_chat_upstream_unreachable_is_502(gateway: Gateway) -> None:
    # A second gateway on the same database, its provider on a port nobody listens on.
    dead = msgspec.structs.replace(gateway.settings.providers["fake"], base_url=f"http://127.0.0.1:{free_port()}/v1")
    settings = msgspec.structs.replace(gateway.settings, providers={"fake": dead})
    server = ThreadedServer(create_app(settings, env={})).start()
    try:
        response = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {gateway.key}"},
        )
    finally:
        server.stop()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert gateway.balance_micro() == OPENING


def test_chat_client_disconnect_cancels_upstream_and_bills_generated(gateway: Gateway) -> None:
    gateway.fake.reply_words = [f"w{i}" for i in range(200)]
    gateway.fake.chunk_delay_s = 0.02
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            gateway.v1 + "/chat/completions",
            json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "count"}], "stream": True},
            headers={"Authorization": f"Bearer {gateway.key}"},
        ) as response,
    ):
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen >= 5:
                break  # leaving the block closes the connection mid-stream
    (record,) = gateway.awaited_usage_records()
    assert record.cancelled and record.status_code == 499 and record.streamed
    assert 0 < record.output_tokens < 200
    assert gateway.balance_micro() == OPENING - record.credits_micro
    deadline = time.monotonic() + 20  # generous: CI shares two cores
    while time.monotonic() < deadline and gateway.fake.disconnected == 0:
        time.sleep(0.05)
    assert gateway.fake.disconnected == 1  # the upstream saw its request cancelled


def test_chat_suspended_account_is_403(gateway: Gateway) -> None:
    chat(gateway)  # the gateway now has the key (and its account's status) in its cache
    served = len(gateway.fake.received)

    async def suspend(session: Any) -> None:
        await session.execute(update(Account).where(Account.id == gateway.account_id).values(status="suspended"))
        await session.commit()

    gateway.run(_with_session(gateway.settings, suspend))
    gateway.clock.advance(gateway.settings.key_cache_ttl_s + 0.1)  # resolved keys are cached for this long
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(gateway)
    assert caught.value.code == "account_suspended"
    assert len(gateway.fake.received) == served  # refused before the upstream


def test_chat_client_disconnect_cancels_a_non_streamed_upstream_call(gateway: Gateway) -> None:
    gateway.fake.response_delay_s = 3.0
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.v1 + "/chat/completions",
            json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {gateway.key}"},
            timeout=httpx.Timeout(10, read=0.5),  # the client gives up and hangs up
        )
    deadline = time.monotonic() + 20  # generous: CI shares two cores
    while time.monotonic() < deadline and (gateway.fake.disconnected == 0 or not gateway.usage_records()):
        time.sleep(0.05)
    assert gateway.fake.disconnected == 1 and gateway.fake.served == 0  # cancelled, not answered
    (record,) = gateway.usage_records()
    assert record.cancelled and record.status_code == 499 and record.credits_micro == 0
    assert gateway.balance_micro() == OPENING

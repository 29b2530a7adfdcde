"""The clamp of docs/product-rules.md: without max_tokens the gateway lowers it to what the balance affords
(and says so in X-Tollway-Max-Tokens); with max_tokens it answers 402 naming what would fit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from billing.tokens import count_chat_tokens
from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Write a long story"}]
BALANCE = 1_000_000  # one credit: far less than the model's 16384-token worst case


@pytest.fixture
def poor(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai, credits_micro=BALANCE)
    try:
        yield gateway
    finally:
        server.stop()


def affordable() -> int:
    prompt = count_chat_tokens(MESSAGES, "gpt-4o-mini")
    return (BALANCE - prompt * 150) // 600  # 0.15 / 0.60 USD per Mtok = 150 / 600 micro-credits a token


def chat(gateway: Gateway, **extra: object) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": FAKE_MODEL, "messages": MESSAGES, **extra},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=10,
    )


def test_without_max_tokens_the_request_is_fitted_to_the_balance(poor: Gateway) -> None:
    response = chat(poor)
    assert response.status_code == 200, response.text
    assert response.headers["x-tollway-max-tokens"] == str(affordable())
    assert poor.fake.received[-1].body["max_completion_tokens"] == affordable()
    streamed = chat(poor, stream=True)
    assert streamed.status_code == 200 and int(streamed.headers["x-tollway-max-tokens"]) <= affordable()


def test_with_max_tokens_too_high_the_402_names_what_fits(poor: Gateway) -> None:
    response = chat(poor, max_tokens=5000)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert error["message"].endswith(f"the largest max_tokens that fits is {affordable()}")
    assert not poor.fake.received  # nothing reached the upstream
    assert chat(poor, max_tokens=affordable()).status_code == 200

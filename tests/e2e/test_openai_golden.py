"""Recorded OpenAI payloads (from the API reference) through the gateway: every parameter the
gateway does not own reaches the upstream untouched, and the answer comes back untouched
apart from the added ``_tollway`` block."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.settings import ModelSettings, ProviderSettings
from tests.fakes.gateway_fixtures import Backend, Gateway, expected_cost_micro, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

GOLDEN = Path(__file__).parent.parent / "golden" / "openai"


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def post(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10
    )


def test_chat_request_and_response_pass_through_untouched(gateway: Gateway) -> None:
    gateway.fake.canned_completion = golden("chat_response.json")
    response = post(gateway, golden("chat_request.json"))
    assert response.status_code == 200, response.text
    assert gateway.fake.received[-1].body == golden("chat_upstream_request.json")
    answer = response.json()
    meta = answer.pop("_tollway")
    # Untouched but for the model: the slug asked for, the upstream's own name in _tollway.
    assert answer == {**golden("chat_response.json"), "model": golden("chat_request.json")["model"]}
    assert meta["upstream_model"] == golden("chat_response.json")["model"]
    # Billed from the recorded usage: 1024 of 1117 prompt tokens were cached.
    assert gateway.usage_records()[-1].credits_micro == expected_cost_micro(1117, 46, cached=1024)
    assert meta["input_tokens"] == 1117 and meta["output_tokens"] == 46
    assert gateway.usage_records()[-1].end_user_id == "end-user-42"


@pytest.fixture
def image_chat(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    base = gateway_settings(backend, fake_openai)
    settings = gateway_settings(
        backend,
        fake_openai,
        models={
            **base.models,
            "fake/image-chat": ModelSettings(
                provider="fake",
                upstream_model="gpt-image-chat",
                category="image",
                input_per_mtok=Decimal("5"),
                output_per_mtok=Decimal("40"),
                max_output_tokens=8192,
            ),
        },
    )
    gateway, server = start_gateway(settings, fake_openai)
    try:
        yield gateway
    finally:
        server.stop()


def test_images_through_chat_with_image_modality(image_chat: Gateway) -> None:
    image_chat.fake.canned_completion = golden("chat_image_response.json")
    body = {
        "model": "fake/image-chat",
        "messages": [{"role": "user", "content": "Draw a lighthouse"}],
        "modalities": ["image", "text"],
    }
    response = post(image_chat, body)
    assert response.status_code == 200, response.text
    assert image_chat.fake.received[-1].body["modalities"] == ["image", "text"]
    message = response.json()["choices"][0]["message"]
    assert message["images"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert image_chat.usage_records()[-1].credits_micro == 12 * 5000 + 1290 * 40_000


@pytest.fixture
def azure(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    """The same recorded payloads through an Azure deployment (Azure speaks OpenAI's format)."""
    fake_openai.azure_deployment = "prod-4o-mini"
    base = gateway_settings(backend, fake_openai)
    settings = gateway_settings(
        backend,
        fake_openai,
        providers={
            **base.providers,
            "fake": ProviderSettings(kind="azure", base_url=fake_openai.url, api_key=fake_openai.api_key),  # type: ignore[attr-defined]
        },
        models={
            **base.models,
            "fake/gpt-4o-mini": ModelSettings(
                provider="fake",
                upstream_model="prod-4o-mini",
                input_per_mtok=Decimal("0.15"),
                output_per_mtok=Decimal("0.60"),
                cached_input_per_mtok=Decimal("0.075"),
                max_output_tokens=16384,
            ),
        },
    )
    gateway, server = start_gateway(settings, fake_openai)
    try:
        yield gateway
    finally:
        server.stop()


def test_azure_gets_the_same_body_on_its_deployment_url(azure: Gateway) -> None:
    azure.fake.canned_completion = golden("chat_response.json")
    response = post(azure, golden("chat_request.json"))
    assert response.status_code == 200, response.text
    received = azure.fake.received[-1]
    assert received.path == "/openai/deployments/prod-4o-mini/chat/completions"
    assert received.headers["api-key"] == azure.fake.api_key
    assert received.body == {**golden("chat_upstream_request.json"), "model": "prod-4o-mini"}
    answer = response.json()
    assert answer.pop("_tollway")["upstream_model"] == golden("chat_response.json")["model"]
    assert answer == {**golden("chat_response.json"), "model": answer["model"]}
    assert answer["model"] == golden("chat_request.json")["model"]
    assert azure.usage_records()[-1].credits_micro == expected_cost_micro(1117, 46, cached=1024)

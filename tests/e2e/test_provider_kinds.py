"""The official SDK through the gateway to Anthropic and Gemini upstreams (fakes speaking their
real wire formats): plain and streamed chat, tool calls, billing from their usage blocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgspec
import openai
import pytest

from gateway.settings import ModelSettings, ProviderSettings, load_settings
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.provider_kinds import CLAUDE, GEMINI, gateway_with_every_kind

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


@pytest.fixture
def kinds(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, FakeAnthropic, FakeGemini]]:
    with gateway_with_every_kind(backend, fake_openai) as (anthropic_gateway, anthropic, gemini):
        yield anthropic_gateway, anthropic, gemini


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)


def _micro(tokens: int, usd_per_mtok: str) -> int:
    # tokens × USD/Mtok × 1000 credits/USD × 10⁶ micro/credit ÷ 10⁶ tokens/Mtok

    return int(tokens * Decimal(usd_per_mtok) * 1000)


def test_anthropic_chat_and_billing_with_cache_tokens(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, anthropic, _ = kinds
    reply = sdk(gateway).chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=100,
        stop=["END"],
    )
    assert reply.choices[0].message.content == "Hello from the fake Claude"
    assert reply.choices[0].finish_reason == "stop"
    sent = anthropic.received[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == anthropic.api_key
    assert sent.body["system"] == "Be brief." and sent.body["stop_sequences"] == ["END"]
    assert sent.body["model"] == "claude-sonnet-4-5" and sent.body["max_tokens"] == 100
    assert reply.usage is not None and reply.usage.prompt_tokens == 21 + 4 + 2
    (record,) = gateway.usage_records()
    expected = _micro(21, "3") + _micro(4, "0.30") + _micro(2, "3.75") + _micro(5, "15")
    assert record.credits_micro == expected and record.provider == "anthropic"


def test_anthropic_stream_with_tool_call(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, anthropic, _ = kinds
    anthropic.tool_call = True
    chunks = list(
        sdk(gateway).chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "weather in SF?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(arguments) == anthropic.tool_input
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].model_extra["_tollway"]["provider"] == "anthropic"
    assert anthropic.received[-1].body["tools"][0]["input_schema"]["required"] == ["location"]


def test_gemini_chat_stream_and_function_call(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, _, gemini = kinds
    reply = sdk(gateway).chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from the fake Gemini"
    assert gemini.received[-1].path.endswith("/models/gemini-2.5-flash:generateContent")
    (record,) = gateway.usage_records()
    completion = reply.usage.completion_tokens if reply.usage else 0
    expected = _micro(17 - 5, "0.30") + _micro(5, "0.075") + _micro(completion, "2.50")
    assert record.credits_micro == expected

    text = "".join(
        c.choices[0].delta.content or ""
        for c in sdk(gateway).chat.completions.create(
            model=GEMINI, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        if c.choices
    )
    assert text == "Hello from the fake Gemini"

    gemini.function_call = True
    called = sdk(gateway).chat.completions.create(
        model=GEMINI,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    (call,) = called.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert called.choices[0].finish_reason == "tool_calls"


def test_upstream_errors_keep_the_openai_envelope(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, anthropic, gemini = kinds
    anthropic.fail_status = 400
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway).chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    # The provider's words stay with the operator; the caller keeps the status and the envelope.
    assert "told to fail" not in caught.value.message and "rejected the request (400)" in caught.value.message
    gemini.api_key = "AIza-rotated"
    with pytest.raises(openai.APIStatusError) as denied:
        sdk(gateway).chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "hi"}])
    body: Any = denied.value.body
    assert denied.value.status_code == 502 and body["code"] == "upstream_auth_failed"
    assert gateway.balance_micro() == 500_000_000


def test_sambanova_preset_is_configurable_and_serves_chat(backend: Backend, fake_openai: FakeOpenAI) -> None:
    """A preset added to providers/presets.py alone is a kind the settings accept, with its URL
    and key variable, and the gateway routes chat to it."""
    configured = load_settings(env={}, providers={"samba": {"kind": "sambanova"}}).providers["samba"]
    assert configured.effective_base_url == "https://api.sambanova.ai/v1"
    assert configured.resolved_api_key({"SAMBANOVA_API_KEY": "sn-key"}) == "sn-key"
    base = gateway_settings(backend, fake_openai)
    settings = gateway_settings(
        backend,
        fake_openai,
        providers={
            "samba": ProviderSettings(
                kind="sambanova",
                base_url=fake_openai.url + "/v1",  # type: ignore[attr-defined]
                api_key=fake_openai.api_key,
            )
        },
        models={
            "samba/llama": ModelSettings(**{**msgspec.structs.asdict(base.models[FAKE_MODEL]), "provider": "samba"})
        },
    )
    gateway, server = start_gateway(settings, fake_openai)
    try:
        reply = sdk(gateway).chat.completions.create(
            model="samba/llama", messages=[{"role": "user", "content": "hi"}], max_tokens=10
        )
    finally:
        server.stop()
    assert reply.choices[0].message.content == "Hello from the fake upstream"
    sent = fake_openai.received[-1]
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert sent.body["model"] == "gpt-4o-mini" and sent.body["max_tokens"] == 10
    (record,) = gateway.usage_records()
    assert record.provider == "samba" and record.credits_micro > 0

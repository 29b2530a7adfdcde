"""AnthropicAdapter against a fake Anthropic server on a real 127.0.0.1 socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from providers.anthropic import AnthropicAdapter
from providers.base import ChatCall, StreamChunk, Usage
from providers.errors import ProviderError, UpstreamHTTPError, UpstreamUnavailable
from providers.http import build_client
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.servers import ThreadedServer, free_port

MODEL = "claude-sonnet-4-5-20250929"


@pytest.fixture
def fake() -> Iterator[tuple[FakeAnthropic, str]]:
    upstream = FakeAnthropic(cache_read_tokens=7, cache_creation_tokens=3)
    server = ThreadedServer(upstream).start()
    try:
        yield upstream, server.url
    finally:
        server.stop()


def client_for(url: str, api_key: str = "sk-ant-fake-upstream-key") -> httpx.AsyncClient:
    return build_client(
        url,
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
        connect_timeout_s=2,
        read_timeout_s=5,
        max_connections=4,
    )


@pytest.fixture
async def adapter(fake: tuple[FakeAnthropic, str]) -> AsyncIterator[AnthropicAdapter]:
    instance = AnthropicAdapter("claude", client_for(fake[1]), default_max_tokens=321)
    try:
        yield instance
    finally:
        await instance.aclose()


def call(**extra: Any) -> ChatCall:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        **extra,
    }
    return ChatCall(body=body, upstream_model=MODEL)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


async def collect(adapter: AnthropicAdapter, chat: ChatCall) -> list[StreamChunk]:
    stream = await adapter.open_stream(chat)
    try:
        return [chunk async for chunk in stream]
    finally:
        await stream.aclose()


async def test_anthropic_complete(fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter) -> None:
    upstream, _ = fake
    result = await adapter.complete(call(temperature=0.2, n=1))
    assert result.body["object"] == "chat.completion"
    assert result.body["id"] == "msg_fake123"
    assert result.body["model"] == MODEL
    choice = result.body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello from the fake Claude", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert result.body["usage"] == {
        "prompt_tokens": 31,
        "completion_tokens": 5,
        "total_tokens": 36,
        "prompt_tokens_details": {"cached_tokens": 7, "cache_write_tokens": 3},
    }
    assert result.usage == Usage(input_tokens=31, output_tokens=5, cached_input_tokens=7, cache_write_tokens=3)
    [received] = upstream.received
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == "sk-ant-fake-upstream-key"
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.body == {
        "model": MODEL,
        "max_tokens": 321,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello"}],
        "temperature": 0.2,
    }


async def test_anthropic_complete_tool_call(fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter) -> None:
    upstream, _ = fake
    upstream.tool_call = True
    result = await adapter.complete(call(tools=TOOLS, tool_choice="required"))
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [tool_call] = choice["message"]["tool_calls"]
    assert tool_call["id"] == "toolu_01FakeToolUse"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}
    sent = upstream.received[0].body
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["tools"][0]["input_schema"]["properties"] == {"location": {"type": "string"}}


async def test_anthropic_stream_text_and_usage(fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter) -> None:
    upstream, _ = fake
    chunks = await collect(adapter, call(max_tokens=64))
    payloads = [json.loads(chunk.data) for chunk in chunks]
    assert {payload["id"] for payload in payloads} == {"msg_fake123"}
    assert {payload["object"] for payload in payloads} == {"chat.completion.chunk"}
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert content == "Hello from the fake Claude"
    assert "".join(chunk.text for chunk in chunks) == "Hello from the fake Claude"
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"]["prompt_tokens"] == 31
    assert chunks[-1].usage == Usage(input_tokens=31, output_tokens=5, cached_input_tokens=7, cache_write_tokens=3)
    assert all(chunk.usage is None for chunk in chunks[:-1])
    [received] = upstream.received
    assert received.body["stream"] is True
    assert received.body["max_tokens"] == 64
    assert received.headers["accept"] == "text/event-stream"


async def test_anthropic_stream_tool_call(fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter) -> None:
    upstream, _ = fake
    upstream.tool_call = True
    payloads = [json.loads(chunk.data) for chunk in await collect(adapter, call(tools=TOOLS))]
    calls = [c for p in payloads if p["choices"] for c in p["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01FakeToolUse",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert {c["index"] for c in calls} == {0}
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[-1]["usage"]["completion_tokens"] == 17


async def test_anthropic_400_keeps_status_and_message(
    fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter
) -> None:
    upstream, _ = fake
    upstream.fail_status = 400
    upstream.fail_message = "messages: roles must alternate"
    for attempt in (adapter.complete, adapter.open_stream):
        with pytest.raises(UpstreamHTTPError) as caught:
            await attempt(call())
        assert caught.value.status_code == 400
        assert caught.value.type == "invalid_request_error"
        assert "messages: roles must alternate" in caught.value.detail


async def test_anthropic_401_is_502_without_upstream_text(fake: tuple[FakeAnthropic, str]) -> None:
    adapter = AnthropicAdapter("claude", client_for(fake[1], api_key="sk-ant-wrong-key"))
    try:
        for attempt in (adapter.complete, adapter.open_stream):
            with pytest.raises(UpstreamHTTPError) as caught:
                await attempt(call())
            assert (caught.value.status_code, caught.value.code) == (502, "upstream_auth_failed")
            assert "sk-ant-wrong-key" not in caught.value.message
            assert "x-api-key" not in caught.value.message
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(("status", "expected", "retryable"), [(429, 429, True), (529, 502, True), (500, 502, True)])
async def test_anthropic_upstream_failures_map_status(
    fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter, status: int, expected: int, retryable: bool
) -> None:
    fake[0].fail_status = status
    with pytest.raises(UpstreamHTTPError) as caught:
        await adapter.open_stream(call())
    assert (caught.value.status_code, caught.value.upstream_status, caught.value.retryable) == (
        expected,
        status,
        retryable,
    )


async def test_anthropic_mid_stream_error_raises_after_chunks(
    fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter
) -> None:
    fake[0].stream_error_after = 2
    stream = await adapter.open_stream(call())
    received: list[StreamChunk] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in stream:
            received.append(chunk)
    await stream.aclose()
    assert "".join(chunk.text for chunk in received) == "Hello from"
    assert len(received) == 3  # role chunk + two text deltas
    assert isinstance(caught.value, UpstreamHTTPError)
    assert caught.value.upstream_status == 529
    assert "Overloaded" in caught.value.detail


async def test_anthropic_unreachable_upstream_is_unavailable() -> None:
    adapter = AnthropicAdapter("claude", client_for(f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(UpstreamUnavailable):
            await adapter.complete(call())
        with pytest.raises(UpstreamUnavailable):
            await adapter.open_stream(call())
    finally:
        await adapter.aclose()


# ---------------------------------------------------------------- Messages passed through as they are

NATIVE_BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 64,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Say hello"}],
    "top_k": 4,
}


async def test_anthropic_native_message_is_the_upstreams(
    fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter
) -> None:
    upstream, _ = fake
    answer = await adapter.create_message(NATIVE_BODY)
    assert upstream.received[-1].body == NATIVE_BODY  # not translated, nothing added
    assert json.loads(answer.raw) == answer.body and answer.body["model"] == MODEL
    # Anthropic's 21 fresh input tokens plus 7 read from and 3 written to the cache.
    assert answer.usage == Usage(input_tokens=31, output_tokens=5, cached_input_tokens=7, cache_write_tokens=3)
    assert answer.text == "Hello from the fake Claude"


async def test_anthropic_native_stream_events(fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter) -> None:
    upstream, _ = fake
    stream = await adapter.open_message_stream(NATIVE_BODY)
    events = [chunk async for chunk in stream]
    assert upstream.received[-1].body == {**NATIVE_BODY, "stream": True}
    assert "".join(chunk.text for chunk in events) == "Hello from the fake Claude"
    assert [chunk.usage for chunk in events if chunk.usage is not None][-1] == Usage(
        input_tokens=31, output_tokens=5, cached_input_tokens=7, cache_write_tokens=3
    )
    assert all(json.loads(chunk.data)["type"] for chunk in events)


async def test_anthropic_native_refusals_keep_status_and_hide_auth_text(
    fake: tuple[FakeAnthropic, str], adapter: AnthropicAdapter
) -> None:
    fake[0].fail_status = 429
    for attempt in (adapter.create_message, adapter.open_message_stream):
        with pytest.raises(UpstreamHTTPError) as limited:
            await attempt(NATIVE_BODY)
        assert limited.value.status_code == 429 and limited.value.retryable
    fake[0].fail_status = 0
    wrong = AnthropicAdapter("claude", client_for(fake[1], api_key="sk-ant-wrong-key"))
    try:
        for attempt in (wrong.create_message, wrong.open_message_stream):
            with pytest.raises(UpstreamHTTPError) as refused:
                await attempt(NATIVE_BODY)
            assert (refused.value.status_code, refused.value.code) == (502, "upstream_auth_failed")
            assert "sk-ant-wrong-key" not in refused.value.message
    finally:
        await wrong.aclose()

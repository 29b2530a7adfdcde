"""GeminiAdapter against FakeGemini on a real 127.0.0.1 socket, through the production client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

from providers.base import ChatCall, StreamChunk, Usage
from providers.errors import ProviderError, UpstreamHTTPError, UpstreamUnavailable
from providers.gemini import GeminiAdapter
from providers.http import build_client
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.servers import ThreadedServer, free_port

MODEL = "gemini-2.5-flash"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ThreadedServer, FakeGemini]]:
    fake = FakeGemini()
    running = ThreadedServer(fake).start()
    yield running, fake
    running.stop()


@pytest.fixture
def fake(server: tuple[ThreadedServer, FakeGemini]) -> Iterator[FakeGemini]:
    fake = server[1]
    defaults = FakeGemini()
    yield fake
    # Module-scoped server, per-test state: put every knob back.
    for name in (
        "reply_words",
        "cached_tokens",
        "thoughts_tokens",
        "function_call",
        "fail_status",
        "fail_message",
        "fail_times",
        "stream_error_after",
        "stream_error_kind",
    ):
        setattr(fake, name, getattr(defaults, name))
    fake.received.clear()


def make_adapter(server: tuple[ThreadedServer, FakeGemini], key: str | None = None) -> GeminiAdapter:
    client = build_client(
        server[0].url,
        headers={"x-goog-api-key": key if key is not None else server[1].api_key},
        connect_timeout_s=5,
        read_timeout_s=10,
        max_connections=4,
    )
    return GeminiAdapter("gemini", client)


@pytest.fixture
async def adapter(server: tuple[ThreadedServer, FakeGemini], fake: FakeGemini) -> AsyncIterator[GeminiAdapter]:
    adapter = make_adapter(server)
    yield adapter
    await adapter.aclose()


def call(**extra: Any) -> ChatCall:
    body = {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    return ChatCall(body={**body, **extra}, upstream_model=MODEL)


async def collect(adapter: GeminiAdapter, chat: ChatCall) -> list[StreamChunk]:
    stream = await adapter.open_stream(chat)
    return [chunk async for chunk in stream]


async def test_complete_returns_openai_completion_and_usage(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.cached_tokens, fake.thoughts_tokens = 8, 3
    result = await adapter.complete(call(max_tokens=64))
    assert result.body["object"] == "chat.completion"
    assert result.body["id"] == "fakeResp123"
    assert result.body["model"] == "gemini-2.5-flash"
    assert result.body["choices"][0]["message"]["content"] == "Hello from the fake Gemini"
    assert result.body["choices"][0]["finish_reason"] == "stop"
    assert result.body["usage"]["completion_tokens"] == 8
    assert result.usage == Usage(input_tokens=17, output_tokens=8, cached_input_tokens=8)
    sent = fake.received[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == fake.api_key
    assert sent.body == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 64},
    }


async def test_complete_function_call(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.function_call = True
    result = await adapter.complete(call(tools=TOOLS, tool_choice="required"))
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["function"]["name"], msgspec.json.decode(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert fake.received[-1].body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


async def test_stream_text_then_final_usage(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.thoughts_tokens = 2
    chunks = await collect(adapter, call())
    sent = fake.received[-1]
    assert (sent.path, sent.query) == (f"/v1beta/models/{MODEL}:streamGenerateContent", {"alt": ["sse"]})
    decoded = [msgspec.json.decode(chunk.data) for chunk in chunks]
    assert decoded[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(chunk.text for chunk in chunks) == "Hello from the fake Gemini"
    assert decoded[-2]["choices"][0]["finish_reason"] == "stop"
    assert decoded[-1]["choices"] == []
    assert decoded[-1]["usage"]["total_tokens"] == 17 + 5 + 2
    assert [chunk.usage for chunk in chunks if chunk.usage is not None] == [
        Usage(input_tokens=17, output_tokens=7, cached_input_tokens=0)
    ]
    assert {(d["id"], d["object"]) for d in decoded} == {("fakeResp123", "chat.completion.chunk")}


async def test_stream_function_call(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.function_call = True
    chunks = await collect(adapter, call(tools=TOOLS))
    decoded = [msgspec.json.decode(chunk.data) for chunk in chunks]
    tool_call = decoded[1]["choices"][0]["delta"]["tool_calls"][0]
    assert tool_call["index"] == 0
    assert tool_call["id"].startswith("call_")
    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert decoded[2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[1].text == 'get_weather{"city":"Paris"}'
    assert chunks[-1].usage == Usage(input_tokens=17, output_tokens=5)


async def test_invalid_argument_maps_to_400_with_message(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.fail_status, fake.fail_times, fake.fail_message = 400, 2, "Invalid JSON payload received."
    for attempt in (adapter.complete(call()), adapter.open_stream(call())):
        with pytest.raises(UpstreamHTTPError) as raised:
            await attempt
        assert (raised.value.status_code, raised.value.code) == (400, "invalid_argument")
        assert "Invalid JSON payload received." in raised.value.detail


@pytest.mark.parametrize("key", ["AIza-wrong-key", ""])
async def test_bad_key_maps_to_upstream_auth_failed_without_upstream_text(
    server: tuple[ThreadedServer, FakeGemini], fake: FakeGemini, key: str
) -> None:
    adapter = make_adapter(server, key=key)
    try:
        for attempt in (adapter.complete(call()), adapter.open_stream(call())):
            with pytest.raises(UpstreamHTTPError) as raised:
                await attempt
            assert (raised.value.status_code, raised.value.code) == (502, "upstream_auth_failed")
            assert "API key" not in raised.value.message
            assert "unregistered" not in raised.value.message
    finally:
        await adapter.aclose()


async def test_resource_exhausted_maps_to_429(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.fail_status, fake.fail_times = 429, 1
    with pytest.raises(UpstreamHTTPError) as raised:
        await adapter.open_stream(call())
    assert (raised.value.status_code, raised.value.code, raised.value.retryable) == (429, "upstream_rate_limited", True)


async def test_mid_stream_error_payload_raises_after_some_chunks(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.stream_error_after = 2
    stream = await adapter.open_stream(call())
    received: list[StreamChunk] = []
    with pytest.raises(ProviderError) as raised:
        async for chunk in stream:
            received.append(chunk)
    assert "".join(chunk.text for chunk in received) == "Hello from"
    assert isinstance(raised.value, UpstreamHTTPError)
    assert (raised.value.status_code, raised.value.retryable) == (502, True)
    await stream.aclose()


async def test_mid_stream_broken_connection_raises_unavailable(adapter: GeminiAdapter, fake: FakeGemini) -> None:
    fake.stream_error_after, fake.stream_error_kind = 3, "abort"
    stream = await adapter.open_stream(call())
    received: list[StreamChunk] = []
    with pytest.raises(UpstreamUnavailable):
        async for chunk in stream:
            received.append(chunk)
    assert "".join(chunk.text for chunk in received) == "Hello from the"


async def test_unreachable_upstream_raises_unavailable() -> None:
    client = build_client(
        f"http://127.0.0.1:{free_port()}",
        headers={"x-goog-api-key": "k"},
        connect_timeout_s=2,
        read_timeout_s=2,
        max_connections=1,
    )
    adapter = GeminiAdapter("gemini", client)
    try:
        with pytest.raises(UpstreamUnavailable):
            await adapter.complete(call())
    finally:
        await adapter.aclose()

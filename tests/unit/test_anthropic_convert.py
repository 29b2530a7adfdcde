"""OpenAI ⇄ Anthropic conversions against golden files built from Anthropic's API reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from providers.anthropic.convert import (
    StreamTranslator,
    finish_reason,
    to_chat_completion,
    to_messages_request,
    usage_from_view,
)
from providers.anthropic.errors import InvalidChatRequest, http_error
from providers.anthropic.types import MessageView, UsageView, message_decoder
from providers.base import StreamChunk, Usage
from providers.errors import UpstreamBadResponse, UpstreamHTTPError
from providers.sse import SSEEvent, SSEParser

GOLDEN = Path(__file__).parent.parent / "golden" / "anthropic"
CREATED = 1_700_000_000


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def translate(pieces: list[bytes]) -> list[StreamChunk]:
    parser = SSEParser()
    translator = StreamTranslator("anthropic", created=CREATED)
    chunks: list[StreamChunk] = []
    for piece in pieces:
        for event in parser.feed(piece):
            chunks.extend(translator.feed(event))
    for event in parser.close():
        chunks.extend(translator.feed(event))
    return chunks


def event(kind: str, payload: dict[str, Any]) -> SSEEvent:
    return SSEEvent(data=json.dumps({"type": kind, **payload}).encode(), event=kind)


# ---------------------------------------------------------------- requests


def test_anthropic_request_golden() -> None:
    converted = to_messages_request(golden("chat_request.openai.json"), default_max_tokens=4096)
    assert converted == golden("chat_request.anthropic.json")


def test_anthropic_request_minimal_uses_default_max_tokens_and_plain_strings() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
        "stop": "STOP",
        "max_tokens": 50,
        "frequency_penalty": 1.0,
    }
    assert to_messages_request(body, default_max_tokens=4096) == {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
        "stop_sequences": ["STOP"],
    }
    without = to_messages_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}, default_max_tokens=777
    )
    assert without["max_tokens"] == 777
    assert "system" not in without and "tools" not in without and "tool_choice" not in without


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "lookup"}}, None, {"type": "tool", "name": "lookup"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_anthropic_request_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    converted = to_messages_request(body, default_max_tokens=10)
    assert converted["tool_choice"] == expected
    assert converted["tools"] == [{"name": "lookup", "input_schema": {"type": "object"}}]


def test_anthropic_request_tool_choice_without_tools_is_dropped() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}
    assert "tool_choice" not in to_messages_request(body, default_max_tokens=10)


def test_anthropic_request_response_format_becomes_system_instruction() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Where?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    }
    system = to_messages_request(body, default_max_tokens=10)["system"]
    assert system.startswith("Be terse.\n\nRespond with a single valid JSON object")
    assert "named 'place'" in system
    assert system.endswith('{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}')
    plain = {**body, "response_format": {"type": "json_object"}}
    assert to_messages_request(plain, default_max_tokens=10)["system"].endswith("no prose, no code fences.")
    text = {**body, "response_format": {"type": "text"}}
    assert to_messages_request(text, default_max_tokens=10)["system"] == "Be terse."


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]},
        {"role": "function", "name": "f", "content": "legacy"},
        {"role": "tool", "content": "no id"},
    ],
)
def test_anthropic_request_unsupported_input_is_a_400(message: dict[str, Any]) -> None:
    with pytest.raises(InvalidChatRequest) as caught:
        to_messages_request({"model": "m", "messages": [message]}, default_max_tokens=10)
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"


def test_anthropic_request_tool_arguments_must_be_a_json_object() -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]}
    with pytest.raises(InvalidChatRequest, match="JSON object"):
        to_messages_request(body, default_max_tokens=10)


# ---------------------------------------------------------------- responses


@pytest.mark.parametrize("name", ["tool_response", "text_response"])
def test_anthropic_response_golden(name: str) -> None:
    raw = (GOLDEN / f"{name}.anthropic.json").read_bytes()
    body, _ = to_chat_completion(message_decoder.decode(raw), created=CREATED)
    assert body == golden(f"{name}.openai.json")


def test_anthropic_response_usage_counts_cache_reads_and_writes_as_prompt() -> None:
    _, usage = to_chat_completion(
        message_decoder.decode((GOLDEN / "tool_response.anthropic.json").read_bytes()), created=CREATED
    )
    assert usage == Usage(
        input_tokens=472 + 2048 + 100, output_tokens=89, cached_input_tokens=2048, cache_write_tokens=100
    )
    assert usage_from_view(UsageView(input_tokens=5, output_tokens=3)) == Usage(input_tokens=5, output_tokens=3)


def test_anthropic_response_tool_use_only_has_null_content() -> None:
    raw = {
        "id": "msg_1",
        "model": "claude",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "noop", "input": {}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    body, _ = to_chat_completion(msgspec.convert(raw, MessageView), created=CREATED)
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "noop", "arguments": "{}"}


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
    ],
)
def test_anthropic_finish_reason(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


# ---------------------------------------------------------------- errors


def test_anthropic_http_error_keeps_message_and_status() -> None:
    raw = b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}'
    error = http_error("claude", 400, raw)
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert "max_tokens: Field required" in error.detail and "max_tokens" not in error.message
    limited = http_error("claude", 429, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}')
    assert (limited.status_code, limited.code, limited.retryable) == (429, "upstream_rate_limited", True)
    overloaded = http_error(
        "claude", 529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    )
    assert (overloaded.status_code, overloaded.code, overloaded.retryable) == (502, "overloaded_error", True)


def test_anthropic_http_error_never_echoes_auth_failures() -> None:
    raw = b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-secret"}}'
    error = http_error("claude", 401, raw)
    assert (error.status_code, error.code) == (502, "upstream_auth_failed")
    assert "sk-ant-secret" not in error.message and "x-api-key" not in error.message


# ---------------------------------------------------------------- streams


STREAM = (GOLDEN / "stream_tools.sse").read_bytes()
EXPECTED_CHUNKS = golden("stream_tools.openai.json")


def test_anthropic_stream_golden() -> None:
    chunks = translate([STREAM])
    assert [json.loads(chunk.data) for chunk in chunks] == EXPECTED_CHUNKS
    assert [chunk.usage for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].usage == Usage(input_tokens=1496, output_tokens=89, cached_input_tokens=1024)
    text = "".join(chunk.text for chunk in chunks)
    arguments = '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
    assert text == "Okay, let's check the weather for San Francisco, CA — ça va:get_weather" + arguments


def test_anthropic_stream_split_at_every_byte_offset() -> None:
    whole = [chunk.data for chunk in translate([STREAM])]
    for offset in range(len(STREAM) + 1):
        assert [chunk.data for chunk in translate([STREAM[:offset], STREAM[offset:]])] == whole, offset


def test_anthropic_stream_tool_calls_are_numbered_among_tool_calls() -> None:
    translator = StreamTranslator("anthropic", created=CREATED)
    message = {"id": "msg_1", "model": "claude", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}
    translator.feed(event("message_start", {"message": message}))
    for index, tool_id in ((2, "toolu_a"), (5, "toolu_b")):
        block = {"type": "tool_use", "id": tool_id, "name": "f", "input": {}}
        translator.feed(event("content_block_start", {"index": index, "content_block": block}))
    [chunk] = translator.feed(
        event("content_block_delta", {"index": 5, "delta": {"type": "input_json_delta", "partial_json": "{}"}})
    )
    assert json.loads(chunk.data)["choices"][0]["delta"] == {
        "tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]
    }


def test_anthropic_stream_error_event_raises_overloaded() -> None:
    translator = StreamTranslator("anthropic", created=CREATED)
    with pytest.raises(UpstreamHTTPError) as caught:
        translator.feed(event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}))
    assert caught.value.upstream_status == 529
    assert (caught.value.status_code, caught.value.retryable) == (502, True)
    assert "Overloaded" in caught.value.detail and "Overloaded" not in caught.value.message


def test_anthropic_stream_skips_unknown_events_and_rejects_malformed_ones() -> None:
    translator = StreamTranslator("anthropic", created=CREATED)
    assert translator.feed(SSEEvent(data=b'{"type": "future_event"}', event="future_event")) == []
    assert translator.feed(event("ping", {})) == []
    thinking = {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}
    assert translator.feed(event("content_block_delta", thinking)) == []
    with pytest.raises(UpstreamBadResponse):
        translator.feed(SSEEvent(data=b"{not json", event="content_block_delta"))

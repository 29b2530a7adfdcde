"""Anthropic Messages ⇄ chat completions (providers/dialects/messages*.py) against golden files,
checked with the official ``anthropic`` SDK's own types; the stream translator with its input
split at every byte offset."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given
from hypothesis import strategies as st

from providers.base import Usage
from providers.dialects.messages import (
    CountTokensRequest,
    InvalidMessagesRequest,
    MessagesRequest,
    anthropic_usage,
    check_version,
    error_type_for,
    parse_request,
    to_chat_body,
    to_message,
    usage_from_anthropic,
    usage_from_chat,
)
from providers.dialects.messages_stream import MessagesStreamTranslator
from providers.sse import SSEParser

GOLDEN = Path(__file__).parent.parent / "golden" / "messages"
STREAM_IN = (GOLDEN / "stream.chat.sse").read_bytes()
STREAM_OUT = (GOLDEN / "stream.messages.sse").read_bytes()
_events = pydantic.TypeAdapter(RawMessageStreamEvent)


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def request_of(body: dict[str, Any]) -> MessagesRequest:
    return parse_request(json.dumps(body).encode(), MessagesRequest)


def translate(pieces: list[bytes]) -> bytes:
    translator = MessagesStreamTranslator(message_id="msg_req_1", model="openai/gpt-4o-mini")
    return b"".join(translator.feed(piece) for piece in pieces) + translator.close()


def events_of(wire: bytes) -> list[tuple[str, dict[str, Any]]]:
    parser = SSEParser()
    return [(e.event or "", json.loads(e.data)) for e in [*parser.feed(wire), *parser.close()]]


# ---------------------------------------------------------------- requests


def test_messages_request_golden() -> None:
    request = parse_request((GOLDEN / "request.messages.json").read_bytes(), MessagesRequest)
    assert to_chat_body(request) == golden("request.chat.json")


def test_messages_request_minimal_and_not_streamed() -> None:
    body = to_chat_body(request_of({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_messages_request_tool_choices_and_error_results() -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    for choice, expected in [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ]:
        body = to_chat_body(
            request_of(
                {
                    "model": "m",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": tools,
                    "tool_choice": choice,
                }
            )
        )
        assert body["tool_choice"] == expected and "parallel_tool_calls" not in body
    failed = {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}
    body = to_chat_body(
        request_of({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [failed]}]})
    )
    assert body["messages"] == [{"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}]


def test_messages_count_tokens_request_has_no_max_tokens() -> None:
    request = parse_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', CountTokensRequest)
    assert to_chat_body(request) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


BAD_BODIES: list[tuple[bytes, str | None]] = [
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
    (b'{"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
    (
        b'{"model": "m", "max_tokens": 18446744073709551616, "messages": [{"role": "user", "content": "x"}]}',
        "max_tokens",
    ),
    (b'{"model": "m", "max_tokens": 5, "messages": []}', "messages"),
    (b'{"model": 5, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}', "messages"),
    (b"[1]", None),
    (b"{nope", None),
    (b"[" * 100_000, None),
]


@pytest.mark.parametrize(("raw", "param"), BAD_BODIES)
def test_messages_bad_bodies_are_invalid_requests(raw: bytes, param: str | None) -> None:
    with pytest.raises(InvalidMessagesRequest) as caught:
        parse_request(raw, MessagesRequest)
    assert caught.value.status_code == 400 and caught.value.param == param


@pytest.mark.parametrize(
    "message",
    [
        {"role": "system", "content": "x"},
        {"role": "user", "content": [{"type": "document", "source": {}}]},
        {"role": "user", "content": [{"type": "text"}]},
        {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]},
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "content": "x"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]},
        {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]},
        {"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search"}]},
    ],
)
def test_messages_untranslatable_content_is_400(message: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessagesRequest):
        to_chat_body(request_of({"model": "m", "max_tokens": 5, "messages": [message]}))


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {"tools": [{"description": "no name"}]},
        {"tool_choice": {"type": "sometimes"}},
        {"system": [{"type": "image"}]},
    ],
)
def test_messages_untranslatable_options_are_400(extra: dict[str, Any]) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(InvalidMessagesRequest):
        to_chat_body(request_of(body))


def test_messages_version_header() -> None:
    assert check_version(None) == check_version("") == "2023-06-01"
    assert check_version("2024-01-01") == "2024-01-01"
    for bad in ("yesterday", "2023-06-01\x00", "2023-06-01; drop"):
        with pytest.raises(InvalidMessagesRequest):
            check_version(bad)


def test_messages_error_types_by_status() -> None:
    assert [error_type_for(s) for s in (400, 401, 402, 403, 404, 413, 429, 499, 500, 502, 503, 504)] == [
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "invalid_request_error",
        "rate_limit_error",
        "invalid_request_error",
        "api_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    ]


# ---------------------------------------------------------------- answers and usage


def test_messages_response_golden_is_an_sdk_message() -> None:
    message = to_message(golden("response.chat.json"), message_id="msg_req_123", model="openai/gpt-4o")
    assert message == golden("response.message.json")
    parsed = Message.model_validate(message)
    assert (
        parsed.usage.input_tokens
        + (parsed.usage.cache_read_input_tokens or 0)
        + (parsed.usage.cache_creation_input_tokens or 0)
        == 1117
    )


def test_messages_response_without_text_or_usage() -> None:
    completion = {"choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "length"}]}
    message = to_message(completion, message_id="msg_1", model="m")
    assert message["content"] == [] and message["stop_reason"] == "max_tokens" and "_tollway" not in message
    assert message["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_messages_usage_excludes_cache_tokens_and_converts_back() -> None:
    usage = Usage(input_tokens=100, output_tokens=7, cached_input_tokens=30, cache_write_tokens=10)
    block = anthropic_usage(usage)
    assert block == {
        "input_tokens": 60,
        "output_tokens": 7,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 10,
    }
    assert usage_from_anthropic(block) == usage
    assert usage_from_anthropic({"input_tokens": 5, "output_tokens": 1}) == Usage(input_tokens=5, output_tokens=1)
    assert usage_from_anthropic({"input_tokens": "5", "output_tokens": 1}).malformed


def test_messages_usage_from_chat_blocks() -> None:
    assert usage_from_chat(None) == Usage()
    openai = {"prompt_tokens": 50, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 20}}
    assert usage_from_chat(openai) == Usage(input_tokens=50, output_tokens=4, cached_input_tokens=20)
    litellm = {"prompt_tokens": 50, "completion_tokens": 4, "cache_creation_input_tokens": 8}
    assert usage_from_chat(litellm) == Usage(input_tokens=50, output_tokens=4, cache_write_tokens=8)
    assert anthropic_usage(usage_from_chat({"prompt_tokens": -1, "completion_tokens": 4}))["input_tokens"] == 0


# ---------------------------------------------------------------- streams


def test_messages_stream_golden() -> None:
    assert translate([STREAM_IN]) == STREAM_OUT


def test_messages_stream_split_at_every_byte_offset() -> None:
    for offset in range(len(STREAM_IN) + 1):
        assert translate([STREAM_IN[:offset], STREAM_IN[offset:]]) == STREAM_OUT, offset


def test_messages_stream_one_byte_at_a_time() -> None:
    assert translate([STREAM_IN[i : i + 1] for i in range(len(STREAM_IN))]) == STREAM_OUT


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM_IN)), max_size=12))
def test_messages_stream_split_at_any_offsets(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM_IN)]
    assert translate([STREAM_IN[a:b] for a, b in itertools.pairwise(bounds)]) == STREAM_OUT


def test_messages_stream_events_build_the_sdk_message() -> None:
    snapshot = None
    buffers: dict[int, bytes] = {}
    for kind, data in events_of(STREAM_OUT):
        if kind == "ping":  # the SDK skips pings: not in its event union
            assert data == {"type": "ping"}
            continue
        parsed = _events.validate_python(data)
        assert parsed.type == kind
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    assert [block.type for block in snapshot.content] == ["text", "tool_use", "tool_use"]
    assert snapshot.content[1].type == "tool_use" and snapshot.content[1].input == {"location": "Paris"}
    assert snapshot.stop_reason == "tool_use"
    usage = snapshot.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (6, 12, 30)
    assert usage.cache_creation_input_tokens == 4


ERROR_CHUNKS = [
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"error"}],'
    b'"_tollway":{"error":{"message":"upstream died","type":"api_error","code":"upstream_unavailable"}}}\n\n',
    b'data: {"error":{"message":"upstream died","type":"server_error","code":"upstream_unavailable"}}\n\n',
]


@pytest.mark.parametrize("failure", ERROR_CHUNKS)
def test_messages_stream_error_ends_the_stream(failure: bytes) -> None:
    text = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    events = events_of(translate([text, failure, text, usage, b"data: [DONE]\n\n"]))
    assert [kind for kind, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "upstream died"}}


def test_messages_stream_cut_short_ends_with_error() -> None:
    events = events_of(translate([b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n']))
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"


def test_messages_stream_timeout_and_junk() -> None:
    timeout = b'data: {"error":{"message":"slow","type":"x","code":"upstream_timeout"}}\n\n'
    assert events_of(translate([timeout]))[-1][1]["error"]["type"] == "timeout_error"
    assert events_of(translate([b"data: {not json\n\n"]))[-1][0] == "error"
    # Chunks that are not objects, and choices other than the first, carry nothing.
    quiet = translate(
        [b"data: [1]\n\n", b'data: {"choices":[{"index":1,"delta":{"content":"x"}}]}\n\n', b"data: [DONE]\n\n"]
    )
    assert [kind for kind, _ in events_of(quiet)] == ["message_start", "ping", "message_delta", "message_stop"]

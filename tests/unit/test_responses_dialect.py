"""The Responses API over chat completions: request and answer translations (golden files from
the API reference's shapes) and the stream translator, whose output must not depend on how the
chat stream's bytes were split."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.dialects.responses import (
    ResponsesRequestError,
    chat_body_from_responses,
    parse_request,
    response_from_chat,
)
from providers.dialects.responses_stream import ResponsesStreamTranslator

GOLDEN = Path(__file__).parent.parent / "golden" / "responses"
RESPONSE_ID, CREATED = "resp_0123456789abcdef01234567", 1764558000
SIMPLE = parse_request({"model": "fake/gpt-4o-mini", "input": "hi"})
STREAMS = ["stream_text", "stream_tools", "stream_error"]


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def translate(pieces: list[bytes]) -> bytes:
    translator = ResponsesStreamTranslator(SIMPLE, RESPONSE_ID, CREATED)
    out: list[bytes] = []
    for piece in pieces:
        out += translator.feed(piece)
    return b"".join(out + translator.close())


def events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for block in stream.decode().split("\n\n"):
        if block:
            event_line, data_line = block.split("\n")
            parsed.append((event_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return parsed


def test_responses_request_golden_translates_to_chat() -> None:
    request, chat = chat_body_from_responses(golden("request.responses.json"))
    assert chat == golden("request.chat.json")
    assert request.model == "fake/gpt-4o-mini" and request.stream


@pytest.mark.parametrize("name", ["response_text", "response_tools"])
def test_responses_answer_golden_translates_from_chat(name: str) -> None:
    translated = response_from_chat(golden(f"{name}.chat.json"), SIMPLE, RESPONSE_ID, CREATED)
    assert translated == golden(f"{name}.responses.json")


def test_responses_answer_keeps_tollway_meta_and_asked_model() -> None:
    translated = response_from_chat(golden("response_text.chat.json"), SIMPLE, RESPONSE_ID, CREATED)
    assert translated["_tollway"]["request_id"] == "req_0123456789abcdef01234567"
    assert translated["model"] == "fake/gpt-4o-mini"  # the slug asked, not the upstream's name
    assert translated["usage"]["input_tokens_details"]["cached_tokens"] == 4


def test_responses_answer_cut_by_the_cap_is_incomplete() -> None:
    chat = golden("response_text.chat.json")
    chat["choices"][0]["finish_reason"] = "length"
    translated = response_from_chat(chat, SIMPLE, RESPONSE_ID, CREATED)
    assert translated["status"] == "incomplete"
    assert translated["incomplete_details"] == {"reason": "max_output_tokens"}
    assert translated["output"][0]["status"] == "incomplete"


def test_responses_string_input_and_function_output_parts() -> None:
    _request, chat = chat_body_from_responses({"model": "m", "input": "Say hello", "instructions": "Be brief."})
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    _request, chat = chat_body_from_responses(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "sunny"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "metadata": {"a": "b"},
            "store": False,
        }
    )
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "tool"]
    assert [c["id"] for c in chat["messages"][1]["tool_calls"]] == ["c1", "c2"]
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert "metadata" not in chat and "store" not in chat and "stream" not in chat


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "hi", "store": True}, "store"),
        ({"model": "m", "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": "hi", "background": True}, "background"),
        ({"model": "m", "input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "m", "input": "hi", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"model": "m", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "max_output_tokens": 2**64}, "max_output_tokens"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0].type"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, None),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0]"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0]"),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": 5, "output": "x"}]}, "input[0]"),
        ({"model": "m", "input": ["bare string"]}, "input[0]"),
        ({"model": "m", "input": [{"role": "system", "content": "only instructions"}]}, "input"),
        ({"model": "m", "input": "hi", "temperature": "hot"}, "temperature"),
    ],
)
def test_responses_bad_request_names_the_param(body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(ResponsesRequestError) as caught:
        chat_body_from_responses(body)
    if param is None:
        assert caught.value.param is not None and caught.value.param.startswith("input[0].content[0]")
    else:
        assert caught.value.param == param
    assert caught.value.message


@pytest.mark.parametrize("name", STREAMS)
def test_responses_stream_golden(name: str) -> None:
    translated = translate([(GOLDEN / f"{name}.chat.sse").read_bytes()])
    assert translated == (GOLDEN / f"{name}.responses.sse").read_bytes()
    parsed = events(translated)
    assert [data["sequence_number"] for _kind, data in parsed] == list(range(len(parsed)))
    assert all(kind == data["type"] for kind, data in parsed)


def test_responses_stream_text_events_in_order() -> None:
    parsed = events((GOLDEN / "stream_text.responses.sse").read_bytes())
    assert [kind for kind, _ in parsed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = parsed[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Héllo 👋"
    assert final["usage"]["total_tokens"] == 24 and final["_tollway"]["credits_used"] == "0.00495"


def test_responses_stream_error_ends_failed() -> None:
    parsed = events((GOLDEN / "stream_error.responses.sse").read_bytes())
    assert [kind for kind, _ in parsed[-2:]] == ["error", "response.failed"]
    assert parsed[-2][1]["code"] == "upstream_unavailable"
    failed = parsed[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["usage"]["output_tokens"] == 2  # what was streamed is billed and reported


def test_responses_stream_without_done_still_completes() -> None:
    chat = (GOLDEN / "stream_text.chat.sse").read_bytes().replace(b"data: [DONE]\n\n", b"")
    assert translate([chat]) == (GOLDEN / "stream_text.responses.sse").read_bytes()


def test_responses_stream_top_level_error_event_fails() -> None:
    chat = (
        b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\ndata: {"error":{"message":"boom","code":"c"}}\n\n'
    )
    parsed = events(translate([chat]))
    assert parsed[-1][0] == "response.failed" and parsed[-2][1]["message"] == "boom"


@pytest.mark.parametrize("name", STREAMS)
def test_responses_stream_split_at_every_byte_offset(name: str) -> None:
    chat = (GOLDEN / f"{name}.chat.sse").read_bytes()
    expected = (GOLDEN / f"{name}.responses.sse").read_bytes()
    for offset in range(len(chat) + 1):
        assert translate([chat[:offset], chat[offset:]]) == expected, offset


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(STREAMS), st.lists(st.integers(min_value=0, max_value=4000), max_size=16))
def test_responses_stream_split_at_any_offsets(name: str, cuts: list[int]) -> None:
    chat = (GOLDEN / f"{name}.chat.sse").read_bytes()
    bounds = [0, *sorted(min(cut, len(chat)) for cut in cuts), len(chat)]
    expected = (GOLDEN / f"{name}.responses.sse").read_bytes()
    assert translate([chat[a:b] for a, b in itertools.pairwise(bounds)]) == expected


def test_responses_stream_cut_by_the_cap_ends_incomplete() -> None:
    chat = (
        (GOLDEN / "stream_text.chat.sse").read_bytes().replace(b'"finish_reason":"stop"', b'"finish_reason":"length"')
    )
    parsed = events(translate([chat]))
    assert parsed[-1][0] == "response.incomplete"
    final = parsed[-1][1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"

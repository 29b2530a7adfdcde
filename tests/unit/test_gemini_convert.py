"""Gemini conversions against golden files built from Google's API reference shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from providers.base import Usage
from providers.errors import UpstreamHTTPError
from providers.gemini.convert import (
    StreamTranslator,
    chunk_text,
    finish_reason,
    request_to_gemini,
    response_to_openai,
    usage_from_metadata,
)
from providers.gemini.errors import GeminiRequestError, http_error, parse_error
from providers.gemini.types import response_decoder
from providers.sse import SSEParser

GOLDEN = Path(__file__).parent.parent / "golden" / "gemini"
CREATED = 1_700_000_000


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def user(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize(
    "name", ["request_chat.json", "request_images.json", "request_tools.json", "request_response_format.json"]
)
def test_request_to_gemini_matches_golden(name: str) -> None:
    case = golden(name)
    assert request_to_gemini(case["openai"]) == case["gemini"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_request_tool_choice_maps_to_function_calling_config(choice: Any, expected: dict[str, Any]) -> None:
    request = request_to_gemini({**user("hi"), "tool_choice": choice})
    assert request["toolConfig"] == {"functionCallingConfig": expected}


def test_request_json_object_sets_mime_type_only() -> None:
    request = request_to_gemini({**user("hi"), "response_format": {"type": "json_object"}})
    assert request["generationConfig"] == {"responseMimeType": "application/json"}


def test_request_text_response_format_and_empty_stop_add_nothing() -> None:
    request = request_to_gemini({**user("hi"), "response_format": {"type": "text"}, "stop": []})
    assert request == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_request_tool_result_uses_name_from_latest_call_with_that_id() -> None:
    def call(name: str) -> dict[str, Any]:
        return {"id": "call_0", "type": "function", "function": {"name": name, "arguments": ""}}

    body = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "tool_calls": [call("first")]},
            {"role": "tool", "tool_call_id": "call_0", "content": "1"},
            {"role": "assistant", "tool_calls": [call("second")]},
            {"role": "tool", "tool_call_id": "call_0", "content": "[1, 2]"},
        ]
    }
    contents = request_to_gemini(body)["contents"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "first", "args": {}}}]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "first", "response": {"content": 1}}}]
    assert contents[4]["parts"] == [{"functionResponse": {"name": "second", "response": {"content": [1, 2]}}}]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": "hi"},
        {"messages": [{"role": "critic", "content": "hi"}]},
        user([{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}]),
        user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,***"}}]),
        user([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]),
        user([{"type": "video", "video": {}}]),
        {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}
            ]
        },
        {**user("hi"), "tools": [{"type": "retrieval"}]},
        {**user("hi"), "tool_choice": "sometimes"},
    ],
)
def test_request_rejects_what_gemini_cannot_express(body: dict[str, Any]) -> None:
    with pytest.raises(GeminiRequestError) as raised:
        request_to_gemini(body)
    assert raised.value.status_code == 400


@pytest.mark.parametrize("name", ["response_text.json", "response_function_call.json", "response_prompt_blocked.json"])
def test_response_to_openai_matches_golden(name: str) -> None:
    case = golden(name)
    view = response_decoder.decode(json.dumps(case["gemini"]))
    body = response_to_openai(view, model="gemini-fallback", fallback_id="chatcmpl-fallback", created=CREATED)
    assert body == case["openai"]
    assert view.usage_metadata is not None
    assert usage_from_metadata(view.usage_metadata) == msgspec.convert(case["usage"], Usage)


def test_response_without_usage_or_model_version_uses_fallbacks() -> None:
    view = response_decoder.decode(b'{"candidates": [{"content": {"parts": [{"text": "ok"}]}}]}')
    body = response_to_openai(view, model="gemini-2.0-flash", fallback_id="chatcmpl-x", created=CREATED)
    assert body["id"] == "chatcmpl-x"
    assert body["model"] == "gemini-2.0-flash"
    assert "usage" not in body
    # A candidate with no finishReason in a whole response still ends: OpenAI has no null there.
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "ok", "refusal": None}, "logprobs": None,
         "finish_reason": "stop"}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("OTHER", False, "stop"),
        ("FINISH_REASON_UNSPECIFIED", False, "stop"),
        (None, False, None),
    ],
)
def test_finish_reason_mapping(reason: str | None, calls: bool, expected: str | None) -> None:
    assert finish_reason(reason, calls) == expected


def translate(pieces: list[bytes]) -> list[dict[str, Any]]:
    parser = SSEParser()
    translator = StreamTranslator(model="gemini-fallback", fallback_id="chatcmpl-fallback", created=CREATED)
    chunks: list[dict[str, Any]] = []
    for piece in pieces:
        for event in parser.feed(piece):
            chunks.extend(translator.feed(response_decoder.decode(event.data)))
    for event in parser.close():
        chunks.extend(translator.feed(response_decoder.decode(event.data)))
    final = translator.finish()
    if final is not None:
        chunks.append(final)
    return chunks


@pytest.mark.parametrize("name", ["stream_text", "stream_function_call"])
def test_stream_translation_matches_golden(name: str) -> None:
    assert translate([(GOLDEN / f"{name}.sse").read_bytes()]) == golden(f"{name}.expected.json")


@pytest.mark.parametrize("name", ["stream_text", "stream_function_call"])
def test_stream_translation_split_at_every_byte_offset(name: str) -> None:
    raw = (GOLDEN / f"{name}.sse").read_bytes()
    expected = golden(f"{name}.expected.json")
    for offset in range(len(raw) + 1):
        assert translate([raw[:offset], raw[offset:]]) == expected, offset


def test_stream_chunks_share_id_created_and_model() -> None:
    chunks = translate([(GOLDEN / "stream_text.sse").read_bytes()])
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        ("p5ytaOKVGu3Rz7IP1a7M-Ac", CREATED, "gemini-2.5-flash")
    }


def test_stream_blocked_prompt_ends_with_content_filter() -> None:
    translator = StreamTranslator(model="gemini-2.5-flash", fallback_id="chatcmpl-b", created=CREATED)
    view = response_decoder.decode(b'{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}')
    chunks = translator.feed(view)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "content_filter"]
    assert chunks[0]["id"] == "chatcmpl-b"
    assert translator.finish() is None


def test_chunk_text_counts_content_and_tool_arguments() -> None:
    chunks = golden("stream_function_call.expected.json")
    assert chunk_text(chunks[1]) == 'dim_lights{"brightness":20}get_weather{"city":"Paris"}'
    assert chunk_text(golden("stream_text.expected.json")[2]) == "eight paws — 🐾 ×8."


def test_parse_error_reads_google_envelope_and_array_form() -> None:
    body = {"error": {"code": 400, "message": "Bad schema", "status": "INVALID_ARGUMENT"}}
    info = parse_error(json.dumps(body).encode())
    assert (info.message, info.status, info.code, info.bad_credentials) == (
        "Bad schema",
        "INVALID_ARGUMENT",
        400,
        False,
    )
    assert parse_error(json.dumps([body]).encode()).message == "Bad schema"
    assert parse_error(b"<html>502 Bad Gateway</html>").message == "<html>502 Bad Gateway</html>"


def test_invalid_key_400_becomes_auth_failure_without_upstream_text() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    error = http_error("gemini", 400, parse_error(json.dumps(body).encode()))
    assert (error.status_code, error.code) == (502, "upstream_auth_failed")
    assert "API key" not in error.message


@pytest.mark.parametrize(
    ("status", "google_status", "http_status", "code"),
    [
        (400, "INVALID_ARGUMENT", 400, "invalid_argument"),
        (403, "PERMISSION_DENIED", 502, "upstream_auth_failed"),
        (429, "RESOURCE_EXHAUSTED", 429, "upstream_rate_limited"),
        (500, "INTERNAL", 502, "upstream_error"),
        (503, "UNAVAILABLE", 502, "upstream_error"),
    ],
)
def test_http_error_status_mapping(status: int, google_status: str, http_status: int, code: str) -> None:
    raw = json.dumps({"error": {"code": status, "message": "upstream says no", "status": google_status}}).encode()
    error = http_error("gemini", status, parse_error(raw))
    assert (error.status_code, error.code) == (http_status, code)
    assert isinstance(error, UpstreamHTTPError)
    assert ("upstream says no" in error.detail) == (status != 403)
    assert "upstream says no" not in error.message

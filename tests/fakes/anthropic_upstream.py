"""A fake Anthropic Messages API server speaking the real wire format.

Shapes follow Anthropic's API reference: ``message`` bodies with ``usage`` (including
``cache_creation_input_tokens`` / ``cache_read_input_tokens``), streams framed as
``event: <type>\\ndata: <json>\\n\\n`` (message_start, content_block_start, ping,
content_block_delta, content_block_stop, message_delta, message_stop, and ``error``), and
``{"type": "error", "error": {"type", "message"}}`` bodies. Tests steer it through attributes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.asgi import ReceivedRequest, read_request, serve_lifespan

Scope = dict[str, Any]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class FakeAnthropic:
    api_key: str = "sk-ant-fake-upstream-key"
    version: str = "2023-06-01"
    reply_words: list[str] = field(default_factory=lambda: ["Hello", "from", "the", "fake", "Claude"])
    input_tokens: int = 21
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    tool_call: bool = False
    tool_id: str = "toolu_01FakeToolUse"
    tool_name: str = "get_weather"
    tool_input: dict[str, Any] = field(default_factory=lambda: {"location": "San Francisco, CA", "unit": "celsius"})
    fail_status: int = 0
    fail_message: str = "The fake upstream was told to fail"
    fail_times: int | None = None  # None: fail every request while fail_status is set
    stream_error_after: int | None = None  # send an ``error`` event after this many text deltas
    chunk_delay_s: float = 0.0
    received: list[ReceivedRequest] = field(default_factory=list)
    served: int = 0

    def output_tokens(self) -> int:
        return len(self.reply_words) + (12 if self.tool_call else 0)

    def usage(self, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "output_tokens": output_tokens,
        }

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        headers, body = await read_request(scope, receive)
        path = scope["path"]
        parsed = json.loads(body) if body else {}
        self.received.append(ReceivedRequest(path, headers, parsed))
        if headers.get("x-api-key") != self.api_key:
            # Like the real API, the message names the key: the adapter must not pass it on.
            await _json(send, 401, _error("authentication_error", f"invalid x-api-key {headers.get('x-api-key')}"))
            return
        if headers.get("anthropic-version") != self.version:
            await _json(send, 400, _error("invalid_request_error", "anthropic-version: header is required"))
            return
        if path != "/v1/messages" or scope["method"] != "POST":
            await _json(send, 404, _error("not_found_error", f"Not found: {scope['method']} {path}"))
            return
        if self.fail_status and (self.fail_times is None or self.fail_times > 0):
            if self.fail_times is not None:
                self.fail_times -= 1
            kind = ERROR_TYPES.get(self.fail_status, "api_error")
            await _json(send, self.fail_status, _error(kind, self.fail_message))
            return
        self.served += 1
        if parsed.get("stream"):
            await self._stream(parsed, send)
        else:
            await _json(send, 200, self._message(parsed))

    def _message(self, request: dict[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": " ".join(self.reply_words)}]
        if self.tool_call:
            content.append({"type": "tool_use", "id": self.tool_id, "name": self.tool_name, "input": self.tool_input})
        return {
            "id": "msg_fake123",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", ""),
            "content": content,
            "stop_reason": "tool_use" if self.tool_call else "end_turn",
            "stop_sequence": None,
            "usage": self.usage(self.output_tokens()),
        }

    async def _stream(self, request: dict[str, Any], send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        start = {
            "id": "msg_fake123",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self.usage(1),
        }
        await _event(send, "message_start", {"message": start})
        await _event(send, "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        await _event(send, "ping", {})
        for index, word in enumerate(self.reply_words):
            if self.stream_error_after is not None and index >= self.stream_error_after:
                await _event(send, "error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            text = word if index == 0 else " " + word
            await _event(send, "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
        await _event(send, "content_block_stop", {"index": 0})
        if self.tool_call:
            block = {"type": "tool_use", "id": self.tool_id, "name": self.tool_name, "input": {}}
            await _event(send, "content_block_start", {"index": 1, "content_block": block})
            arguments = json.dumps(self.tool_input)
            middle = len(arguments) // 2
            for piece in ("", arguments[:middle], arguments[middle:]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                await _event(send, "content_block_delta", {"index": 1, "delta": delta})
            await _event(send, "content_block_stop", {"index": 1})
        stop_reason = "tool_use" if self.tool_call else "end_turn"
        await _event(
            send,
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": self.output_tokens()},
            },
        )
        await _event(send, "message_stop", {})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _event(send: Any, kind: str, payload: dict[str, Any]) -> None:
    data = json.dumps({"type": kind, **payload})
    await send({"type": "http.response.body", "body": f"event: {kind}\ndata: {data}\n\n".encode(), "more_body": True})


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake123"}


async def _json(send: Any, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})

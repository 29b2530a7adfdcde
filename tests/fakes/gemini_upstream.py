"""A fake Gemini ``generateContent`` server speaking the real wire format.

Shapes follow Google's API reference: ``GenerateContentResponse`` bodies with ``usageMetadata``
(``cachedContentTokenCount``, ``thoughtsTokenCount``), ``modelVersion`` and ``responseId``;
``?alt=sse`` streams whose events are response fragments framed ``data: <json>\\r\\n\\r\\n`` with
cumulative usage on each; and the ``{"error": {"code", "message", "status", "details"}}``
envelope, including Google's 400 ``API_KEY_INVALID`` for a wrong key and 403 for none.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.asgi import read_request, serve_lifespan

Scope = dict[str, Any]

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class ReceivedRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeGemini:
    api_key: str = "AIza-fake-upstream-key"
    reply_words: list[str] = field(default_factory=lambda: ["Hello", "from", "the", "fake", "Gemini"])
    prompt_tokens: int = 17
    cached_tokens: int = 0
    thoughts_tokens: int = 0
    function_call: bool = False
    function_name: str = "get_weather"
    function_args: dict[str, Any] = field(default_factory=lambda: {"city": "Paris"})
    fail_status: int = 0
    fail_message: str = "The fake upstream was told to fail"
    fail_times: int = 0
    stream_error_after: int | None = None
    # "payload": an SSE error event as Google sends one; "abort": the connection drops.
    stream_error_kind: str = "payload"
    chunk_delay_s: float = 0.0
    model_version: str = "gemini-2.5-flash"
    response_id: str = "fakeResp123"
    received: list[ReceivedRequest] = field(default_factory=list)
    served: int = 0

    def usage(self, words: int | None = None) -> dict[str, Any]:
        candidates = len(self.reply_words) if words is None else words
        if self.function_call:
            candidates = 5
        usage: dict[str, Any] = {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": self.prompt_tokens + candidates + self.thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        }
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = self.cached_tokens
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        return usage

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        headers, body = await read_request(scope, receive)
        path: str = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode())
        parsed = json.loads(body) if body else {}
        self.received.append(ReceivedRequest(path, query, headers, parsed))
        key = headers.get("x-goog-api-key")
        if not key:
            await _json(
                send,
                403,
                _error(
                    403,
                    "Method doesn't allow unregistered callers (callers without established identity). "
                    "Please use API Key or other form of API consumer identity to call this API.",
                    "PERMISSION_DENIED",
                ),
            )
            return
        if key != self.api_key:
            await _json(
                send,
                400,
                _error(400, f"API key not valid. Please pass a valid API key. ({key[:6]}...)", "INVALID_ARGUMENT"),
                reason="API_KEY_INVALID",
            )
            return
        model, _, method = path.removeprefix("/v1beta/models/").partition(":")
        if not path.startswith("/v1beta/models/") or method not in ("generateContent", "streamGenerateContent"):
            await _json(send, 404, _error(404, f"Unknown path {path}", "NOT_FOUND"))
            return
        if self.fail_times > 0:
            self.fail_times -= 1
            await _json(
                send, self.fail_status, _error(self.fail_status, self.fail_message, _STATUS_NAMES[self.fail_status])
            )
            return
        self.served += 1
        if method == "generateContent":
            await _json(send, 200, self._response(model))
        elif query.get("alt") == ["sse"]:
            await self._stream(model, send)
        else:
            await _json(send, 400, _error(400, "this fake only streams with alt=sse", "INVALID_ARGUMENT"))

    def _parts(self) -> list[dict[str, Any]]:
        if self.function_call:
            return [{"functionCall": {"name": self.function_name, "args": self.function_args}}]
        return [{"text": " ".join(self.reply_words)}]

    def _response(self, model: str) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"parts": self._parts(), "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": self.usage(),
            "modelVersion": self.model_version or model,
            "responseId": self.response_id,
        }

    async def _stream(self, model: str, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"x-content-type-options", b"nosniff")],
            }
        )

        def event(parts: list[dict[str, Any]], words: int, finish: str | None = None) -> bytes:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            fragment = {
                "candidates": [candidate],
                "usageMetadata": self.usage(words),
                "modelVersion": self.model_version or model,
                "responseId": self.response_id,
            }
            return b"data: " + json.dumps(fragment, separators=(",", ":")).encode() + b"\r\n\r\n"

        if self.function_call:
            await send({"type": "http.response.body", "body": event(self._parts(), 5, "STOP"), "more_body": False})
            return
        last = len(self.reply_words) - 1
        for index, word in enumerate(self.reply_words):
            if self.stream_error_after is not None and index >= self.stream_error_after:
                if self.stream_error_kind == "abort":
                    raise ConnectionAbortedError("fake upstream dies mid-stream")
                error = json.dumps(_error(500, "An internal error has occurred.", "INTERNAL")).encode()
                await send({"type": "http.response.body", "body": b"data: " + error + b"\r\n\r\n", "more_body": False})
                return
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            text = word if index == 0 else " " + word
            data = event([{"text": text}], index + 1, "STOP" if index == last else None)
            await send({"type": "http.response.body", "body": data, "more_body": index != last})


def _error(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


async def _json(send: Any, status: int, payload: dict[str, Any], *, reason: str = "") -> None:
    if reason:
        payload["error"]["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=UTF-8"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})

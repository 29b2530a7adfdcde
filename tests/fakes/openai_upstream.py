"""A fake OpenAI chat-completions server speaking the real wire format.

Shapes follow OpenAI's API reference: ``chat.completion`` bodies with ``usage`` (including
``prompt_tokens_details.cached_tokens``), ``chat.completion.chunk`` SSE events ending in
``data: [DONE]``, a final ``choices: []`` usage chunk when ``stream_options.include_usage`` is
set, and ``{"error": {...}}`` bodies. Tests steer it through attributes and read what it got.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    api_key: str = "sk-fake-upstream-key"
    reply_words: list[str] = field(default_factory=lambda: ["Hello", "from", "the", "fake", "upstream"])
    prompt_tokens: int = 21
    cached_tokens: int = 0
    fail_status: int = 0
    fail_times: int = 0
    stream_error_after: int | None = None
    omit_usage: bool = False
    chunk_delay_s: float = 0.0
    response_delay_s: float = 0.0
    received: list[ReceivedRequest] = field(default_factory=list)
    served: int = 0
    # Azure OpenAI mode: deployment URLs, an api-version query parameter and an api-key header.
    azure_deployment: str | None = None
    azure_api_version: str = "2024-10-21"
    disconnected: int = 0

    def usage(self) -> dict[str, Any]:
        completion = len(self.reply_words)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        parsed = json.loads(body) if body else {}
        self.received.append(ReceivedRequest(path, headers, parsed))
        if self.azure_deployment is not None:
            if headers.get("api-key") != self.api_key:
                await _json(
                    send, 401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}
                )
                return
            query = scope.get("query_string", b"").decode()
            if f"api-version={self.azure_api_version}" not in query.split("&"):
                await _json(send, 404, {"error": {"code": "404", "message": "Resource not found"}})
                return
            if path != f"/openai/deployments/{self.azure_deployment}/chat/completions":
                await _json(
                    send,
                    404,
                    {
                        "error": {
                            "code": "DeploymentNotFound",
                            "message": "The API deployment for this resource does not exist.",
                        }
                    },
                )
                return
            path = "/v1/chat/completions"
        elif headers.get("authorization") != f"Bearer {self.api_key}":
            await _json(
                send,
                401,
                _error("Incorrect API key provided: sk-fak***key", "invalid_request_error", "invalid_api_key"),
            )
            return
        if path != "/v1/chat/completions" or scope["method"] != "POST":
            await _json(
                send, 404, _error(f"Unknown request URL: {scope['method']} {path}", "invalid_request_error", None)
            )
            return
        if self.fail_times > 0:
            self.fail_times -= 1
            kind = "server_error" if self.fail_status >= 500 else "invalid_request_error"
            await _json(send, self.fail_status, _error("The fake upstream was told to fail", kind, None))
            return
        if self.response_delay_s:
            await asyncio.sleep(self.response_delay_s)
        if parsed.get("stream"):
            await self._stream(parsed, send, receive)
        else:
            self.served += 1
            await _json(send, 200, self._completion(parsed))

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake123",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": request.get("model", ""),
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(self.reply_words), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage(),
        }

    async def _stream(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        self.served += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        base = {
            "id": "chatcmpl-fake123",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": request.get("model", ""),
            "system_fingerprint": "fp_fake",
        }
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        if self.azure_deployment is not None:
            # Azure opens a stream with a content-filter report that has no choices.
            await send(
                {
                    "type": "http.response.body",
                    "body": b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
                    b'"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}\n\n',
                    "more_body": True,
                }
            )

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n"

        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await _body(
                send,
                event(
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": "", "refusal": None},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                ),
            )
            for index, word in enumerate(self.reply_words):
                if self.stream_error_after is not None and index >= self.stream_error_after:
                    raise ConnectionAbortedError("fake upstream dies mid-stream")
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                if gone.is_set():
                    raise ConnectionResetError("the client went away")
                text = word if index == 0 else " " + word
                await _body(
                    send, event([{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}])
                )
            await _body(send, event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
            if include_usage and not self.omit_usage:
                await _body(send, event([], usage=self.usage()))
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        except ConnectionResetError:
            self.disconnected += 1  # the gateway cancelled its upstream request
        finally:
            watcher.cancel()


async def _body(send: Any, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


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

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
from email.parser import BytesParser
from email.policy import default
from typing import Any

from tests.fakes.asgi import ReceivedRequest, read_request, serve_lifespan
from tests.fakes.responses_upstream import golden_usage, response_body, stream_events

Scope = dict[str, Any]


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
    image_usage: bool = False  # gpt-image-1 reports token usage; dall-e models do not
    transcription_seconds: int = 9
    transcription_tokens: bool = False  # gpt-4o-transcribe bills tokens; whisper-1 seconds
    video_outcome: str = "in_progress"
    canned_completion: dict[str, Any] | None = None  # a recorded answer to send back verbatim
    video_jobs: int = 0
    disconnected: int = 0
    usage_override: Any = None  # a lying upstream: sent verbatim as ``usage`` when set
    fail_headers: dict[str, str] = field(default_factory=dict)  # sent with each told failure (Retry-After)
    fail_param: str | None = None  # the ``param`` of each told failure's error body

    def usage(self) -> Any:
        if self.usage_override is not None:
            return self.usage_override
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
            await serve_lifespan(receive, send)
            return
        headers, body = await read_request(scope, receive)
        path = scope["path"]
        if headers.get("content-type", "").startswith("multipart/form-data"):
            parsed = _multipart(headers["content-type"], body)
        else:
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
        if path.startswith("/v1/videos/") and scope["method"] == "GET":
            await self._video_get(path, scope.get("query_string", b"").decode(), send)
            return
        if path in _ROUTES and scope["method"] == "POST":
            if self.fail_times > 0:
                self.fail_times -= 1
                await _json(send, self.fail_status, _error("The fake upstream was told to fail", "server_error", None))
                return
            self.served += 1
            await getattr(self, _ROUTES[path])(parsed, send, receive)
            return
        if path != "/v1/chat/completions" or scope["method"] != "POST":
            await _json(
                send, 404, _error(f"Unknown request URL: {scope['method']} {path}", "invalid_request_error", None)
            )
            return
        if self.fail_times > 0:
            self.fail_times -= 1
            kind = "server_error" if self.fail_status >= 500 else "invalid_request_error"
            told = _error("The fake upstream was told to fail", kind, None)
            told["error"]["param"] = self.fail_param
            await _json(send, self.fail_status, told, self.fail_headers)
            return
        if self.response_delay_s and not parsed.get("stream"):
            if await _disconnected_within(receive, self.response_delay_s):
                self.disconnected += 1  # the gateway cancelled its upstream request
                return
        elif self.response_delay_s:
            await asyncio.sleep(self.response_delay_s)
        if parsed.get("stream"):
            await self._stream(parsed, send, receive)
        else:
            self.served += 1
            await _json(send, 200, self.canned_completion or self._completion(parsed))

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

    # -- the other /v1 routes, shaped like OpenAI's API reference -------------------------

    async def _video_create(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        self.video_jobs += 1
        job = {
            "id": f"video_fake{self.video_jobs}",
            "object": "video",
            "created_at": 1_700_000_000,
            "status": "queued",
            "model": request.get("model", "sora-2"),
            "progress": 0,
            "seconds": str(request.get("seconds", "4")),
            "size": request.get("size", "720x1280"),
            "prompt": request.get("prompt"),
        }
        await _json(send, 200, job)

    async def _video_get(self, path: str, query: str, send: Any) -> None:
        video_id = path.removeprefix("/v1/videos/").removesuffix("/content")
        if path.endswith("/content"):
            variant = "thumbnail" if "variant=thumbnail" in query else "video"
            media = b"image/webp" if variant == "thumbnail" else b"video/mp4"
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", media)]})
            await send({"type": "http.response.body", "body": b"\x00\x00\x00\x18ftypmp42" + video_id.encode()})
            return
        failed = self.video_outcome == "failed"
        job = {
            "id": video_id,
            "object": "video",
            "created_at": 1_700_000_000,
            "status": self.video_outcome,
            "model": "sora-2",
            "progress": 100 if self.video_outcome == "completed" else 40,
            "seconds": "4",
            "size": "720x1280",
            "error": {"code": "moderation_blocked", "message": "blocked"} if failed else None,
        }
        await _json(send, 200, job)

    async def _embeddings(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), -0.2, 0.3]} for i in range(len(inputs))
        ]
        usage = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        await _json(send, 200, {"object": "list", "data": data, "model": request["model"], "usage": usage})

    async def _completions(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        base = {"id": "cmpl-fake123", "object": "text_completion", "created": 1_700_000_000, "model": request["model"]}
        if not request.get("stream"):
            choice = {"text": " ".join(self.reply_words), "index": 0, "logprobs": None, "finish_reason": "stop"}
            await _json(send, 200, {**base, "choices": [choice], "usage": self.usage()})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for index, word in enumerate(self.reply_words):
            if self.stream_error_after is not None and index >= self.stream_error_after:
                raise ConnectionAbortedError("fake upstream dies mid-stream")
            text = word if index == 0 else " " + word
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": None}
            await _body(send, b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n")
        last = {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
        await _body(send, b"data: " + json.dumps({**base, "choices": [last]}).encode() + b"\n\n")
        if (request.get("stream_options") or {}).get("include_usage") and not self.omit_usage:
            await _body(send, b"data: " + json.dumps({**base, "choices": [], "usage": self.usage()}).encode() + b"\n\n")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _responses(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        """The Responses API (api.openai.com's ``POST /v1/responses``): its events one write each."""
        usage = None if self.omit_usage else (self.usage_override or golden_usage())
        if not request.get("stream"):
            await _json(send, 200, response_body(request["model"], usage))
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for index, event in enumerate(stream_events(request["model"], usage)):
            if self.stream_error_after is not None and index >= self.stream_error_after:
                raise ConnectionAbortedError("fake upstream dies mid-stream")
            if self.chunk_delay_s and await _disconnected_within(receive, self.chunk_delay_s):
                self.disconnected += 1  # the gateway closed its upstream stream
                return
            await _body(send, event)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _images(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        count = int(request.get("n") or 1)
        data = [{"b64_json": "iVBORw0KGgo=", "revised_prompt": request["prompt"]} for _ in range(count)]
        body: dict[str, Any] = {"created": 1_700_000_000, "data": data}
        if self.image_usage:
            body["usage"] = {
                "input_tokens": self.prompt_tokens,
                "output_tokens": 1056 * count,
                "total_tokens": self.prompt_tokens + 1056 * count,
                "input_tokens_details": {"text_tokens": self.prompt_tokens, "image_tokens": 0},
            }
        await _json(send, 200, body)

    async def _speech(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        audio = b"ID3" + request["input"].encode()[:32] + bytes(64)
        media = {"wav": b"audio/wav", "opus": b"audio/opus", "flac": b"audio/flac"}.get(
            request.get("response_format", "mp3"), b"audio/mpeg"
        )
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", media)]})
        await send({"type": "http.response.body", "body": audio})

    async def _transcriptions(self, request: dict[str, Any], send: Any, receive: Any) -> None:
        audio: bytes = request.get("file", b"")
        fmt = request.get("response_format", "json")
        text = " ".join(self.reply_words)
        seconds = self.transcription_seconds
        if fmt == "text":
            body, media = text.encode(), b"text/plain; charset=utf-8"
        elif fmt in ("srt", "vtt"):
            end = f"00:00:{int(seconds):02d}{',' if fmt == 'srt' else '.'}500"
            cue = f"1\n00:00:00{',' if fmt == 'srt' else '.'}000 --> {end}\n{text}\n"
            body, media = (("WEBVTT\n\n" if fmt == "vtt" else "") + cue).encode(), b"text/plain; charset=utf-8"
        else:
            payload: dict[str, Any] = {"text": text, "bytes_received": len(audio)}
            if fmt == "verbose_json":
                payload.update({"task": "transcribe", "language": "english", "duration": seconds + 0.5})
            elif self.transcription_tokens:
                payload["usage"] = {"type": "tokens", "input_tokens": 70, "output_tokens": 12, "total_tokens": 82}
            else:
                payload["usage"] = {"type": "duration", "seconds": seconds}
            body, media = json.dumps(payload).encode(), b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", media)]})
        await send({"type": "http.response.body", "body": body})


_ROUTES = {
    "/v1/videos": "_video_create",
    "/v1/embeddings": "_embeddings",
    "/v1/completions": "_completions",
    "/v1/responses": "_responses",
    "/v1/images/generations": "_images",
    "/v1/audio/speech": "_speech",
    "/v1/audio/transcriptions": "_transcriptions",
}


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Form fields as strings and files as bytes (enough of RFC 7578 for the tests)."""
    message = BytesParser(policy=default).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        decoded = part.get_payload(decode=True)  # bytes for a leaf part, which every form field is
        payload = decoded if isinstance(decoded, bytes) else b""
        fields[str(name)] = payload if part.get_filename() else payload.decode()
    return fields


async def _disconnected_within(receive: Any, seconds: float) -> bool:
    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(gone(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def _body(send: Any, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _json(send: Any, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    data = json.dumps(payload).encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": data})

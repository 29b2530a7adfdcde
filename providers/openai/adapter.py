"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Together, …).

Streams are forwarded as the upstream's own bytes: each SSE ``data`` payload is decoded only
into a small view (text and usage) for metering, never re-encoded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from providers.base import ChatCall, ChatResult, StreamChunk, UploadedFile, UpstreamReply
from providers.errors import ProviderError, UpstreamBadResponse
from providers.http import SSEStream, open_streaming, transport_error
from providers.openai.convert import stream_chunk, usage_from_body, with_stream_usage
from providers.openai.errors import http_error
from providers.sse import SSEEvent

_DONE = b"[DONE]"
RESPONSES_ROUTE = "/responses"
_json_encoder = msgspec.json.Encoder()


def openai_path(route: str, upstream_model: str) -> str:
    return route


class OpenAIAdapter:
    """OpenAI's REST surface under ``{base_url}``: chat, and every other ``/v1`` route passed
    through as JSON or multipart. ``path_for(route, model)`` maps a route to the upstream's
    URL path (Azure puts the deployment in it)."""

    def __init__(
        self, name: str, client: httpx.AsyncClient, *, path_for: Callable[[str, str], str] = openai_path
    ) -> None:
        self.name = name
        self._client = client
        self._path_for = path_for

    def _chat_path(self, upstream_model: str) -> str:
        return self._path_for("/chat/completions", upstream_model)

    async def complete(self, call: ChatCall) -> ChatResult:
        body = {**call.body, "stream": False}
        try:
            response = await self._client.post(
                self._chat_path(call.upstream_model), content=_json_encoder.encode(body), headers=_JSON
            )
        except httpx.HTTPError as error:
            raise transport_error(error, self.name) from error
        if response.status_code != 200:
            raise self._http_error(response.status_code, response.content).passing_on(response.headers)
        try:
            decoded: Any = msgspec.json.decode(response.content)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(f"upstream {self.name} sent invalid JSON", provider=self.name) from error
        if not isinstance(decoded, dict):
            raise UpstreamBadResponse(f"upstream {self.name} sent an unexpected body", provider=self.name)
        return ChatResult(body=decoded, usage=usage_from_body(decoded), raw=response.content)

    async def open_stream(self, call: ChatCall) -> SSEStream:
        return await self.open_json_stream("/chat/completions", call.upstream_model, call.body)

    async def open_json_stream(self, route: str, upstream_model: str, body: dict[str, Any]) -> SSEStream:
        # The Responses API reports usage on its final event unasked, and refuses the chat
        # streams' stream_options.include_usage; its events are not chat chunks either.
        responses = route == RESPONSES_ROUTE
        body = {**body, "stream": True} if responses else with_stream_usage({**body, "stream": True})
        request = self._client.build_request(
            "POST", self._path_for(route, upstream_model), content=_json_encoder.encode(body), headers=_JSON_SSE
        )
        response = await open_streaming(self._client, request, self.name, self._http_error)
        if responses:
            return SSEStream(response, self.name, _as_sent, end_marker=_DONE)
        return SSEStream(response, self.name, self._stream_chunks, end_marker=_DONE)

    def _stream_chunks(self, event: SSEEvent) -> tuple[StreamChunk]:
        # OpenAI-format streams are forwarded byte for byte: one event, one chunk.
        return (stream_chunk(self.name, event.data),)

    async def post_json(self, route: str, upstream_model: str, body: dict[str, Any]) -> UpstreamReply:
        return await self._send("POST", route, upstream_model, content=_json_encoder.encode(body), headers=_JSON)

    async def post_multipart(
        self, route: str, upstream_model: str, fields: list[tuple[str, str]], files: list[UploadedFile]
    ) -> UpstreamReply:
        content, content_type = multipart_body(fields, files)
        return await self._send("POST", route, upstream_model, content=content, headers={"content-type": content_type})

    async def get(self, route: str, upstream_model: str) -> UpstreamReply:
        return await self._send("GET", route, upstream_model)

    async def _send(self, method: str, route: str, upstream_model: str, **options: Any) -> UpstreamReply:
        try:
            response = await self._client.request(method, self._path_for(route, upstream_model), **options)
        except httpx.HTTPError as error:
            raise transport_error(error, self.name) from error
        if not 200 <= response.status_code < 300:
            raise self._http_error(response.status_code, response.content).passing_on(response.headers)
        media_type = response.headers.get("content-type", "application/octet-stream")
        return UpstreamReply(content=response.content, media_type=media_type, status_code=response.status_code)

    def _http_error(self, status: int, raw: bytes) -> ProviderError:
        return http_error(self.name, status, raw)

    async def aclose(self) -> None:
        await self._client.aclose()


def _as_sent(event: SSEEvent) -> tuple[StreamChunk]:
    """A Responses API event, untouched: the gateway reads what it meters itself."""
    return (StreamChunk(data=event.data),)


_JSON = {"content-type": "application/json"}
_JSON_SSE = {"content-type": "application/json", "accept": "text/event-stream"}


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")


def multipart_body(fields: list[tuple[str, str]], files: list[UploadedFile]) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578). Built here rather than by httpx, which falls back
    to urlencoded when there is no file, while these OpenAI routes always expect multipart."""
    boundary = "tollway-" + secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for file in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(file.field)}"; '
            f'filename="{_quoted(file.filename)}"\r\nContent-Type: {_quoted(file.content_type)}\r\n\r\n'
        )
        parts.append(head.encode() + file.content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"

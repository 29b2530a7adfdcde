"""Google Gemini (``generateContent`` / ``streamGenerateContent?alt=sse``) behind the OpenAI shape.

Unlike OpenAI-format upstreams, Gemini's stream cannot be forwarded byte for byte: each SSE
event is a ``GenerateContentResponse`` fragment that is translated and re-encoded as an
OpenAI ``chat.completion.chunk``. The client arrives with ``base_url`` and ``x-goog-api-key``
already set.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from providers.base import ChatCall, ChatResult, StreamChunk
from providers.errors import ProviderError, UpstreamBadResponse, UpstreamHTTPError
from providers.gemini.convert import (
    StreamTranslator,
    UpstreamErrorInfo,
    chunk_text,
    error_info,
    parse_error,
    request_to_gemini,
    response_to_openai,
    usage_from_metadata,
)
from providers.gemini.types import ErrorView, response_decoder
from providers.http import open_streaming, transport_error
from providers.sse import SSEParser

_json_encoder = msgspec.json.Encoder()

# Google's canonical status names, for errors that arrive inside a 200 stream.
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def http_error(provider: str, status: int, info: UpstreamErrorInfo) -> ProviderError:
    """An upstream error as our tree. Google answers a wrong key with 400 + ``API_KEY_INVALID``."""
    if info.bad_credentials:
        status = 401
    if status in (401, 403):
        # The upstream's text may quote part of our provider key: never pass it on.
        message, code = "the provider rejected the gateway's credentials", ""
    else:
        # Google's status names are meaningful to a caller only for its own mistakes (4xx).
        message, code = info.message, info.status.lower() if status < 500 else ""
    return UpstreamHTTPError(
        f"upstream {provider} answered {status}: {message}",
        provider=provider,
        upstream_status=status,
        upstream_code=code,
    )


def _new_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


class GeminiStream:
    def __init__(self, response: httpx.Response, provider: str, translator: StreamTranslator) -> None:
        self._response = response
        self._provider = provider
        self._translator = translator

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        parser = SSEParser()
        try:
            async for raw in self._response.aiter_bytes():
                for event in parser.feed(raw):
                    for chunk in self._translate(event.data):
                        yield chunk
            for event in parser.close():
                for chunk in self._translate(event.data):
                    yield chunk
            final = self._translator.finish()
            if final is not None and self._translator.usage_metadata is not None:
                usage = usage_from_metadata(self._translator.usage_metadata)
                yield StreamChunk(data=_json_encoder.encode(final), usage=usage)
        except httpx.HTTPError as error:
            raise transport_error(error, self._provider) from error
        finally:
            await self._response.aclose()

    def _translate(self, data: bytes) -> list[StreamChunk]:
        try:
            view = response_decoder.decode(data)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(
                f"upstream {self._provider} sent a malformed chunk", provider=self._provider
            ) from error
        if view.error is not None:
            info = error_info(ErrorView(error=view.error))
            status = view.error.code or _STATUS_CODES.get(view.error.status, 500)
            raise http_error(self._provider, status, info)
        return [
            StreamChunk(data=_json_encoder.encode(chunk), text=chunk_text(chunk))
            for chunk in self._translator.feed(view)
        ]

    async def aclose(self) -> None:
        await self._response.aclose()


class GeminiAdapter:
    """Chat completions against ``{base_url}/v1beta/models/{model}:generateContent``."""

    def __init__(self, name: str, client: httpx.AsyncClient) -> None:
        self.name = name
        self._client = client

    async def complete(self, call: ChatCall) -> ChatResult:
        content = _json_encoder.encode(request_to_gemini(call.body))
        try:
            response = await self._client.post(
                _path(call.upstream_model, "generateContent"), content=content, headers=_JSON
            )
        except httpx.HTTPError as error:
            raise transport_error(error, self.name) from error
        if response.status_code != 200:
            raise http_error(self.name, response.status_code, parse_error(response.content))
        try:
            view = response_decoder.decode(response.content)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(f"upstream {self.name} sent invalid JSON", provider=self.name) from error
        if view.error is not None:
            raise http_error(self.name, view.error.code or 500, error_info(ErrorView(error=view.error)))
        body = response_to_openai(view, model=call.upstream_model, fallback_id=_new_id(), created=int(time.time()))
        usage = usage_from_metadata(view.usage_metadata) if view.usage_metadata is not None else None
        return ChatResult(body=body, usage=usage)

    async def open_stream(self, call: ChatCall) -> GeminiStream:
        content = _json_encoder.encode(request_to_gemini(call.body))
        path = _path(call.upstream_model, "streamGenerateContent")
        request = self._client.build_request("POST", path, params=_SSE, content=content, headers=_JSON_SSE)
        response = await open_streaming(
            self._client, request, self.name, lambda status, raw: http_error(self.name, status, parse_error(raw))
        )
        translator = StreamTranslator(model=call.upstream_model, fallback_id=_new_id(), created=int(time.time()))
        return GeminiStream(response, self.name, translator)

    async def aclose(self) -> None:
        await self._client.aclose()


def _path(model: str, method: str) -> str:
    # A model name is a path segment: keep a configured "models/..." prefix from doubling up.
    name = model.removeprefix("models/")
    return f"/v1beta/models/{quote(name, safe='-._~')}:{method}"


_JSON = {"content-type": "application/json"}
_JSON_SSE = {"content-type": "application/json", "accept": "text/event-stream"}
_SSE: dict[str, Any] = {"alt": "sse"}

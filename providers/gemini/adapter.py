"""Google Gemini (``generateContent`` / ``streamGenerateContent?alt=sse``) behind the OpenAI shape.

Unlike OpenAI-format upstreams, Gemini's stream cannot be forwarded byte for byte: each SSE
event is a ``GenerateContentResponse`` fragment that is translated and re-encoded as an
OpenAI ``chat.completion.chunk``. The client arrives with ``base_url`` and ``x-goog-api-key``
already set.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from providers.base import ChatCall, ChatResult
from providers.errors import UpstreamBadResponse
from providers.gemini.convert import (
    EventTranslator,
    StreamTranslator,
    request_to_gemini,
    response_to_openai,
    usage_from_metadata,
)
from providers.gemini.errors import error_info, http_error, parse_error
from providers.gemini.types import ErrorView, response_decoder
from providers.http import SSEStream, open_streaming, transport_error

_json_encoder = msgspec.json.Encoder()


def auth_headers(api_key: str) -> dict[str, str]:
    return {"x-goog-api-key": api_key}


def _new_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


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
            refusal = http_error(self.name, response.status_code, parse_error(response.content))
            raise refusal.passing_on(response.headers)
        try:
            view = response_decoder.decode(response.content)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(f"upstream {self.name} sent invalid JSON", provider=self.name) from error
        if view.error is not None:
            raise http_error(self.name, view.error.code or 500, error_info(ErrorView(error=view.error)))
        body = response_to_openai(view, model=call.upstream_model, fallback_id=_new_id(), created=int(time.time()))
        usage = usage_from_metadata(view.usage_metadata) if view.usage_metadata is not None else None
        return ChatResult(body=body, usage=usage)

    async def open_stream(self, call: ChatCall) -> SSEStream:
        content = _json_encoder.encode(request_to_gemini(call.body))
        path = _path(call.upstream_model, "streamGenerateContent")
        request = self._client.build_request("POST", path, params=_SSE, content=content, headers=_JSON_SSE)
        response = await open_streaming(
            self._client, request, self.name, lambda status, raw: http_error(self.name, status, parse_error(raw))
        )
        translator = StreamTranslator(model=call.upstream_model, fallback_id=_new_id(), created=int(time.time()))
        events = EventTranslator(self.name, translator)
        return SSEStream(response, self.name, events.feed, finish=events.finish)

    async def aclose(self) -> None:
        await self._client.aclose()


def _path(model: str, method: str) -> str:
    # A model name is a path segment: keep a configured "models/..." prefix from doubling up.
    name = model.removeprefix("models/")
    return f"/v1beta/models/{quote(name, safe='-._~')}:{method}"


_JSON = {"content-type": "application/json"}
_JSON_SSE = {"content-type": "application/json", "accept": "text/event-stream"}
_SSE: dict[str, Any] = {"alt": "sse"}

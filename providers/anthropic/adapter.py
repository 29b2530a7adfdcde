"""Anthropic's Messages API (``POST /v1/messages``) behind the OpenAI-shaped adapter protocol.

The gateway's client already carries ``x-api-key`` and ``anthropic-version``. Unlike the
OpenAI adapter, streams cannot be forwarded byte for byte: each Anthropic event is decoded
and re-encoded as OpenAI chunks by :class:`StreamTranslator`. A client that speaks Messages
itself is served by :meth:`AnthropicAdapter.create_message` / :meth:`open_message_stream`,
which send its body as it is and read only what is metered (:mod:`providers.anthropic.native`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgspec

from providers.anthropic.convert import StreamTranslator, to_chat_completion, to_messages_request, usage_from_view
from providers.anthropic.errors import http_error
from providers.anthropic.native import NativeMessage, NativeStreamReader, message_text
from providers.anthropic.types import MessageView, message_decoder
from providers.base import ChatCall, ChatResult
from providers.errors import UpstreamBadResponse
from providers.http import SSEStream, open_streaming, transport_error

_PATH = "/v1/messages"
# The Messages API version every request names (``anthropic-version``); see auth_headers.
ANTHROPIC_VERSION = "2023-06-01"


def auth_headers(api_key: str) -> dict[str, str]:
    return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}


_json_encoder = msgspec.json.Encoder()


class AnthropicAdapter:
    """Chat completions translated to and from ``{base_url}/v1/messages``.

    ``default_max_tokens`` fills Anthropic's required ``max_tokens`` when the caller sent none.
    """

    def __init__(self, name: str, client: httpx.AsyncClient, *, default_max_tokens: int = 4096) -> None:
        self.name = name
        self._client = client
        self._default_max_tokens = default_max_tokens

    async def complete(self, call: ChatCall) -> ChatResult:
        body = to_messages_request(call.body, default_max_tokens=self._default_max_tokens)
        response = await self._post(body)
        try:
            message = message_decoder.decode(response.content)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(f"upstream {self.name} sent an unexpected body", provider=self.name) from error
        completion, usage = to_chat_completion(message, created=int(time.time()))
        return ChatResult(body=completion, usage=usage if message.usage is not None else None)

    async def open_stream(self, call: ChatCall) -> SSEStream:
        body = {**to_messages_request(call.body, default_max_tokens=self._default_max_tokens), "stream": True}
        request = self._client.build_request("POST", _PATH, content=_json_encoder.encode(body), headers=_JSON_SSE)
        response = await open_streaming(
            self._client, request, self.name, lambda status, raw: http_error(self.name, status, raw)
        )
        return SSEStream(response, self.name, StreamTranslator(self.name, created=int(time.time())).feed)

    async def create_message(self, body: dict[str, Any]) -> NativeMessage:
        """A Messages body sent as it is (the caller set ``model`` and capped ``max_tokens``);
        the answer comes back as its bytes, with the usage and text the gateway meters."""
        response = await self._post(body)
        try:
            decoded = msgspec.json.decode(response.content)
            message = msgspec.convert(decoded, MessageView)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise UpstreamBadResponse(f"upstream {self.name} sent an unexpected body", provider=self.name) from error
        if not isinstance(decoded, dict):
            raise UpstreamBadResponse(f"upstream {self.name} sent an unexpected body", provider=self.name)
        usage = usage_from_view(message.usage) if message.usage is not None else None
        return NativeMessage(raw=response.content, body=decoded, usage=usage, text=message_text(message))

    async def open_message_stream(self, body: dict[str, Any]) -> SSEStream:
        """A Messages body streamed as it is; each event comes out as a
        :class:`providers.anthropic.native.NativeEvent` with its ``data`` untouched."""
        request = self._client.build_request(
            "POST", _PATH, content=_json_encoder.encode({**body, "stream": True}), headers=_JSON_SSE
        )
        response = await open_streaming(
            self._client, request, self.name, lambda status, raw: http_error(self.name, status, raw)
        )
        reader = NativeStreamReader(self.name)
        return SSEStream(response, self.name, reader.translate, finish=reader.finish)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        try:
            response = await self._client.post(_PATH, content=_json_encoder.encode(body), headers=_JSON)
        except httpx.HTTPError as error:
            raise transport_error(error, self.name) from error
        if response.status_code != 200:
            raise http_error(self.name, response.status_code, response.content).passing_on(response.headers)
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


_JSON = {"content-type": "application/json"}
_JSON_SSE = {"content-type": "application/json", "accept": "text/event-stream"}

"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Together, …).

Streams are forwarded as the upstream's own bytes: each SSE ``data`` payload is decoded only
into a small view (text and usage) for metering, never re-encoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec

from providers.base import ChatCall, ChatResult, StreamChunk
from providers.errors import ProviderError, UpstreamBadResponse, UpstreamHTTPError
from providers.http import transport_error
from providers.openai.convert import chunk_text, error_message, usage_from_body, usage_from_view, with_stream_usage
from providers.openai.types import chunk_decoder
from providers.sse import SSEParser

_DONE = b"[DONE]"
_json_encoder = msgspec.json.Encoder()


class OpenAIStream:
    def __init__(self, response: httpx.Response, provider: str) -> None:
        self._response = response
        self._provider = provider

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        parser = SSEParser()
        try:
            async for raw in self._response.aiter_bytes():
                for event in parser.feed(raw):
                    if event.data == _DONE:
                        return
                    yield self._chunk(event.data)
            for event in parser.close():
                if event.data != _DONE:
                    yield self._chunk(event.data)
        except httpx.HTTPError as error:
            raise transport_error(error, self._provider) from error
        finally:
            await self._response.aclose()

    def _chunk(self, data: bytes) -> StreamChunk:
        try:
            view = chunk_decoder.decode(data)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(
                f"upstream {self._provider} sent a malformed chunk", provider=self._provider
            ) from error
        usage = usage_from_view(view.usage) if view.usage is not None else None
        return StreamChunk(data=data, text=chunk_text(view), usage=usage)

    async def aclose(self) -> None:
        await self._response.aclose()


def openai_chat_path(upstream_model: str) -> str:
    return "/chat/completions"


class OpenAIAdapter:
    """Chat completions against ``{base_url}/chat/completions`` (or ``chat_path(model)``)."""

    def __init__(
        self, name: str, client: httpx.AsyncClient, *, chat_path: Callable[[str], str] = openai_chat_path
    ) -> None:
        self.name = name
        self._client = client
        self._chat_path = chat_path

    async def complete(self, call: ChatCall) -> ChatResult:
        body = {**call.body, "stream": False}
        try:
            response = await self._client.post(
                self._chat_path(call.upstream_model), content=_json_encoder.encode(body), headers=_JSON
            )
        except httpx.HTTPError as error:
            raise transport_error(error, self.name) from error
        if response.status_code != 200:
            raise self._http_error(response.status_code, response.content)
        try:
            decoded: Any = msgspec.json.decode(response.content)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(f"upstream {self.name} sent invalid JSON", provider=self.name) from error
        if not isinstance(decoded, dict):
            raise UpstreamBadResponse(f"upstream {self.name} sent an unexpected body", provider=self.name)
        return ChatResult(body=decoded, usage=usage_from_body(decoded))

    async def open_stream(self, call: ChatCall) -> OpenAIStream:
        body = with_stream_usage({**call.body, "stream": True})
        request = self._client.build_request(
            "POST", self._chat_path(call.upstream_model), content=_json_encoder.encode(body), headers=_JSON_SSE
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise transport_error(error, self.name) from error
        if response.status_code != 200:
            try:
                raw = await response.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await response.aclose()
            raise self._http_error(response.status_code, raw)
        return OpenAIStream(response, self.name)

    def _http_error(self, status: int, raw: bytes) -> ProviderError:
        if status in (401, 403):
            # The upstream's text may quote part of our provider key: never pass it on.
            message, kind, code = "the provider rejected the gateway's credentials", "", ""
        else:
            message, kind, code = error_message(raw)
        return UpstreamHTTPError(
            f"upstream {self.name} answered {status}: {message}",
            provider=self.name,
            upstream_status=status,
            upstream_type=kind,
            upstream_code=code,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


_JSON = {"content-type": "application/json"}
_JSON_SSE = {"content-type": "application/json", "accept": "text/event-stream"}

"""What every provider adapter speaks: OpenAI-shaped chat in, OpenAI-shaped chat out.

The gateway hands an adapter an OpenAI chat-completions body (model already replaced by the
upstream's name) and gets back either a whole completion or a :class:`ChatStream` of chunks,
each already serialised as the OpenAI chunk JSON to forward. Adapters know nothing of keys,
billing, HTTP frameworks or storage.

What an adapter can do is one of four small capabilities, each a Protocol:

    Capability.CHAT       ChatAdapter        complete / open_stream      /v1/chat/completions
    Capability.JSON       JsonAdapter        post_json / open_json_stream embeddings, images, speech…
    Capability.MULTIPART  MultipartAdapter   post_multipart               transcriptions, videos
    Capability.GET        GetAdapter         get                          a video's status and content

A :class:`ProviderHandle` is an adapter seen through them: built once when the gateway starts
(``providers.registry``), so the request path asks ``handle.offers(Capability.JSON)`` and
gets a typed ``handle.json`` instead of probing the adapter with ``hasattr``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import msgspec

from providers.errors import ProviderError

# Far above any real call, and what the usage records' INTEGER columns hold.
MAX_REPORTED_COUNT = 2**31 - 1


def reported_count(value: object) -> int | None:
    """One usage counter as an upstream sent it: a whole number from 0 to 2**31 - 1 (absent is 0).
    Anything else — negative, fractional, a string, 2**70 — is ``None``: the usage is not to be
    trusted, and the gateway counts the text itself instead (never a 500, never a credit)."""
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= MAX_REPORTED_COUNT:
        return value
    return None


class Usage(msgspec.Struct, frozen=True):
    """Token usage in OpenAI's convention: ``input_tokens`` is the whole prompt, including the
    cached reads (``cached_input_tokens``) and cache writes (``cache_write_tokens``) in it.

    ``malformed`` marks a usage block the upstream sent but that could not be believed (see
    :func:`reported_count`); its counters are zero and the gateway bills by counting instead."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    # Non-token billing: images, speech characters, audio or video seconds; ``unit_variant``
    # names the priced variant (an image size such as "1024x1024", or "1024x1024/hd").
    units: int = 0
    unit_variant: str = ""
    malformed: bool = False

    @classmethod
    def reported(
        cls,
        input_tokens: object,
        output_tokens: object,
        cached_input_tokens: object = 0,
        cache_write_tokens: object = 0,
    ) -> Usage:
        """Usage from an upstream's raw counters, checked one by one."""
        counts = [reported_count(v) for v in (input_tokens, output_tokens, cached_input_tokens, cache_write_tokens)]
        if any(count is None for count in counts):
            return cls(malformed=True)
        prompt, output, cached, written = (count or 0 for count in counts)
        if cached + written > prompt:
            return cls(malformed=True)
        return cls(input_tokens=prompt, output_tokens=output, cached_input_tokens=cached, cache_write_tokens=written)


class ChatCall(msgspec.Struct, frozen=True):
    """One upstream chat call: the OpenAI body to send (``model`` is the upstream's name)."""

    body: dict[str, Any]
    upstream_model: str


class ChatResult(msgspec.Struct):
    """A whole (non-streamed) completion in OpenAI shape, and its usage if reported."""

    body: dict[str, Any]
    usage: Usage | None
    # The upstream's own bytes of ``body`` when an adapter has them (OpenAI format): the gateway
    # splices its member into them instead of re-encoding. Whoever changes ``body`` clears it.
    raw: bytes | None = None


class StreamChunk(msgspec.Struct):
    """One OpenAI chat chunk, serialised (``data``), plus what the gateway meters from it.

    ``text`` is the generated text in this chunk (content, tool-call arguments), counted
    when a stream ends without usage. ``usage`` is set on the chunk that reports it.
    ``finished``: a choice ends in this chunk (its ``finish_reason`` is set), so the gateway
    can put its cost on it when the client asked for no usage chunk. ``model``: the chunk's
    top-level ``model`` as the adapter wrote or read it, which the gateway replaces by the
    slug the client asked for (in the bytes, without re-encoding the chunk).
    """

    data: bytes
    text: str = ""
    usage: Usage | None = None
    finished: bool = False
    model: str | None = None


class ChatStream(Protocol):
    """An open upstream stream; iterate for chunks, always close it (idempotent)."""

    def __aiter__(self) -> AsyncIterator[StreamChunk]: ...

    async def aclose(self) -> None: ...


class UpstreamReply(msgspec.Struct):
    """A non-chat upstream answer, passed back as bytes (JSON, audio, video, plain text)."""

    content: bytes
    media_type: str
    status_code: int = 200


class UploadedFile(msgspec.Struct, frozen=True):
    field: str
    filename: str
    content: bytes
    content_type: str


@runtime_checkable
class Adapter(Protocol):
    """What every adapter has, whatever it serves: a name for errors and logs, and a close."""

    name: str

    async def aclose(self) -> None: ...


@runtime_checkable
class ChatAdapter(Adapter, Protocol):
    """Chat completions. ``open_stream`` raises before returning if the upstream refused the
    call, so the gateway can still answer with an HTTP error instead of a broken stream."""

    async def complete(self, call: ChatCall) -> ChatResult: ...

    async def open_stream(self, call: ChatCall) -> ChatStream: ...


@runtime_checkable
class JsonAdapter(Adapter, Protocol):
    """OpenAI's JSON routes beyond chat, passed through. ``route`` is the OpenAI path after
    ``/v1`` (``/embeddings``); the upstream's answer comes back as it was sent."""

    async def post_json(self, route: str, upstream_model: str, body: dict[str, Any]) -> UpstreamReply: ...

    async def open_json_stream(self, route: str, upstream_model: str, body: dict[str, Any]) -> ChatStream: ...


@runtime_checkable
class MultipartAdapter(Adapter, Protocol):
    """OpenAI's multipart routes (transcriptions, videos), passed through."""

    async def post_multipart(
        self, route: str, upstream_model: str, fields: list[tuple[str, str]], files: list[UploadedFile]
    ) -> UpstreamReply: ...


@runtime_checkable
class GetAdapter(Adapter, Protocol):
    """A GET on an OpenAI route (a video job's status or its content)."""

    async def get(self, route: str, upstream_model: str) -> UpstreamReply: ...


class Capability(StrEnum):
    CHAT = "chat"
    JSON = "json"
    MULTIPART = "multipart"
    GET = "get"


class MissingCapability(ProviderError):
    """The gateway asked a provider for something it does not serve: a bug in the gateway (the
    pipeline picks providers by :meth:`ProviderHandle.offers`), never the caller's fault."""

    status_code = 500
    code = "provider_lacks_capability"


@dataclass(frozen=True, slots=True)
class ProviderHandle:
    """One configured provider and what it can do, checked once when it is built.

    ``offers`` answers "does this provider serve that kind of route"; ``chat`` / ``json`` /
    ``multipart`` / ``get`` give the adapter typed for it (and raise :class:`MissingCapability`
    when asked for something :meth:`offers` would have refused).
    """

    adapter: Adapter
    capabilities: frozenset[Capability] = field(default=frozenset())

    @classmethod
    def of(cls, adapter: object) -> ProviderHandle:
        """The handle for ``adapter``, its capabilities read from the Protocols it implements."""
        if not isinstance(adapter, Adapter):
            raise TypeError(f"{type(adapter).__name__} is not a provider adapter (it needs name and aclose)")
        implements = {
            Capability.CHAT: isinstance(adapter, ChatAdapter),
            Capability.JSON: isinstance(adapter, JsonAdapter),
            Capability.MULTIPART: isinstance(adapter, MultipartAdapter),
            Capability.GET: isinstance(adapter, GetAdapter),
        }
        return cls(adapter, frozenset(c for c, yes in implements.items() if yes))

    @property
    def name(self) -> str:
        return self.adapter.name

    def offers(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def _typed(self, capability: Capability) -> Any:
        # ``of`` checked the Protocol once; repeating ``isinstance`` per request would walk
        # every member of the Protocol again, so the adapter is handed out as already known.
        if capability not in self.capabilities:
            raise MissingCapability(
                f"provider {self.name} does not serve {capability.value} routes", provider=self.name
            )
        return self.adapter

    @property
    def chat(self) -> ChatAdapter:
        adapter: ChatAdapter = self._typed(Capability.CHAT)
        return adapter

    @property
    def json(self) -> JsonAdapter:
        adapter: JsonAdapter = self._typed(Capability.JSON)
        return adapter

    @property
    def multipart(self) -> MultipartAdapter:
        adapter: MultipartAdapter = self._typed(Capability.MULTIPART)
        return adapter

    @property
    def get(self) -> GetAdapter:
        adapter: GetAdapter = self._typed(Capability.GET)
        return adapter

    async def aclose(self) -> None:
        await self.adapter.aclose()

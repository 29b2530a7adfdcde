"""The opt-in response cache on the chat path (docs/response-cache.md).

A key's owner turns it on with ``cache_ttl_s``; a request narrows it with a header:

==========================  ==================================================================
``X-Tollway-Cache``         absent or ``true``: read and store (the key's default);
                            ``no-cache``: skip the lookup, store the fresh answer (a refresh);
                            ``no-store`` (or ``false``): neither read nor store
``X-Tollway-Cache-TTL``     seconds to keep this answer, capped by the key's ``cache_ttl_s``
                            and the operator's ``response_cache.max_ttl_s``
==========================  ==================================================================

The answer says ``X-Tollway-Cache: hit | miss | refresh | bypass`` (no header when the key has
no cache), and a hit's ``_tollway`` carries ``"cache": "hit"``.

An entry's key is the SHA-256 of the account and the normalised request (sorted JSON of the
body without ``stream_options``, ``user`` and ``provider``, with ``stream`` made explicit); the
account is also in the store key's hash tag, so two accounts never share an entry. A streamed
request and a plain one keep separate entries: each is replayed as the upstream sent it,
byte for byte, rather than converted from the other shape.

Lookups happen after the security chain and the model checks and before anything is reserved.
A hit is reserved and settled like any call (rate limits, spending limit, balance), at
``response_cache.price_per_mille`` thousandths of the original cost, recorded as a usage row
with ``error_code = "cache_hit"``. Only whole answers are stored: a 200 completion, or a stream
that ran to its end (never one that broke, was cut short by the client, or whose output was
lowered to fit the balance). The store failing is a miss: the call goes upstream.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import msgspec
from litestar import Response
from litestar.response import Stream

from billing.estimates import Estimate
from billing.ledger import Settlement
from billing.money import format_credits, micro_to_usd
from billing.shielding import shielded
from billing.tokens import count_text_tokens
from gateway.cache import ResponseStoreUnavailable, entry_key
from gateway.catalog import CatalogModel
from gateway.errors import InvalidRequest
from gateway.pipeline.metered import Admission, CallContext
from gateway.pipeline.streaming import WatchedStream
from gateway.state import GatewayState
from providers.base import ChatResult, ChatStream, StreamChunk, Usage

__all__ = ["CACHE_HIT", "CachedAnswer", "ResponseCache", "cache_mode", "hit_price_micro", "request_digest"]

log = logging.getLogger("tollway.cache")

CACHE_HEADER = "x-tollway-cache"
TTL_HEADER = "x-tollway-cache-ttl"
#: The usage record's ``error_code`` of an answer served from the cache (status 200).
CACHE_HIT = "cache_hit"
# Body fields that do not change the answer: how usage is delivered, who the end user is, which
# provider is preferred. ``models`` (fallbacks) stays: it changes which model may answer.
UNKEYED = frozenset({"stream", "stream_options", "user", "provider"})
USE, REFRESH, BYPASS = "use", "refresh", "bypass"
_MODES = {"": USE, "true": USE, "on": USE, "no-cache": REFRESH, "no-store": BYPASS, "false": BYPASS, "off": BYPASS}
# Above this many bytes of streamed text, the token count runs in a worker thread.
_COUNT_INLINE_BYTES = 64 * 1024


class CachedAnswer(msgspec.Struct, frozen=True):
    """One stored answer and what it cost when it was served (MessagePack: bytes stay bytes)."""

    model: str  # the slug that served it
    provider: str
    upstream_model: str
    usage: Usage
    cost_micro: int
    body: bytes = b""  # a completion, as the upstream sent it
    chunks: list[bytes] = []  # a stream: each event's data, without the SSE framing
    usage_chunk: int = -1  # the index of the chunk that reported usage (-1: none did)

    @property
    def streamed(self) -> bool:
        return bool(self.chunks)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CachedAnswer)
_json = msgspec.json.Encoder()


def cache_mode(headers: Mapping[str, str]) -> tuple[str, int | None]:
    """The request's cache mode and asked TTL; a value we do not know is a 400, never a guess."""
    raw = headers.get(CACHE_HEADER)
    mode = _MODES.get((raw or "").strip().lower())
    if mode is None:
        raise InvalidRequest("X-Tollway-Cache must be true, no-cache or no-store")
    ttl_text = headers.get(TTL_HEADER)
    if ttl_text is None:
        return mode, None
    ttl_text = ttl_text.strip()
    if not ttl_text.isascii() or not ttl_text.isdigit() or len(ttl_text) > 9 or int(ttl_text) < 1:
        raise InvalidRequest("X-Tollway-Cache-TTL must be a whole number of seconds, at least 1")
    return mode, int(ttl_text)


def request_digest(account_id: int, body: Mapping[str, Any], streamed: bool) -> str:
    """SHA-256 of the account and the normalised request (sorted keys, see UNKEYED)."""
    normalised = {name: value for name, value in body.items() if name not in UNKEYED}
    normalised["stream"] = streamed
    return hashlib.sha256(msgspec.json.encode([account_id, normalised], order="sorted")).hexdigest()


def hit_price_micro(original_micro: int, per_mille: int) -> int:
    """``per_mille`` thousandths of the original cost, rounded up to the micro-credit."""
    return -(-original_micro * per_mille // 1000)


class ResponseCache:
    """One request's use of the cache: :meth:`look_up` before reserving, then either
    :meth:`replay` (a hit) or :meth:`keep` / :meth:`recording` (a miss that may be stored)."""

    def __init__(self, state: GatewayState, key: str = "", mode: str = BYPASS, ttl_s: int = 0) -> None:
        self.state = state
        self.key = key  # "" = this request does not use the cache
        self.mode = mode
        self.ttl_s = ttl_s
        self.hit: CachedAnswer | None = None
        self.headers: dict[str, str] = {}
        self._down = False  # the store failed this request: do not try it again

    @classmethod
    async def look_up(
        cls, state: GatewayState, ctx: CallContext, headers: Mapping[str, str], body: dict[str, Any], size: int
    ) -> ResponseCache:
        """Whether the request uses the cache, and its stored answer when there is one."""
        identity, settings = ctx.identity, state.settings.response_cache
        if not identity.cache_ttl_s or state.responses is None:
            cache_mode(headers)  # a malformed header is a 400 whether or not the key caches
            return cls(state)
        mode, asked = cache_mode(headers)
        ttl = min(identity.cache_ttl_s, settings.max_ttl_s, asked or identity.cache_ttl_s)
        if mode == BYPASS or size > settings.max_entry_bytes:
            cache = cls(state)
            cache.headers = {"X-Tollway-Cache": BYPASS}
            return cache
        digest = request_digest(identity.account_id, body, bool(body.get("stream")))
        cache = cls(state, entry_key(state.settings.redis_prefix, identity.account_id, digest), mode, ttl)
        cache.headers = {"X-Tollway-Cache": "refresh" if mode == REFRESH else "miss"}
        if mode == USE:
            cache.hit = await cache._get(bool(body.get("stream")))
            if cache.hit is not None:
                cache.headers = {"X-Tollway-Cache": "hit"}
        return cache

    async def _get(self, streamed: bool) -> CachedAnswer | None:
        assert self.state.responses is not None
        try:
            data = await self.state.responses.get(self.key)
            if data is None:
                return None
            answer = _decoder.decode(data)
        except ResponseStoreUnavailable as error:
            self._down = True
            log.warning("response cache unavailable, going upstream: %s", error)
            return None
        except Exception:
            log.warning("response cache entry unreadable, going upstream", exc_info=True)
            return None
        return answer if answer.streamed == streamed else None

    async def _put(self, answer: CachedAnswer) -> None:
        if not self.key or self._down or self.state.responses is None:
            return
        data = _encoder.encode(answer)
        if len(data) > self.state.settings.response_cache.max_entry_bytes:
            return
        try:
            await self.state.responses.set(self.key, data, self.ttl_s)
        except Exception:
            log.warning("response cache write failed; the answer was served, not stored", exc_info=True)

    # -- a miss: store what the upstream answered ------------------------------------------------

    async def keep(self, result: ChatResult, usage: Usage, served: CatalogModel, fitted: int | None) -> None:
        """Store a completion (after it was settled); not one whose output was lowered to fit."""
        if not self.key or fitted is not None or served.price is None:
            return
        raw = result.raw if result.raw is not None else _json.encode(result.body)
        await self._put(
            CachedAnswer(
                model=served.slug,
                provider=served.provider,
                upstream_model=served.upstream_model,
                usage=usage,
                cost_micro=served.price.cost_micro(usage),
                body=raw,
            )
        )

    def recording(
        self, stream: ChatStream, served: CatalogModel, prompt_tokens: Callable[[], Awaitable[int]], fitted: int | None
    ) -> ChatStream:
        """``stream``, recorded as it passes and stored when it ran to its end (on close)."""
        if not self.key or fitted is not None:
            return stream
        return _Recorder(self, stream, served, prompt_tokens)

    # -- a hit: bill it like any call, then replay it ------------------------------------------

    async def replay(
        self, door: Admission, plan: list[CatalogModel], *, include_usage: bool = True
    ) -> Response[bytes] | Stream:
        """Reserve and settle the hit's price (one usage record, one debit when it costs
        anything), then answer with the stored completion or stream."""
        answer, state, ctx = self.hit, self.state, door.ctx
        assert answer is not None
        price = hit_price_micro(answer.cost_micro, state.settings.response_cache.price_per_mille)
        tokens = answer.usage.input_tokens + answer.usage.output_tokens
        admitted = await door.reserve(plan, Estimate(tokens=tokens, amount_micro=price))
        settlement = Settlement(
            request_id=ctx.request_id,
            account_id=ctx.identity.account_id,
            key_id=ctx.identity.key_id,
            model=answer.model,
            provider=answer.provider,
            upstream_model=answer.upstream_model,
            usage=answer.usage,
            cost_micro=price,
            latency_ms=ctx.latency_ms(),
            status_code=200,
            error_code=CACHE_HIT,
            streamed=answer.streamed,
            end_user_id=ctx.end_user_id,
        )
        with shielded():  # reserved: it is settled whatever happens now
            await state.meter.settle(admitted.reservation, settlement)
        state.telemetry.finished(settlement, ctx.identity, None, stream_opened=False)
        meta = self._meta(ctx, answer, price)
        headers = {
            "X-Request-Id": ctx.request_id,
            "X-Tollway-Credits-Used": format_credits(price),
            **self.headers,
        }
        if not answer.streamed:
            return Response(
                content=_with_meta(answer.body, meta, answer.model), media_type="application/json", headers=headers
            )
        return WatchedStream(
            content=_replayed(answer, meta, ctx, include_usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )

    def _meta(self, ctx: CallContext, answer: CachedAnswer, price: int) -> dict[str, Any]:
        return {
            "credits_used": format_credits(price),
            "cost_usd": micro_to_usd(price, self.state.settings.credits_per_usd),
            "model_used": answer.model,
            "upstream_model": answer.upstream_model,
            "provider": answer.provider,
            "input_tokens": answer.usage.input_tokens,
            "output_tokens": answer.usage.output_tokens,
            "latency_ms": ctx.latency_ms(),
            "request_id": ctx.request_id,
            "cache": "hit",
        }


def _with_meta(data: bytes, meta: dict[str, Any] | None, slug: str) -> bytes:
    """A stored answer or chunk naming the slug that was asked for (the upstream stored its own
    name, as a live answer names the slug: gateway.pipeline.chat.with_slug), with this request's
    ``_tollway`` (replacing the original's) when ``meta`` is given. A replay is off the hot path:
    it re-encodes rather than splicing."""
    body = msgspec.json.decode(data)
    if not isinstance(body, dict):
        return data
    if "model" in body:
        body["model"] = slug
    if meta is not None:
        body["_tollway"] = meta
    return _json.encode(body)


async def _replayed(
    answer: CachedAnswer, meta: dict[str, Any], ctx: CallContext, include_usage: bool
) -> AsyncIterator[bytes]:
    """The stored stream in the framing a live one has (gateway.pipeline.chat): with
    ``stream_options.include_usage`` its chunks, then usage with ``_tollway``, then [DONE];
    without it no usage-only chunk, and ``_tollway`` on the last chunk."""
    chunks = list(answer.chunks)
    if not include_usage:
        if 0 <= answer.usage_chunk < len(chunks) and _usage_only(chunks[answer.usage_chunk]):
            del chunks[answer.usage_chunk]
        out: list[bytes] = []
        for index, data in enumerate(chunks):
            last = index == len(chunks) - 1
            out += (b"data: ", _with_meta(data, meta if last else None, answer.model), b"\n\n")
        out.append(b"data: [DONE]\n\n")
        yield b"".join(out)
        return
    out = []
    for index, data in enumerate(chunks):
        out += (b"data: ", _with_meta(data, meta if index == answer.usage_chunk else None, answer.model), b"\n\n")
    if answer.usage_chunk < 0:
        usage = answer.usage
        chunk = {
            "id": ctx.request_id,
            "object": "chat.completion.chunk",
            "created": _created(answer),
            "model": answer.model,
            "choices": [],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
            "_tollway": meta,
        }
        out += (b"data: ", _json.encode(chunk), b"\n\n")
    out.append(b"data: [DONE]\n\n")
    yield b"".join(out)


class _ChoicesView(msgspec.Struct):
    choices: list[Any] = []


_choices_decoder = msgspec.json.Decoder(_ChoicesView)


def _usage_only(data: bytes) -> bool:
    """The usage chunk a client that did not ask for usage never sees live (choices empty)."""
    try:
        return not _choices_decoder.decode(data).choices
    except msgspec.DecodeError:
        return False


class _CreatedView(msgspec.Struct):
    created: int = 0


_created_decoder = msgspec.json.Decoder(_CreatedView)


def _created(answer: CachedAnswer) -> int:
    """The stored stream's own ``created`` (its chunks all carry the same one)."""
    try:
        return _created_decoder.decode(answer.chunks[0]).created if answer.chunks else 0
    except msgspec.DecodeError:
        return 0


class _Recorder:
    """An upstream stream passed through unchanged, remembered chunk by chunk; stored when it
    ended on its own (never when it raised, or the client left first), on its first close."""

    def __init__(
        self,
        cache: ResponseCache,
        stream: ChatStream,
        served: CatalogModel,
        prompt_tokens: Callable[[], Awaitable[int]],
    ) -> None:
        self._cache = cache
        self._stream = stream
        self._served = served
        self._prompt_tokens = prompt_tokens
        self._chunks: list[bytes] = []
        self._text: list[str] = []
        self._size = 0
        self._usage: Usage | None = None
        self._usage_chunk = -1
        self._complete = False
        self._closed = False

    def _add(self, chunk: StreamChunk) -> None:
        if self._size < 0:
            return  # past max_entry_bytes: nothing of it is kept
        self._size += len(chunk.data) + len(chunk.text)
        if self._size > self._cache.state.settings.response_cache.max_entry_bytes:
            self._size, self._chunks, self._text = -1, [], []
            return
        if chunk.usage is not None:
            self._usage, self._usage_chunk = chunk.usage, len(self._chunks)
        self._chunks.append(chunk.data)
        if chunk.text:
            self._text.append(chunk.text)

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._each()

    async def _each(self) -> AsyncIterator[StreamChunk]:
        async for chunk in self._stream:
            self._add(chunk)
            yield chunk
        self._complete = True

    def batches(self) -> AsyncIterator[list[StreamChunk]]:
        grouped = getattr(self._stream, "batches", None)
        return self._batches(grouped()) if grouped is not None else self._singles()

    async def _batches(self, batches: AsyncIterator[list[StreamChunk]]) -> AsyncIterator[list[StreamChunk]]:
        async for batch in batches:
            for chunk in batch:
                self._add(chunk)
            yield batch
        self._complete = True

    async def _singles(self) -> AsyncIterator[list[StreamChunk]]:
        async for chunk in self._each():
            yield [chunk]

    async def aclose(self) -> None:
        await self._stream.aclose()
        if self._closed:
            return
        self._closed = True
        if not self._complete or self._size < 0 or not self._chunks or self._served.price is None:
            return
        usage = await self._billable()
        await self._cache._put(
            CachedAnswer(
                model=self._served.slug,
                provider=self._served.provider,
                upstream_model=self._served.upstream_model,
                usage=usage,
                cost_micro=self._served.price.cost_micro(usage),
                chunks=self._chunks,
                usage_chunk=self._usage_chunk,
            )
        )

    async def _billable(self) -> Usage:
        """The usage the stream was billed for: the upstream's, else the gateway's own count
        (as gateway.pipeline.metered.billable_usage decides)."""
        if self._usage is not None and not self._usage.malformed:
            return self._usage
        text, model = "".join(self._text), self._served.upstream_model
        if len(text) > _COUNT_INLINE_BYTES:
            output = await anyio.to_thread.run_sync(lambda: count_text_tokens(text, model))
        else:
            output = count_text_tokens(text, model)
        return Usage(input_tokens=await self._prompt_tokens(), output_tokens=output)

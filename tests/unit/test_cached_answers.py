"""The response cache's pure parts: an entry's key, the request headers, a hit's price, and the
stream recorder (stores a stream that ran to its end, never one that broke or was cut short)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from billing.pricing import ModelPrice, UsdPrices
from gateway.cache import EmbeddedResponseStore
from gateway.catalog import CatalogModel
from gateway.errors import InvalidRequest
from gateway.pipeline.cached import (
    BYPASS,
    REFRESH,
    USE,
    CachedAnswer,
    ResponseCache,
    cache_mode,
    hit_price_micro,
    request_digest,
)
from gateway.settings import ResponseCacheSettings
from gateway.state import GatewayState
from providers.base import ChatStream, StreamChunk, Usage
from providers.errors import ProviderError, UpstreamTimeout

BODY: dict[str, Any] = {
    "model": "fake/m",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.2,
    "max_tokens": 50,
}


def test_request_digest_ignores_key_order_and_delivery_fields() -> None:
    reordered = {
        "max_tokens": 50,
        "temperature": 0.2,
        "messages": [{"content": "hi", "role": "user"}],
        "model": "fake/m",
    }
    noisy = {**BODY, "user": "alice", "stream_options": {"include_usage": True}, "provider": {"order": ["x"]}}
    digest = request_digest(1, BODY, False)
    assert request_digest(1, reordered, False) == digest == request_digest(1, noisy, False)
    assert request_digest(1, {**BODY, "stream": False}, False) == digest
    assert len(digest) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.3},
        {"max_tokens": 51},
        {"model": "fake/other"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"models": ["fake/fallback"]},  # a fallback may answer: not the same request
        {"seed": 1},
        {"tools": []},
    ],
)
def test_request_digest_changes_with_every_generation_field(change: dict[str, Any]) -> None:
    assert request_digest(1, {**BODY, **change}, False) != request_digest(1, BODY, False)


def test_request_digest_separates_accounts_and_shapes() -> None:
    assert request_digest(1, BODY, False) != request_digest(2, BODY, False)
    assert request_digest(1, BODY, False) != request_digest(1, BODY, True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, (USE, None)),
        ({"x-tollway-cache": "true"}, (USE, None)),
        ({"x-tollway-cache": " No-Cache "}, (REFRESH, None)),
        ({"x-tollway-cache": "no-store"}, (BYPASS, None)),
        ({"x-tollway-cache": "false"}, (BYPASS, None)),
        ({"x-tollway-cache-ttl": "30"}, (USE, 30)),
    ],
)
def test_cache_mode_reads_the_headers(headers: dict[str, str], expected: tuple[str, int | None]) -> None:
    assert cache_mode(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"x-tollway-cache": "maybe"},
        {"x-tollway-cache": "no-cache\x00"},
        {"x-tollway-cache-ttl": "0"},
        {"x-tollway-cache-ttl": "-1"},
        {"x-tollway-cache-ttl": "1.5"},
        {"x-tollway-cache-ttl": "9" * 40},
        {"x-tollway-cache-ttl": "٣"},  # a digit, but not an ASCII one
    ],
)
def test_cache_mode_refuses_what_it_does_not_know(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        cache_mode(headers)


@pytest.mark.parametrize(
    ("original", "per_mille", "price"),
    [(6150, 0, 0), (6150, 1000, 6150), (6150, 250, 1538), (1, 1, 1), (0, 500, 0), (10**15, 999, 999 * 10**12)],
)
def test_hit_price_is_a_rounded_up_fraction(original: int, per_mille: int, price: int) -> None:
    assert hit_price_micro(original, per_mille) == price


def test_cached_answer_round_trips_bytes() -> None:
    answer = CachedAnswer("fake/m", "fake", "m", Usage(3, 4), 77, chunks=[b'{"a":"\x00"}', b"{}"], usage_chunk=1)
    data = msgspec.msgpack.encode(answer)
    assert msgspec.msgpack.decode(data, type=CachedAnswer) == answer
    assert answer.streamed


# -- the stream recorder ---------------------------------------------------------------------

SERVED = CatalogModel(
    slug="fake/m",
    provider="fake",
    upstream_model="m",
    category="text",
    price=ModelPrice.from_usd(
        UsdPrices(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60")), credits_per_usd=1000
    ),
    max_output_tokens=100,
    context_length=1000,
)


class FakeStream:
    def __init__(self, chunks: list[StreamChunk], error: ProviderError | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = 0

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._each()

    async def _each(self) -> AsyncIterator[StreamChunk]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed += 1


CHUNKS = [
    StreamChunk(b'{"choices":[{"index":0,"delta":{"content":"Hel"}}]}', text="Hel"),
    StreamChunk(b'{"choices":[{"index":0,"delta":{"content":"lo"}}]}', text="lo"),
    StreamChunk(b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}', usage=Usage(9, 2)),
]


def cache_for(store: EmbeddedResponseStore, max_entry_bytes: int = 10_000) -> ResponseCache:
    state = SimpleNamespace(
        settings=SimpleNamespace(response_cache=ResponseCacheSettings(max_entry_bytes=max_entry_bytes)),
        responses=store,
    )
    return ResponseCache(cast(GatewayState, state), key="k", mode=USE, ttl_s=60)


async def prompt_tokens() -> int:
    return 9


async def drain(stream: ChatStream, stop_after: int | None = None) -> None:
    seen = 0
    async for _chunk in stream:
        seen += 1
        if seen == stop_after:
            break


async def test_recorder_stores_a_stream_that_ran_to_its_end() -> None:
    store = EmbeddedResponseStore(max_bytes=1 << 20)
    upstream = FakeStream(CHUNKS)
    recorded = cache_for(store).recording(upstream, SERVED, prompt_tokens, None)
    await drain(recorded)
    await recorded.aclose()
    await recorded.aclose()  # a second close (the stream body's finally) stores nothing again
    assert upstream.closed == 2
    data = await store.get("k")
    assert data is not None
    answer = msgspec.msgpack.decode(data, type=CachedAnswer)
    assert answer.chunks == [chunk.data for chunk in CHUNKS] and answer.usage_chunk == 2
    assert answer.usage == Usage(9, 2)
    assert SERVED.price is not None and answer.cost_micro == SERVED.price.cost_micro(Usage(9, 2))


async def test_recorder_counts_a_stream_without_usage() -> None:
    store = EmbeddedResponseStore(max_bytes=1 << 20)
    recorded = cache_for(store).recording(FakeStream(CHUNKS[:2]), SERVED, prompt_tokens, None)
    await drain(recorded)
    await recorded.aclose()
    data = await store.get("k")
    assert data is not None
    answer = msgspec.msgpack.decode(data, type=CachedAnswer)
    assert answer.usage_chunk == -1 and answer.usage.input_tokens == 9 and answer.usage.output_tokens >= 1


async def test_recorder_never_stores_a_broken_stream() -> None:
    store = EmbeddedResponseStore(max_bytes=1 << 20)
    recorded = cache_for(store).recording(
        FakeStream(CHUNKS[:2], UpstreamTimeout("stream passed its deadline", provider="fake")),
        SERVED,
        prompt_tokens,
        None,
    )
    with pytest.raises(UpstreamTimeout):
        await drain(recorded)
    await recorded.aclose()
    assert await store.get("k") is None


async def test_recorder_never_stores_a_stream_the_client_left() -> None:
    store = EmbeddedResponseStore(max_bytes=1 << 20)
    recorded = cache_for(store).recording(FakeStream(CHUNKS), SERVED, prompt_tokens, None)
    await drain(recorded, stop_after=1)
    await recorded.aclose()
    assert await store.get("k") is None


async def test_recorder_skips_what_is_too_large_or_fitted() -> None:
    store = EmbeddedResponseStore(max_bytes=1 << 20)
    recorded = cache_for(store, max_entry_bytes=60).recording(FakeStream(CHUNKS), SERVED, prompt_tokens, None)
    await drain(recorded)
    await recorded.aclose()
    assert await store.get("k") is None
    upstream = FakeStream(CHUNKS)
    assert cache_for(store).recording(upstream, SERVED, prompt_tokens, fitted=10) is upstream


# -- the key's setting, as the dashboard form sends it -----------------------------------------


def test_key_form_sets_and_clears_the_cache_ttl() -> None:
    from datetime import UTC, datetime

    from litestar.datastructures import FormMultiDict

    from gateway.dashboard.pages.keys import key_fields
    from keys.management import KeyCreate, KeyUpdate, changes_from

    created = msgspec.convert(
        key_fields(FormMultiDict({"name": "k", "cache_ttl_s": "600"}), update=False), KeyCreate, strict=False
    )
    assert created.cache_ttl_s == 600
    blank = msgspec.convert(key_fields(FormMultiDict({"name": "k"}), update=False), KeyCreate, strict=False)
    assert blank.cache_ttl_s == 0
    cleared = msgspec.convert(key_fields(FormMultiDict({"name": "k"}), update=True), KeyUpdate, strict=False)
    assert changes_from(cleared, datetime.now(UTC))["cache_ttl_s"] == 0

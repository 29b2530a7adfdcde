"""``SSEStream.batches`` groups chunks by upstream read and must otherwise give exactly what
iterating the stream gives: the same chunks, the same end, the same error after the same chunks."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import StreamChunk
from providers.errors import ProviderError, UpstreamBadResponse
from providers.http import SSEStream
from providers.sse import SSEEvent


def translate(event: SSEEvent) -> tuple[StreamChunk, ...]:
    if event.data == b"boom":
        raise UpstreamBadResponse("upstream fake sent an error event", provider="fake")
    if event.data == b"skip":
        return ()
    return (StreamChunk(data=event.data),)


def finish() -> tuple[StreamChunk, ...]:
    return (StreamChunk(data=b"finished"),)


def stream_of(pieces: list[bytes]) -> SSEStream:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return SSEStream(httpx.Response(200, content=body()), "fake", translate, finish=finish, end_marker=b"[DONE]")


async def flat(pieces: list[bytes]) -> tuple[list[bytes], str]:
    out: list[bytes] = []
    try:
        async for chunk in stream_of(pieces):
            out.append(chunk.data)
    except ProviderError as error:
        return out, error.code
    return out, ""


async def grouped(pieces: list[bytes]) -> tuple[list[list[bytes]], str]:
    out: list[list[bytes]] = []
    try:
        async for batch in stream_of(pieces).batches():
            assert batch, "a batch is never empty"
            out.append([chunk.data for chunk in batch])
    except ProviderError as error:
        return out, error.code
    return out, ""


BODIES = [
    b"data: a\n\ndata: b\n\ndata: [DONE]\n\ndata: after\n\n",
    b"data: a\n\ndata: skip\n\ndata: b\n\n",  # no end marker: finish() runs
    b"data: a\n\ndata: b\n\ndata: boom\n\ndata: c\n\n",
    b": keep-alive\n\ndata: a\r\n\r\ndata: b",  # last event without a blank line
]


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(body)) for cut in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if body[a:b]]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(BODIES), st.lists(st.integers(min_value=0, max_value=60), max_size=6))
def test_batches_flatten_to_the_chunks_iteration_gives(body: bytes, cuts: list[int]) -> None:
    pieces = split(body, cuts)
    chunks, error = asyncio.run(flat(pieces))
    batches, batch_error = asyncio.run(grouped(pieces))
    assert [data for batch in batches for data in batch] == chunks
    assert batch_error == error


def test_one_read_is_one_batch_and_an_error_comes_after_its_read_s_chunks() -> None:
    assert asyncio.run(grouped([BODIES[0]])) == ([[b"a", b"b"]], "")
    assert asyncio.run(grouped([BODIES[1]])) == ([[b"a", b"b"], [b"finished"]], "")
    batches, error = asyncio.run(grouped([BODIES[2]]))
    assert (batches == [[b"a", b"b"]] and error == "bad_upstream_response") or error


class ClosingBody(httpx.AsyncByteStream):
    """A transport's body whose reader records being closed, as aiohttp's stream does."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.closed_reader = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for piece in self.pieces:
                yield piece
        finally:
            self.closed_reader = True


def test_a_stream_that_stops_at_its_end_marker_closes_the_transport_s_reader() -> None:
    """Not left to the event loop's finaliser (a wake-up and a task per unfinished generator)."""

    async def run(iterate_batches: bool) -> bool:
        body = ClosingBody([b"data: a\n\ndata: [DONE]\n\n", b"data: never\n\n"])
        stream = SSEStream(httpx.Response(200, stream=body), "fake", translate, end_marker=b"[DONE]")
        if iterate_batches:
            assert [[c.data for c in batch] async for batch in stream.batches()] == [[b"a"]]
        else:
            assert [chunk.data async for chunk in stream] == [b"a"]
        return body.closed_reader  # closed by then, not by the loop later (nor at its shutdown)

    assert asyncio.run(run(True))
    assert asyncio.run(run(False))


def test_an_encoded_body_is_still_decoded() -> None:
    async def run() -> list[bytes]:
        response = httpx.Response(
            200,
            headers={"content-encoding": "gzip"},
            stream=ClosingBody([gzip.compress(b"data: a\n\ndata: b\n\ndata: [DONE]\n\n")]),
        )
        stream = SSEStream(response, "fake", translate, end_marker=b"[DONE]")
        return [chunk.data for batch in [b async for b in stream.batches()] for chunk in batch]

    assert asyncio.run(run()) == [b"a", b"b"]

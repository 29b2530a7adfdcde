"""The pass-through reader of Anthropic Messages streams (providers/anthropic/native.py), against
a golden stream built from Anthropic's API reference (thinking, signature and text deltas, cache
usage), split at every byte offset: each event's data comes out as the upstream sent it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from providers.anthropic.native import NativeEvent, NativeStreamReader
from providers.base import StreamChunk
from providers.errors import ProviderError, UpstreamBadResponse
from providers.sse import SSEParser

GOLDEN = Path(__file__).parent.parent / "golden" / "anthropic"
STREAM = (GOLDEN / "stream_native.sse").read_bytes()
EXPECTED: list[dict[str, Any]] = json.loads((GOLDEN / "stream_native.events.json").read_text())
DATA_LINES = [line.removeprefix(b"data: ") for line in STREAM.splitlines() if line.startswith(b"data: ")]


def read(pieces: list[bytes]) -> list[StreamChunk]:
    parser, reader = SSEParser(), NativeStreamReader("anthropic")
    chunks: list[StreamChunk] = []
    for piece in pieces:
        for event in parser.feed(piece):
            chunks.extend(reader.translate(event))
    for event in parser.close():
        chunks.extend(reader.translate(event))
    chunks.extend(reader.finish())
    return chunks


def summary(chunk: StreamChunk) -> dict[str, Any]:
    assert isinstance(chunk, NativeEvent)
    usage = chunk.usage
    counts = None
    if usage is not None:
        counts = [usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.cache_write_tokens]
    return {"event": chunk.event, "model": chunk.model, "text": chunk.text, "usage": counts}


def test_native_stream_golden() -> None:
    chunks = read([STREAM])
    # Tollway's input total includes the cache reads and writes Anthropic's input_tokens leaves out.
    assert [summary(chunk) for chunk in chunks] == EXPECTED
    assert [chunk.data for chunk in chunks] == DATA_LINES


def test_native_stream_split_at_every_byte_offset() -> None:
    whole = [(summary(chunk), chunk.data) for chunk in read([STREAM])]
    for offset in range(len(STREAM) + 1):
        assert [(summary(c), c.data) for c in read([STREAM[:offset], STREAM[offset:]])] == whole, offset


def test_native_stream_error_event_raises_with_its_type() -> None:
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    with pytest.raises(ProviderError) as raised:
        read([STREAM.split(b"event: content_block_stop")[0], error])
    assert raised.value.code == "overloaded_error"


@pytest.mark.parametrize(
    "body",
    [
        STREAM.split(b"event: message_stop")[0],  # ended before message_stop
        b'event: message_start\ndata: {"type":"message_start","message":{"model":7}}\n\n',  # wrong type
        b"event: ping\ndata: not json\n\n",
    ],
)
def test_native_stream_broken_bodies_raise(body: bytes) -> None:
    with pytest.raises(UpstreamBadResponse):
        read([body])


def test_native_stream_keeps_unknown_events_and_lying_usage_is_malformed() -> None:
    unknown = b'event: future_event\ndata: {"type":"future_event","x":[1,2]}\n\n'
    lying = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m",'
        b'"usage":{"input_tokens":-5,"output_tokens":1}}}\n\n'
    )
    stop = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    chunks = read([unknown + lying + stop])
    assert [summary(c)["event"] for c in chunks] == ["future_event", "message_start", "message_stop"]
    assert chunks[0].data == b'{"type":"future_event","x":[1,2]}'
    assert chunks[1].usage is not None and chunks[1].usage.malformed

"""The SSE parser must give the same events however the bytes are split."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from providers.sse import SSEEvent, SSEParser

STREAM = (
    b": keep-alive\n\n"
    b'event: message_start\ndata: {"a": 1}\n\n'
    b'data: {"content": "h\xc3\xa9llo"}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"id: 7\rdata:no-space\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent(data=b'{"a": 1}', event="message_start"),
    SSEEvent(data='{"content": "héllo"}'.encode()),
    SSEEvent(data=b"line one\nline two"),
    SSEEvent(data=b"no-space", id="7"),
    # Per the SSE spec the last event id persists until another id field replaces it.
    SSEEvent(data=b"[DONE]", id="7"),
]


def parse_in_pieces(pieces: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.close())
    return events


def test_sse_whole_stream() -> None:
    assert parse_in_pieces([STREAM]) == EXPECTED


def test_sse_split_at_every_byte_offset() -> None:
    for offset in range(len(STREAM) + 1):
        assert parse_in_pieces([STREAM[:offset], STREAM[offset:]]) == EXPECTED, offset


def test_sse_one_byte_at_a_time() -> None:
    assert parse_in_pieces([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_split_at_any_offsets(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert parse_in_pieces([STREAM[a:b] for a, b in itertools.pairwise(bounds)]) == EXPECTED


def test_sse_final_event_without_blank_line_is_dispatched() -> None:
    assert parse_in_pieces([b"data: tail"]) == [SSEEvent(data=b"tail")]


def test_sse_comments_and_empty_events_yield_nothing() -> None:
    assert parse_in_pieces([b": ping\n\n\n\nevent: x\n\n"]) == []

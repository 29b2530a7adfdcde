"""The SSE parser must give the same events however the bytes are split."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
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


# Lines as the spec reads them, from the whole body at once: the reference the incremental
# parser's two paths (a read without "\r" split in C, any other read by the general loop) must
# both match, however the body is cut.
_TERMINATOR = re.compile(rb"\r\n|\r|\n")


def reference(body: bytes) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    data: list[bytes] | None = None
    event = last_id = ""
    for line in [*_TERMINATOR.split(body), b""]:
        if not line:
            if data is not None:
                events.append(SSEEvent(data=b"\n".join(data), event=event, id=last_id))
            data, event = None, ""
        elif not line.startswith(b":"):
            name, colon, value = line.partition(b":")
            value = value.removeprefix(b" ") if colon else value
            if name == b"data":
                data = [*(data or []), value]
            elif name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"id":
                last_id = value.decode("utf-8", "replace")
    return events


_PIECES = [
    b"data: x",
    b"data:y",
    b"data:  two spaces",
    b"data",
    b"data:",
    b"event: e",
    b"event:f",
    b"id: 9",
    b"id",
    b": comment",
    b":",
    b"retry: 5",
    b"other: z",
    b'{"a": "\xc3\xa9"}',
    b"\xc3",
    b"data: \xff",
]
_ENDINGS = [b"\n", b"\r\n", b"\r"]


@st.composite
def sse_bodies(draw: st.DrawFn) -> bytes:
    """Bodies of any field, comment or blank line, ended by any terminator (mostly "\\n", so
    that whole reads take the fast path), possibly ending mid-line or on a lone "\\r"."""
    lines = draw(st.lists(st.sampled_from([*_PIECES, b"", b""]), max_size=16))
    endings = st.sampled_from(_ENDINGS) if draw(st.booleans()) else st.just(b"\n")
    body = b"".join(line + draw(endings) for line in lines)
    return body + draw(st.sampled_from([b"", b"data: tail", b"\r", b"dat"]))


@settings(max_examples=400, deadline=None)
@given(sse_bodies(), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_sse_any_body_any_cuts_matches_the_reference(body: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(min(cut, len(body)) for cut in cuts), len(body)]
    assert parse_in_pieces([body[a:b] for a, b in itertools.pairwise(bounds)]) == reference(body)


@settings(max_examples=200, deadline=None)
@given(sse_bodies(), st.sampled_from([b"\r\n", b"\r"]))
def test_sse_fast_and_general_paths_agree(body: bytes, terminator: bytes) -> None:
    """The same body with "\\n" lines (the fast path) and with "\\r\\n" or "\\r" lines (the
    general loop), whole and a byte at a time."""
    plain = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    other = plain.replace(b"\n", terminator)
    expected = parse_in_pieces([plain])
    assert parse_in_pieces([other]) == expected
    assert parse_in_pieces([plain[i : i + 1] for i in range(len(plain))]) == expected
    assert parse_in_pieces([other[i : i + 1] for i in range(len(other))]) == expected


def test_sse_partial_line_kept_across_fast_reads() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b": 1}\n\nid: 4\nevent: x\ndata: one\ndata: two\n") == [SSEEvent(data=b'{"a": 1}')]
    assert parser.feed(b"\ndata: three") == [SSEEvent(data=b"one\ntwo", event="x", id="4")]
    assert parser.close() == [SSEEvent(data=b"three", id="4")]

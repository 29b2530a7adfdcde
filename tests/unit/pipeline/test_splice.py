"""Splicing ``_tollway`` into an upstream's bytes must give the object a re-encode would, or
decline (and the caller re-encodes)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline.chat import with_meta
from gateway.pipeline.splice import member_bytes, with_member, with_replaced

META = {"credits_used": "0.000021", "model_used": "bench/gpt-4o-mini", "request_id": "req_1"}
VALUE = msgspec.json.encode(META)


def spliced(raw: bytes) -> bytes | None:
    return with_member(raw, msgspec.json.decode(raw), "_tollway", VALUE)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"x","usage":{"prompt_tokens":1}}',
        b'  \n{ "id" : "x" ,\n "choices" : [ ] }\r\n\t ',  # whitespace inside and around
        b"{}",
        b"{ \n }",
        b'{"text":"a } brace and a \\" quote, {nested} \\\\"}',  # braces and escapes in strings
        b'{"text":"caf\\u00e9 \\ud83d\\ude00","n":[{"a":{"b":{}}}]}',  # unicode escapes
        '{"text":"déjà vu ✓"}'.encode(),  # raw UTF-8
        b'{"a":1.50e3,"b":-0.0,"c":1E2}',  # numbers msgspec would write otherwise
    ],
)
def test_an_object_gets_the_member_as_its_last_and_keeps_its_own_bytes(raw: bytes) -> None:
    out = spliced(raw)
    assert out is not None
    assert out.startswith(raw.rstrip()[:-1])  # the upstream's bytes up to its closing brace, untouched
    decoded: dict[str, Any] = msgspec.json.decode(out)
    assert list(decoded)[-1] == "_tollway" and decoded["_tollway"] == META
    assert {k: v for k, v in decoded.items() if k != "_tollway"} == msgspec.json.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[1,2,3]",  # not an object
        b'"a string"',
        b"null",
        b"42",
        b'{"_tollway":"the upstream sent its own"}',  # replaced, as a dict assignment would
        b'{"\\u005ftollway":"spelt with an escape"}',
    ],
)
def test_anything_else_is_declined(raw: bytes) -> None:
    assert spliced(raw) is None


@pytest.mark.parametrize("raw", [b'{"a":1} {"b":2}', b'{"a":1} x', b'{"a":1'])
def test_bytes_that_are_not_one_json_value_never_reach_the_splice(raw: bytes) -> None:
    """The splice relies on a successful decode of the same bytes: trailing data fails it."""
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(raw)


def test_with_meta_re_encodes_what_it_cannot_splice() -> None:
    body = {"_tollway": "theirs", "id": "x"}
    out = with_meta(b'{"_tollway":"theirs","id":"x"}', body, META)
    assert msgspec.json.decode(out) == {"_tollway": META, "id": "x"}
    assert msgspec.json.decode(with_meta(None, {"id": "y"}, META)) == {"id": "y", "_tollway": META}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.sampled_from([b"", b" ", b"\n\t "]))
def test_any_object_splices_to_what_a_re_encode_gives(body: dict[str, Any], padding: bytes) -> None:
    raw = padding + msgspec.json.encode(body) + padding
    out = with_meta(raw, msgspec.json.decode(raw), META)
    assert msgspec.json.decode(out) == {**{k: v for k, v in body.items() if k != "_tollway"}, "_tollway": META}


def test_with_replaced_swaps_one_member_in_either_spelling() -> None:
    new = member_bytes("model", "fake/gpt")[0]
    compact = b'{"id":"x","model":"gpt-4o","choices":[]}'
    assert with_replaced(compact, member_bytes("model", "gpt-4o"), new) == b'{"id":"x","model":"fake/gpt","choices":[]}'
    spaced = b'{"id": "x", "model": "gpt-4o"}'
    assert with_replaced(spaced, member_bytes("model", "gpt-4o"), new) == b'{"id": "x", "model":"fake/gpt"}'
    # Not there, or there twice (a nested object): the caller re-encodes.
    assert with_replaced(b'{"model" : "gpt-4o"}', member_bytes("model", "gpt-4o"), new) is None
    twice = b'{"model":"gpt-4o","x":{"model":"gpt-4o"}}'
    assert with_replaced(twice, member_bytes("model", "gpt-4o"), new) is None
    # Inside a string the member's quotes are escaped, so the text never matches.
    quoted = b'{"content":"\\"model\\":\\"gpt-4o\\"","model":"gpt-4o"}'
    assert (
        with_replaced(quoted, member_bytes("model", "gpt-4o"), new)
        == b'{"content":"\\"model\\":\\"gpt-4o\\"","model":"fake/gpt"}'
    )


def _replaced_by_finding(raw: bytes, old: tuple[bytes, ...], new: bytes) -> bytes | None:
    """with_replaced as first written (find, find again, join slices): the reference."""
    for spelling in old:
        at = raw.find(spelling)
        if at >= 0:
            if raw.find(spelling, at + len(spelling)) >= 0:
                return None
            return raw[:at] + new + raw[at + len(spelling) :]
    return None


_SPELLINGS = member_bytes("model", "m")


@given(st.lists(st.sampled_from([*_SPELLINGS, b'"model":"m', b'"m"', b"{", b"}", b",", b'"model": "m"x'])))
def test_with_replaced_agrees_with_finding_and_joining(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    new = member_bytes("model", "fake/m")[0]
    assert with_replaced(raw, _SPELLINGS, new) == _replaced_by_finding(raw, _SPELLINGS, new)

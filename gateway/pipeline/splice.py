"""Adding the gateway's member to an upstream's JSON object without re-encoding it.

The upstream's answer is already valid JSON (the adapter decoded it to read usage); re-encoding
the whole object to add ``_tollway`` costs a full serialisation per request. Splicing the member's
bytes in before the object's closing brace gives the same object. Whenever the bytes are not
plainly one object that lacks the member, the caller re-encodes instead (:func:`with_member`
returns ``None``).
"""

from __future__ import annotations

import msgspec

_WHITESPACE = b" \t\r\n"


def with_member(raw: bytes, decoded: object, name: str, value: bytes) -> bytes | None:
    """``raw`` with the member ``"name": value`` added as its last; ``None`` when splicing
    cannot be shown safe (the caller then re-encodes).

    ``decoded`` is what ``raw`` decoded to (a successful decode: one JSON value and nothing but
    whitespace around it), ``name`` a plain key (nothing JSON escapes), ``value`` encoded JSON.
    Only an object that lacks ``name`` (however the upstream spelt it) is spliced: a key already
    there is replaced by re-encoding, as a dict assignment would."""
    if not isinstance(decoded, dict) or name in decoded:
        return None
    end = len(raw.rstrip(_WHITESPACE))
    start = len(raw) - len(raw.lstrip(_WHITESPACE))
    if end - start < 2 or raw[start] != 0x7B or raw[end - 1] != 0x7D:  # "{" … "}"
        return None
    member = b'"' + name.encode() + b'":' + value
    comma = b"," if decoded else b""
    return raw[: end - 1] + comma + member + raw[end - 1 :]


_encode_str = msgspec.json.Encoder().encode


def member_bytes(name: str, value: str) -> tuple[bytes, bytes]:
    """``"name":"value"`` as a compact encoder writes it (most upstreams), then as Python's
    ``json.dumps`` does (``"name": "value"``)."""
    key, encoded = b'"' + name.encode() + b'":', _encode_str(value)
    return key + encoded, key + b" " + encoded


def with_replaced(raw: bytes, old: tuple[bytes, ...], new: bytes) -> bytes | None:
    """``raw`` with the member written as one of ``old`` (see :func:`member_bytes`) replaced by
    ``new``; ``None`` when it is there in none of those spellings or more than once (inside a
    nested object too), and the caller re-encodes instead. A member's bytes cannot occur inside
    a JSON string (its quotes would be escaped there), so one occurrence is the member itself."""
    for spelling in old:
        # One scan in C finds it and proves it unique (a stream does this per chunk: a find,
        # a second find and two slices joined cost 1.7 times as much).
        parts = raw.split(spelling)
        if len(parts) > 1:
            return new.join(parts) if len(parts) == 2 else None
    return None

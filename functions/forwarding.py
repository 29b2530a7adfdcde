"""What goes upstream for one call: the target URL, the headers and the body (pure, no I/O).

Everything that does not depend on the request is worked out once per resolved function
(:class:`Plan`, cached by the runtime for as long as the directory keeps that function).

**URL.** The target URL; with ``forward_path`` the call's extra path appended to the target's
path (``/fn/{id}/customers/42`` → ``…/v1/customers/42``: segments of RFC 3986 path characters
only, no ``.`` or ``..`` segment, however encoded, no encoded ``/`` or ``\\``, no empty segment);
with ``forward_query`` the client's query string appended to the target's; then every query
mapping *set* (a parameter of the same name, the target's or the client's, is removed first, so
a caller cannot replace the secret with its own value).

**Headers.** Only the function's static headers and its header mappings (a mapping replaces a
static header of the same name, case-insensitively), plus what the transport needs:
``Content-Type`` for a body (below), ``Accept-Encoding: identity`` and ``User-Agent: Tollway``
unless a static header sets them. Nothing of the client's: not its cookies, ``Authorization``,
``x-proxy-token``, ``Accept`` or anything else. ``identity``: the answer's bytes are passed to
the client untouched with the target's ``Content-Encoding``, and asking for no encoding means the
client (which never said what it accepts to the target) gets bytes it can read.

**Body** (envmanager.md §3 with PRODUCT.md's changes), only for POST, PUT and DELETE:

========================================  ==================================================
function / call                           sent
========================================  ==================================================
``body_template`` set                     the template, body mappings merged in (it wins
                                          over pass-through, as in envmanager)
pass-through, client JSON, body mappings  the client's JSON object with the mappings merged
pass-through, any other client body       the client's bytes, byte for byte, with its
                                          ``Content-Type`` (form-encoded, binary, JSON when
                                          nothing is merged into it)
otherwise                                 ``{}`` with the mappings merged
========================================  ==================================================

A JSON object is sent only if it has at least one key (envmanager); other JSON templates are
sent as they are. A body mapping's key is a path: ``credentials.token`` sets
``{"credentials": {"token": …}}``, creating (or replacing a non-object with) each level. A
client body is read as JSON only when mappings must be merged into it and its content type is
JSON (``application/json``, ``…+json``), ``text/plain`` or absent; a body that does not decode
to an object is passed through unchanged, without the body secrets (they have nowhere to go).
A JSON body gets ``Content-Type: application/json`` unless a static header sets one; a static
``Content-Type`` also wins over the client's for a passed-through body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote, unquote_plus

import httpx
import msgspec

from functions.config import ResolvedFunction
from functions.egress import EgressPolicy, EgressRefused
from functions.models import InjectAs
from functions.origins import OriginRules

__all__ = ["Plan", "UpstreamBody", "build_body", "build_url", "clean_extra_path"]

JSON_TYPE = "application/json"
BODY_METHODS = frozenset({"POST", "PUT", "DELETE"})
_SEGMENT = re.compile(rb"^[A-Za-z0-9\-._~!$&'()*+,;=:@%]*\Z")
_QUERY = re.compile(rb"^[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*\Z")
_BAD_ESCAPES = re.compile(rb"%(?:2f|5c|00)", re.IGNORECASE)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_TYPE or media.endswith("+json") or media == "text/plain"


@dataclass(frozen=True, slots=True)
class Plan:
    """One resolved function, worked out for forwarding."""

    function: ResolvedFunction
    url: httpx.URL
    target_path: bytes  # without a trailing "/", for appending an extra path
    target_query: bytes
    headers: tuple[tuple[str, str], ...]
    sets_content_type: bool
    query: tuple[tuple[str, str], ...]  # (name, value) of the query mappings
    body_paths: tuple[tuple[tuple[str, ...], str], ...]  # (key path, value) of the body mappings
    template: bytes | None  # the encoded template when nothing is merged into it
    origins: OriginRules
    refusal: str | None  # the SSRF guard's verdict on the target URL itself

    @classmethod
    def of(cls, function: ResolvedFunction, policy: EgressPolicy) -> Plan:
        refusal: str | None = None
        try:
            url = policy.check_target(function.target_url)
        except EgressRefused as error:
            url, refusal = httpx.URL("https://invalid.invalid/"), str(error)
        headers: dict[str, tuple[str, str]] = {name.lower(): (name, value) for name, value in function.headers.items()}
        for injection in function.injections:
            if injection.inject_as == InjectAs.HEADER:
                headers[injection.key.lower()] = (injection.key, injection.value)
        headers.setdefault("accept-encoding", ("Accept-Encoding", "identity"))
        headers.setdefault("user-agent", ("User-Agent", "Tollway"))
        body_paths = tuple(
            (tuple(injection.key.split(".")), injection.value)
            for injection in function.injections
            if injection.inject_as == InjectAs.BODY
        )
        template: bytes | None = None
        fixed = function.body_template
        if fixed is not None and not body_paths and (not isinstance(fixed, dict) or fixed):
            template = _encode(fixed)
        raw_path = url.raw_path.split(b"?", 1)[0]
        return cls(
            function=function,
            url=url,
            target_path=raw_path.rstrip(b"/"),
            target_query=url.query,
            headers=tuple(headers.values()),
            sets_content_type="content-type" in headers,
            query=tuple(
                (injection.key, injection.value)
                for injection in function.injections
                if injection.inject_as == InjectAs.QUERY
            ),
            body_paths=body_paths,
            template=template,
            origins=OriginRules(function.allowed_origins, function.method.value),
            refusal=refusal,
        )


def clean_extra_path(raw: bytes) -> bytes | None:
    """The extra path as it will be appended (percent-encoding kept), or None if it is refused."""
    segments = raw.split(b"/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if not segment:
            if index == last:
                continue  # a trailing slash
            return None
        if not _SEGMENT.match(segment) or _BAD_ESCAPES.search(segment):
            return None
        if unquote(segment.decode("ascii")) in (".", ".."):
            return None
    return raw


def _query_safe(query: bytes) -> bytes:
    """The client's query string with every byte a URL may not hold percent-encoded."""
    if _QUERY.match(query):
        return query
    return b"".join(bytes([byte]) if _QUERY.match(bytes([byte])) else b"%%%02X" % byte for byte in query)


def _set_query(query: bytes, name: str, value: str) -> bytes:
    kept = [
        part for part in query.split(b"&") if part and unquote_plus(part.split(b"=", 1)[0].decode("latin-1")) != name
    ]
    kept.append(f"{quote_plus(name)}={quote_plus(value)}".encode())
    return b"&".join(kept)


def build_url(plan: Plan, extra_path: bytes, client_query: bytes) -> httpx.URL:
    """The URL of this call (``extra_path`` already passed :func:`clean_extra_path`)."""
    function = plan.function
    forward_path = bool(extra_path) and function.forward_path
    forward_query = bool(client_query) and function.forward_query
    if not (forward_path or forward_query or plan.query):
        return plan.url
    path = plan.target_path + b"/" + extra_path if forward_path else plan.url.raw_path.split(b"?", 1)[0]
    query = plan.target_query
    if forward_query:
        client_query = _query_safe(client_query)
        query = query + b"&" + client_query if query else client_query
    for name, value in plan.query:
        query = _set_query(query, name, value)
    return plan.url.copy_with(raw_path=path + b"?" + query if query else path)


def _merge(base: dict[str, Any], paths: tuple[tuple[tuple[str, ...], str], ...]) -> dict[str, Any]:
    """``base`` with each value set at its path; only the objects on a path are copied, so a
    cached template is never changed."""
    merged = dict(base)
    for path, value in paths:
        node = merged
        for name in path[:-1]:
            child = node.get(name)
            child = dict(child) if isinstance(child, dict) else {}
            node[name] = child
            node = child
        node[path[-1]] = value
    return merged


@dataclass(frozen=True, slots=True)
class UpstreamBody:
    content: bytes | None
    content_type: str | None  # the type to send when no static header sets one


_NO_BODY = UpstreamBody(None, None)


def _json_body(value: Any) -> UpstreamBody:
    if isinstance(value, dict) and not value:
        return _NO_BODY
    return UpstreamBody(_encode(value), JSON_TYPE)


def build_body(plan: Plan, method: str, body: bytes, content_type: str | None) -> UpstreamBody:
    """What to send for a call with ``body`` (the rules of the module docstring)."""
    if method not in BODY_METHODS:
        return _NO_BODY
    function = plan.function
    if function.body_template is not None:
        if plan.template is not None:
            return UpstreamBody(plan.template, JSON_TYPE)
        base = function.body_template
        if not plan.body_paths:
            return _NO_BODY  # an empty object template
        return _json_body(_merge(base if isinstance(base, dict) else {}, plan.body_paths))
    if function.pass_through_body and body:
        if plan.body_paths and (content_type is None or _is_json_type(content_type)):
            try:
                decoded = _decode(body)
            except msgspec.DecodeError:
                decoded = None
            if isinstance(decoded, dict):
                return _json_body(_merge(decoded, plan.body_paths))
        return UpstreamBody(body, content_type)
    if plan.body_paths:
        return _json_body(_merge({}, plan.body_paths))
    return _NO_BODY

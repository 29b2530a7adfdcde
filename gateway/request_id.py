"""Every request gets one id, ``req_…``, set here once: in the ASGI scope for the code that
needs it (the ``/v1`` pipeline keys its usage record and its debit on it; the error renderer
names it) and in the ``X-Request-Id`` header of the answer.

A caller may name its request itself: a well-formed incoming ``X-Request-Id`` (printable ASCII,
at most 128 characters) is kept as the request's *correlation id*: logged, answered in
``X-Request-Id`` and forwarded upstream. It never keys the usage record or the credit hold,
which stay on Tollway's own unforgeable ``req_…`` id (answered then in ``X-Tollway-Request-Id``):
a caller who could choose that key could replay one id and have every later settlement
dropped as a duplicate. An incoming W3C ``traceparent`` is kept and forwarded unchanged when
well-formed, and dropped otherwise.

A route's answer passes through :func:`request_id_middleware`, which adds the header unless the
answer already carries it (the ``/v1`` pipeline writes it on its own responses, from this same
id). An error is rendered by the exception handlers, which sit outside route middleware in
Litestar, so :func:`gateway.errors.error_response` adds the header from the scope itself.

What goes upstream is set here, per request, in :data:`providers.http.FORWARDED`, which every
provider client reads when it sends (so no adapter builds these headers itself).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, cast

from providers.http import FORWARDED

__all__ = [
    "CLIENT_HEADER",
    "CURRENT",
    "HEADER",
    "OWN_HEADER",
    "correlation_id_of",
    "new_request_id",
    "request_id_middleware",
    "request_id_of",
    "traceparent_of",
]

HEADER = b"x-request-id"
CLIENT_HEADER = HEADER  # what a caller sends to name its request
OWN_HEADER = b"x-tollway-request-id"
TRACEPARENT = b"traceparent"
V1_PREFIX = "/v1/"
MAX_CLIENT_ID = 128
_SCOPE_KEY = "tollway.request_id"
_CLIENT_KEY = "tollway.client_request_id"
_TRACE_KEY = "tollway.traceparent"
# Printable ASCII without spaces: safe in a header, a log line and a metric exemplar.
_CLIENT_ID = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_CLIENT_ID)
# W3C Trace Context: version 00 (or a future one, which must still start with these fields),
# a non-zero trace id and parent id, lower-case hex.
_TRACEPARENT = re.compile(rb"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-[\x21-\x7e]*)?")

# The current request's path and correlation id, for what reports on it (gateway/metrics.py)
# without threading them through every stage.
CURRENT: ContextVar[tuple[str, str]] = ContextVar("tollway_current_request", default=("", ""))

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def request_id_of(scope: Mapping[str, object]) -> str:
    """This request's own id (the usage record's key); made (and kept) here if the middleware
    did not run, e.g. for a 404 that no route answered, so every caller sees the same id."""
    request_id = scope.get(_SCOPE_KEY)
    if not isinstance(request_id, str):
        request_id = cast(Scope, scope)[_SCOPE_KEY] = new_request_id()
    return request_id


def correlation_id_of(scope: Mapping[str, object]) -> str:
    """The id the caller and the operator know this request by: the caller's ``X-Request-Id``
    when it sent a well-formed one, else the request's own id."""
    client = scope.get(_CLIENT_KEY)
    return client if isinstance(client, str) else request_id_of(scope)


def traceparent_of(scope: Mapping[str, object]) -> str | None:
    trace = scope.get(_TRACE_KEY)
    return trace if isinstance(trace, str) else None


def _incoming(scope: Scope) -> tuple[str | None, str | None]:
    """The caller's well-formed ``X-Request-Id`` and ``traceparent``, if any (one pass over the
    raw header list; ASGI servers give names in lower case)."""
    client = trace = None
    for name, value in scope["headers"]:
        if name == HEADER:
            client = value.decode("ascii") if _CLIENT_ID.fullmatch(value) else None
        elif name == TRACEPARENT:
            trace = value.decode("ascii") if _TRACEPARENT.fullmatch(value) else None
    return client, trace


def _with_ids(send: Send, correlation: bytes, own: bytes) -> Send:
    """Answers name the caller's id in ``X-Request-Id`` and Tollway's own one beside it."""

    async def send_with_ids(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(n, v) for n, v in message.get("headers", []) if bytes(n).lower() not in (HEADER, OWN_HEADER)]
            headers += [(HEADER, correlation), (OWN_HEADER, own)]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_ids


def request_id_middleware(app: ASGIApp) -> Any:  # Any: Litestar types its middleware with its own TypedDicts
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        own = request_id_of(scope)
        client, trace = _incoming(scope)
        forwarded = [("x-request-id", client or own)]
        if trace is not None:
            scope[_TRACE_KEY] = trace
            forwarded.append(("traceparent", trace))
        FORWARDED.set(forwarded)
        CURRENT.set((scope["path"], client or own))
        if client is not None:
            # Rare (the caller chose an id): worth a per-message wrapper even on streams.
            scope[_CLIENT_KEY] = client
            await app(scope, receive, _with_ids(send, client.encode(), own.encode()))
            return
        request_id = own.encode()
        if scope["method"] == "POST" and scope["path"].startswith(V1_PREFIX):
            # Metered /v1 answers carry the id already (the pipeline writes it; errors add it from
            # the scope): no per-message wrapper on the hot path, where a stream sends many.
            await app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(bytes(name).lower() == HEADER for name, _value in headers):
                    headers.append((HEADER, request_id))
                    message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware

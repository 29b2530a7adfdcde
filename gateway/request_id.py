"""Every request gets one id, ``req_…``, set here once: in the ASGI scope for the code that
needs it (the ``/v1`` pipeline keys its usage record and its debit on it; the error renderer
names it) and in the ``X-Request-Id`` header of the answer.

A route's answer passes through :func:`request_id_middleware`, which adds the header unless the
answer already carries it (the ``/v1`` pipeline writes it on its own responses, from this same
id). An error is rendered by the exception handlers, which sit outside route middleware in
Litestar, so :func:`gateway.errors.error_response` adds the header from the scope itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, cast

__all__ = ["HEADER", "new_request_id", "request_id_middleware", "request_id_of"]

HEADER = b"x-request-id"
V1_PREFIX = "/v1/"
_SCOPE_KEY = "tollway.request_id"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def request_id_of(scope: Mapping[str, object]) -> str:
    """This request's id; made (and kept) here if the middleware did not run, e.g. for a 404
    that no route answered, so every caller of this function sees the same id."""
    request_id = scope.get(_SCOPE_KEY)
    if not isinstance(request_id, str):
        request_id = cast(Scope, scope)[_SCOPE_KEY] = new_request_id()
    return request_id


def request_id_middleware(app: ASGIApp) -> Any:  # Any: Litestar types its middleware with its own TypedDicts
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = request_id_of(scope).encode()
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

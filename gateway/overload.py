"""Shed load instead of queueing it: a cap on the requests one process serves at once.

Past the cap a request is answered at once with 503 ``overloaded`` (the OpenAI error shape,
``Retry-After: 1``) before it reaches a handler, so a burst far above capacity never grows the
event loop's queue, the database pool's waiters or the upstream pools' waiters without bound:
the requests already admitted keep their latency, the rest learn to come back, and the process
recovers the moment the burst ends. Nothing is reserved or metered for a refused request.

The count is process-local and needs no lock: it only changes on the event loop's thread. A
stream counts until its last byte is sent (its ASGI call returns then). ``/healthz`` is never
refused, so a load balancer does not take an overloaded process for a dead one.

Wired as one Litestar middleware built once per app (an :class:`InFlightLimit`): Litestar calls a
middleware factory once per route, so the counter lives in the object the factory closes over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from gateway.request_id import HEADER, request_id_of

__all__ = ["InFlightLimit"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_S = 1
_EXEMPT_PATHS = frozenset({"/healthz"})
_BODY = msgspec.json.encode(
    {
        "error": {
            "message": "the gateway is serving as many requests as it can; retry shortly",
            "type": "server_error",
            "code": "overloaded",
        }
    }
)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", str(RETRY_AFTER_S).encode()),
]


class InFlightLimit:
    """The shared count of one app's requests in flight, and the cap on it (0: no cap)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    def __call__(self, app: ASGIApp) -> Any:  # Any: Litestar types its middleware with its own TypedDicts
        if self.limit <= 0:
            return app

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] in _EXEMPT_PATHS:
                await app(scope, receive, send)
                return
            if self.in_flight >= self.limit:
                self.refused += 1
                await _refuse(scope, send)
                return
            self.in_flight += 1
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight -= 1

        return middleware


async def _refuse(scope: Scope, send: Send) -> None:
    headers = [*_HEADERS, (HEADER, request_id_of(scope).encode())]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})

"""CORS for ``/v1``, so browser apps can call the gateway with ``bt-`` tokens.

A preflight carries no credentials, so the gateway cannot know which key will follow: it
answers every preflight, and the real request is refused by step 7 of the security chain if
its origin is not allowed. Every ``/v1`` answer to a request with an ``Origin`` echoes it (with
``Vary: Origin``), errors included: a page must be able to read a 401 ``token_expired`` to
know it needs a fresh token, and reading a refusal grants nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# Plain ASGI types: this middleware only reads a few keys and passes everything through.
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXPOSED = (
    b"X-Request-Id, X-Tollway-Credits-Used, X-Tollway-Credits-Reserved, X-Tollway-Max-Tokens, Retry-After"
    b", X-Tollway-Cache"
)
ALLOWED_METHODS = b"GET, POST, OPTIONS"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def cors_middleware(max_age_s: int) -> Any:
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
                await app(scope, receive, send)
                return
            origin = _header(scope, b"origin")
            if origin is None:
                await app(scope, receive, send)
                return
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
                requested = _header(scope, b"access-control-request-headers") or b"authorization, content-type"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 204,
                        "headers": [
                            (b"access-control-allow-origin", origin),
                            (b"access-control-allow-methods", ALLOWED_METHODS),
                            (b"access-control-allow-headers", requested),
                            (b"access-control-max-age", str(max_age_s).encode()),
                            (b"vary", b"Origin"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return

            async def send_with_cors(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers += [
                        (b"access-control-allow-origin", origin),
                        (b"access-control-expose-headers", EXPOSED),
                        (b"vary", b"Origin"),
                    ]
                    message = {**message, "headers": headers}
                await send(message)

            await app(scope, receive, send_with_cors)

        return middleware

    return factory

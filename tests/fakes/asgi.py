"""What every fake server needs from ASGI: answer the lifespan, read a whole request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ReceivedRequest:
    """What a fake upstream was sent, for the test to inspect."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


async def serve_lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_request(scope: dict[str, Any], receive: Any) -> tuple[dict[str, str], bytes]:
    """Lower-cased headers and the whole body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return {k.decode().lower(): v.decode() for k, v in scope["headers"]}, body

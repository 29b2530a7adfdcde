"""``GET /metrics``: the Prometheus exposition (gateway/metrics.py says what is in it).

On the main port it is the operator's, behind the operator token like ``/api/admin``; with
``metrics_bind`` set it is served instead on that separate address (a port the operator keeps
private: loopback, or a network only the scraper reaches), where it needs no token, by a
listener so small it is written here on asyncio streams rather than as a second server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get

from gateway.api.deps import operator_only
from gateway.api.openapi import ADMIN_AUTH, errors
from gateway.metrics import CONTENT_TYPE, render
from gateway.settings import metrics_address
from gateway.state import GatewayState

__all__ = ["get_metrics", "metrics_listener"]

log = logging.getLogger("tollway.metrics")
_MAX_REQUEST_HEAD = 8192
_READ_TIMEOUT_S = 5.0


@get(
    "/metrics",
    guards=[operator_only],
    operation_id="get_metrics",
    security=ADMIN_AUTH,
    responses=errors(401),
    include_in_schema=False,
    tags=["operator"],
)
async def get_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    state: GatewayState = request.app.state.gateway
    return Response(await render(state), media_type=CONTENT_TYPE)


async def _serve_one(state: GatewayState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(_READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = head[:_MAX_REQUEST_HEAD].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method == b"GET" and path == b"/metrics":
            body, status = await render(state), b"200 OK"
            kind = CONTENT_TYPE.encode()
        else:
            body, status, kind = b"not found\n", b"404 Not Found", b"text/plain"
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: "
            + kind
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def metrics_listener(state: GatewayState, bind: str) -> AsyncIterator[None]:
    """Serve ``GET /metrics`` on ``bind`` (``host:port``) while open."""
    host, port = metrics_address(bind)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_one(state, reader, writer)

    server = await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_HEAD)
    log.info("metrics served on http://%s/metrics", bind)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()

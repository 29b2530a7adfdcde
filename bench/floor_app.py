"""The stack's floor: a bare Litestar pass-through with no auth, checks or metering.

Same server (uvicorn, uvloop, httptools) and the same httpx + AiohttpTransport client as the
gateway, so the gap between this and the gateway is what Tollway's own work costs.
Run: python bench/floor_app.py PORT UPSTREAM_PORT
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport
from litestar import Litestar, Request, Response, post
from litestar.response import Stream

UPSTREAM = f"http://127.0.0.1:{sys.argv[2]}/v1" if len(sys.argv) > 2 else ""


@post("/v1/chat/completions")
async def forward(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    client: httpx.AsyncClient = request.app.state.client
    body = await request.body()
    if b'"stream":true' in body.replace(b" ", b""):
        # A stream is passed through as it arrives, as any gateway must (for the TTFB floor).
        upstream = await client.send(client.build_request("POST", "/chat/completions", content=body), stream=True)
        return Stream(_relay(upstream), media_type="text/event-stream", status_code=200)
    upstream = await client.post("/chat/completions", content=body)
    return Response(upstream.content, media_type="application/json")


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    # As in the gateway (bench/RESULTS.md, issue 2): no log line per upstream request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app.state.client = httpx.AsyncClient(base_url=UPSTREAM, transport=AiohttpTransport())
    yield
    await app.state.client.aclose()


app = Litestar([forward], lifespan=[lifespan], openapi_config=None)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )

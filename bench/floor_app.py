"""The stack's floor: a bare Litestar pass-through with no auth, checks or metering.

Same server (uvicorn, uvloop, httptools) and the same httpx + AiohttpTransport client as the
gateway, so the gap between this and the gateway is what Tollway's own work costs.
Run: python bench/floor_app.py PORT UPSTREAM_PORT
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport
from litestar import Litestar, Request, Response, post

UPSTREAM = f"http://127.0.0.1:{sys.argv[2]}/v1" if len(sys.argv) > 2 else ""


@post("/v1/chat/completions")
async def forward(request: Request[Any, Any, Any]) -> Response[bytes]:
    client: httpx.AsyncClient = request.app.state.client
    upstream = await client.post("/chat/completions", content=await request.body())
    return Response(upstream.content, media_type="application/json")


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
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

"""The in-flight cap as a raw ASGI wrapper, without a server (gateway/overload.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.overload import InFlightLimit


class HeldApp:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
    return sent


async def test_overload_refuses_past_the_cap_and_admits_again_after() -> None:
    inner = HeldApp()
    limit = InFlightLimit(2)
    app = limit(inner)
    held = [asyncio.create_task(call(app)) for _ in range(2)]
    while inner.entered < 2:
        await asyncio.sleep(0)
    assert limit.in_flight == 2

    start, body = await call(app)
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    assert headers[b"x-request-id"].startswith(b"req_")
    assert json.loads(body["body"])["error"] == {
        "message": "the gateway is serving as many requests as it can; retry shortly",
        "type": "server_error",
        "code": "overloaded",
    }
    assert int(headers[b"content-length"]) == len(body["body"])
    assert limit.refused == 1
    assert inner.entered == 2

    inner.release.set()
    for messages in await asyncio.gather(*held):
        assert messages[0]["status"] == 200
    assert limit.in_flight == 0
    assert (await call(app))[0]["status"] == 200


async def test_overload_never_refuses_liveness_and_zero_means_no_cap() -> None:
    inner = HeldApp()
    inner.release.set()
    limit = InFlightLimit(1)
    limit.in_flight = 1  # as if one request were being served
    assert (await call(limit(inner), "/healthz"))[0]["status"] == 200
    assert (await call(limit(inner)))[0]["status"] == 503
    assert InFlightLimit(0)(inner) is inner


async def test_overload_frees_the_slot_when_the_app_raises() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("handler failed")

    limit = InFlightLimit(1)
    app = limit(failing)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await call(app)
    assert limit.in_flight == 0
    assert limit.refused == 0

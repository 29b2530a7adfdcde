"""A served request leaves no reference cycles behind: what it allocated is freed by reference
counting as it ends. The server spaces its garbage collections far apart on that promise
(gateway/collector.py); a cycle per request would instead pile up between collections (a
DisconnectScope and its watch once kept each request's task, context and headers waiting for
the collector).

Through the real app on a real server (a thread of this process), the fake upstream and the
official SDK; the collector keeps everything it finds unreachable (``DEBUG_SAVEALL``), and the
test looks for objects of the server's code among it."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes.gateway_fixtures import FAKE_MODEL, Gateway

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
SERVER_CODE = ("gateway.", "billing.", "keys.", "providers.", "functions.", "uvicorn.", "litestar.")


def _server_objects(garbage: list[object]) -> list[str]:
    """The unreachable objects that the server's code made: its own classes, and the tasks it
    ran (not the test's own: ``asyncio.run`` leaves its main task in a cycle)."""
    found: list[str] = []
    for item in garbage:
        kind = type(item)
        if kind.__module__.startswith(SERVER_CODE):
            found.append(f"{kind.__module__}.{kind.__qualname__}")
        elif isinstance(item, asyncio.Task):
            code = getattr(item.get_coro(), "cr_code", None)
            if code is None or f"{os.sep}tests{os.sep}" not in code.co_filename:
                found.append(f"task {item.get_coro()!r}")
    return found


@pytest.fixture
def collector_keeping_garbage() -> Iterator[list[object]]:
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_served_requests_leave_no_reference_cycles(gateway: Gateway, collector_keeping_garbage: list[object]) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)
    refused = openai.OpenAI(base_url=gateway.v1, api_key="prx-" + "0" * 48, max_retries=0)
    for _ in range(5):
        answer = client.chat.completions.create(model=FAKE_MODEL, messages=HI)
        assert answer.choices[0].message.content
        streamed = client.chat.completions.create(model=FAKE_MODEL, messages=HI, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
        with pytest.raises(openai.AuthenticationError):
            refused.chat.completions.create(model=FAKE_MODEL, messages=HI)
    gateway.settled()
    gc.collect()
    assert _server_objects(collector_keeping_garbage) == []

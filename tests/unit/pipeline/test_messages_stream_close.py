"""Closing the /v1/messages stream wrapper closes the chat stream inside it (whose ``finally``
settles the bill), however the wrapper is left."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.pipeline.messages import messages_headers, translate_stream
from providers.dialects.messages_stream import MessagesStreamTranslator

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'


class Inner:
    def __init__(self) -> None:
        self.closed = 0

    async def body(self) -> AsyncIterator[bytes]:
        try:
            for _ in range(100):
                yield CHUNK
            yield b"data: [DONE]\n\n"
        finally:
            self.closed += 1


def translator() -> MessagesStreamTranslator:
    return MessagesStreamTranslator(message_id="msg_1", model="m")


async def test_messages_stream_wrapper_closed_early_closes_inner() -> None:
    inner = Inner()
    wrapper = translate_stream(inner.body(), translator())
    first = await anext(wrapper)
    assert first.startswith(b"event: message_start")
    await wrapper.aclose()  # the client hung up
    assert inner.closed == 1


async def test_messages_stream_wrapper_read_to_end_closes_inner_once() -> None:
    inner = Inner()
    out = b"".join([piece async for piece in translate_stream(inner.body(), translator())])
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert inner.closed == 1


async def test_messages_stream_wrapper_failing_closes_inner() -> None:
    inner = Inner()
    wrapper = translate_stream(inner.body(), translator())
    await anext(wrapper)
    with pytest.raises(RuntimeError):
        await wrapper.athrow(RuntimeError("boom"))
    assert inner.closed == 1


def test_messages_headers_carry_x_api_key_as_bearer() -> None:
    assert messages_headers({"X-Api-Key": "prx-abc"})["authorization"] == "Bearer prx-abc"
    assert messages_headers({"authorization": "Bearer bt-x"})["authorization"] == "Bearer bt-x"
    assert messages_headers({"authorization": "Bearer a", "x-api-key": "prx-b"})["authorization"] == "Bearer prx-b"
    assert "authorization" not in messages_headers({"x-api-key": ""})

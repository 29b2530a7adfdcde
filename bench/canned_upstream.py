"""A minimal OpenAI-compatible upstream with canned answers, for benchmarks only.

An HTTP/1.1 protocol on uvloop with precomputed answers, so the upstream costs next to nothing
and the benchmark measures the gateway. Run: python bench/canned_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httptools
import uvloop

USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


STREAM = (
    _chunk({"role": "assistant", "content": ""})
    + b"".join(_chunk({"content": w}) for w in ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"])
    + _chunk({}, "stop")
    + _chunk({}, usage=USAGE)
    + b"data: [DONE]\n\n"
)


def _response(kind: bytes, payload: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n" % (kind, len(payload))
    return head + payload


CHAT_RESPONSE = _response(b"application/json", COMPLETION)
STREAM_RESPONSE = _response(b"text/event-stream", STREAM)


class CannedProtocol(asyncio.Protocol):
    """One connection: every request gets the canned completion, or the canned stream when its
    body asks for one; keep-alive as the client asks. A raw protocol rather than an ASGI app on
    uvicorn: on two cores the upstream shares a core with wrk (and in bench/workers.py both
    cores with the gateway), so what it costs is taken from what is measured. uvicorn's stack
    cost ~150 µs of CPU a request here."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's TCPTransport, not an asyncio.Transport subclass
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        streaming = b'"stream":true' in b"".join(self.body).replace(b" ", b"")
        self.transport.write(STREAM_RESPONSE if streaming else CHAT_RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(CannedProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))

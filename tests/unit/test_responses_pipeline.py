"""The seam between the chat pipeline's stream and the Responses events: closing the Responses
stream early must close the chat stream's body, whose ``finally`` settles the bill."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from gateway.pipeline.responses import response_id_for, translated_events
from providers.dialects.responses import parse_request
from providers.dialects.responses_stream import ResponsesStreamTranslator

CHAT = (Path(__file__).parent.parent / "golden" / "responses" / "stream_text.chat.sse").read_bytes()


class ChatBody:
    """Stands in for the chat pipeline's stream body: records whether its finally ran."""

    def __init__(self) -> None:
        self.settled = 0

    async def body(self) -> AsyncIterator[str | bytes]:
        try:
            for block in CHAT.split(b"\n\n"):
                if block:
                    yield block + b"\n\n"
        finally:
            self.settled += 1


def _translator() -> ResponsesStreamTranslator:
    return ResponsesStreamTranslator(parse_request({"model": "m", "input": "hi"}), "resp_1", 0)


async def test_responses_events_closed_early_close_the_chat_stream() -> None:
    chat = ChatBody()
    events = translated_events(chat.body(), _translator())
    first = await events.__anext__()
    assert first.startswith(b"event: response.created")
    await events.aclose()  # the client went away
    assert chat.settled == 1


async def test_responses_events_run_to_the_end_settle_once() -> None:
    chat = ChatBody()
    out = b"".join([piece async for piece in translated_events(chat.body(), _translator())])
    assert out.rstrip().splitlines()[-2] == b"event: response.completed"
    assert chat.settled == 1


def test_responses_id_names_the_request() -> None:
    assert response_id_for("req_abc123") == "resp_abc123"

"""``POST /v1/responses`` (OpenAI's Responses API), served statelessly over the chat pipeline
(or passed through to a provider that serves the API itself: :mod:`.responses_native`).

The request is translated into a chat-completions body (:mod:`providers.dialects.responses`)
and run through :func:`gateway.pipeline.chat.chat_completions` unchanged, so it gets the same
security chain, reserve and settle, routing and one usage record as chat. Its answer is
translated back: a JSON body into a ``response`` object, a stream's chat chunks into the
Responses events (:mod:`providers.dialects.responses_stream`).

The stream's hold is owned by the chat stream's body iterator (its ``finally`` settles): this
module's wrapper closes that iterator in its own ``finally``, so a client that disconnects from
the Responses stream still settles exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, NoReturn

import msgspec
from litestar import Response
from litestar.response import Stream

from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge
from gateway.pipeline.chat import chat_completions, decode_object
from gateway.pipeline.metered import Admission
from gateway.pipeline.responses_native import goes_native, native_response
from gateway.pipeline.streaming import WatchedStream
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.dialects.responses import (
    ResponsesRequest,
    ResponsesRequestError,
    chat_body_from_responses,
    response_from_chat,
)
from providers.dialects.responses_stream import ResponsesStreamTranslator

__all__ = ["create_response", "response_id_for", "translated_events"]

_encoder = msgspec.json.Encoder()


def response_id_for(request_id: str) -> str:
    """``resp_…`` named after the request id, so a response is traced to its usage record."""
    return "resp_" + request_id.removeprefix("req_")


async def _refuse(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, request_id: str, error: GatewayError
) -> NoReturn:
    """A refusal after authentication, recorded once like chat's (an unauthenticated request
    gets its 401 from the door first, as it would on chat)."""
    async with Admission(state, headers, facts, request_id):
        raise error


async def create_response(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw_body: bytes, request_id: str
) -> Response[bytes] | Stream:
    if len(raw_body) > state.settings.max_chat_body_bytes:
        raise PayloadTooLarge(
            f"a responses request may be at most {state.settings.max_chat_body_bytes} bytes (max_chat_body_bytes)"
        )
    try:
        body = decode_object(raw_body)
    except GatewayError as error:
        await _refuse(state, headers, facts, request_id, error)
    if goes_native(state, body):
        return await native_response(state, headers, facts, raw_body, body, request_id)
    try:
        request, chat = chat_body_from_responses(body)
    except GatewayError as error:
        await _refuse(state, headers, facts, request_id, error)
    except ResponsesRequestError as error:
        await _refuse(state, headers, facts, request_id, InvalidRequest(error.message, param=error.param))
    response_id = response_id_for(request_id)
    created_at = int(state.now().timestamp())
    answer = await chat_completions(state, headers, facts, _encoder.encode(chat), request_id)
    if isinstance(answer, Stream):
        return _as_event_stream(answer, request, response_id, created_at)
    body = msgspec.json.decode(answer.content)
    translated = response_from_chat(body, request, response_id, created_at)
    return Response(
        content=_encoder.encode(translated),
        media_type="application/json",
        headers=dict(answer.headers),
    )


def _as_event_stream(chat: Stream, request: ResponsesRequest, response_id: str, created_at: int) -> Stream:
    inner = chat.iterator
    assert isinstance(inner, AsyncIterator), "the chat pipeline streams an async generator"
    translator = ResponsesStreamTranslator(request, response_id, created_at)
    return WatchedStream(
        content=translated_events(inner, translator), media_type="text/event-stream", headers=dict(chat.headers)
    )


async def translated_events(
    inner: AsyncIterator[str | bytes], translator: ResponsesStreamTranslator
) -> AsyncGenerator[bytes, None]:
    """The Responses events of a chat stream; closing it closes ``inner`` (which settles)."""
    try:
        async for data in inner:
            out = translator.feed(data.encode() if isinstance(data, str) else data)
            if out:
                yield b"".join(out)
        yield b"".join(translator.close())
    finally:
        # Closing the chat body runs its finally: the bill is settled there, once, whether the
        # stream ended, failed or the client went away.
        aclose: Any = getattr(inner, "aclose", None)
        if aclose is not None:
            await aclose()

"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API, served by
any configured model through the chat pipeline; a model served only by Anthropic adapters
gets the client's body passed through instead (:mod:`gateway.pipeline.messages_native`).

The request is translated to a chat body (:mod:`providers.dialects.messages`) and run through
:func:`gateway.pipeline.chat.chat_completions` as it is: the same security chain, hold,
dispatch, settlement and usage record. Its answer is translated back: a whole completion into
a Message, a chat stream into Anthropic's events by a wrapper around the chat body iterator
whose closing closes the inner one (whose ``finally`` settles the bill, exactly once).

The key may come as ``x-api-key`` (what the Anthropic SDKs send) or ``Authorization: Bearer``;
on these routes only, ``x-api-key`` is carried into the chain as the bearer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import msgspec
from litestar import Response
from litestar.response import Stream

from billing.shielding import shielded
from billing.tokens import count_chat_tokens, prompt_fields
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.pipeline.chat import chat_completions, count_tokens
from gateway.pipeline.messages_native import native_message, serves_natively
from gateway.pipeline.metered import Admission, find_model
from gateway.pipeline.streaming import WatchedStream
from gateway.state import GatewayState
from keys.chain import RequestFacts, authenticate, authorize_models
from providers.dialects.messages import (
    CountTokensRequest,
    InvalidMessagesRequest,
    MessagesRequest,
    check_version,
    parse_request,
    to_chat_body,
    to_message,
)
from providers.dialects.messages_stream import MessagesStreamTranslator

__all__ = ["count_message_tokens", "create_message", "messages_headers"]

API_KEY_HEADER = "x-api-key"
VERSION_HEADER = "anthropic-version"
_encoder = msgspec.json.Encoder()
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


def messages_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's headers with ``x-api-key`` carried as the bearer the chain reads. When a
    client sends both, ``x-api-key`` wins: it is the Anthropic clients' own carrier."""
    carried = {name.lower(): value for name, value in headers.items()}
    api_key = carried.get(API_KEY_HEADER)
    if api_key:
        carried["authorization"] = f"Bearer {api_key}"
    return carried


def message_id(request_id: str) -> str:
    return "msg_" + _NOT_ID.sub("", request_id)[:64]


async def _refuse(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, request_id: str, error: InvalidMessagesRequest
) -> None:
    """A body that cannot be translated: authenticated first (the chain's order: a bad key is a
    401 before a bad body is a 400), then refused and recorded once, like chat's bad bodies."""
    async with Admission(state, headers, facts, request_id):
        raise InvalidRequest(error.message, param=error.param) from error


def _check_size(state: GatewayState, raw_body: bytes) -> None:
    if len(raw_body) > state.settings.max_chat_body_bytes:
        raise PayloadTooLarge(
            f"a messages request may be at most {state.settings.max_chat_body_bytes} bytes (max_chat_body_bytes)"
        )


async def create_message(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw_body: bytes, request_id: str
) -> Response[bytes] | Stream:
    _check_size(state, raw_body)
    carried = messages_headers(headers)
    try:
        check_version(carried.get(VERSION_HEADER))
        request = parse_request(raw_body, MessagesRequest)
        native = serves_natively(state, request)
        chat_body = {} if native else to_chat_body(request)
    except InvalidMessagesRequest as error:
        await _refuse(state, carried, facts, request_id, error)
        raise AssertionError("unreachable: _refuse always raises") from error
    if native:
        return await native_message(state, carried, facts, raw_body, request_id, request)
    answer = await chat_completions(state, carried, facts, _encoder.encode(chat_body), request_id)
    ident = message_id(request_id)
    if isinstance(answer, Stream):
        return _messages_stream(answer, ident, request.model)
    completion = msgspec.json.decode(answer.content)
    message = to_message(completion, message_id=ident, model=request.model)
    return Response(
        content=_encoder.encode(message),
        status_code=answer.status_code,
        media_type="application/json",
        headers={**answer.headers, "request-id": request_id},
    )


def _messages_stream(inner: Stream, ident: str, model: str) -> Stream:
    translator = MessagesStreamTranslator(message_id=ident, model=model)
    return WatchedStream(
        content=translate_stream(inner.iterator, translator),  # type: ignore[arg-type]
        media_type="text/event-stream",
        headers={**inner.headers, "request-id": ident.removeprefix("msg_")},
    )


async def translate_stream(
    chat: AsyncIterator[bytes], translator: MessagesStreamTranslator
) -> AsyncGenerator[bytes, None]:
    """The chat body's bytes as Anthropic events. The chat stream is read to its end even after
    an error event (its own end settles the call as it happened); however this generator is
    left — finished, closed by a client that hung up, cancelled — the chat iterator is closed
    with it, shielded, so its ``finally`` settles."""
    try:
        async for data in chat:
            out = translator.feed(data)
            if out:
                yield out
        tail = translator.close()
        if tail:
            yield tail
    finally:
        closer = getattr(chat, "aclose", None)
        if closer is not None:
            with shielded():
                await closer()


async def count_message_tokens(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw_body: bytes
) -> Response[bytes]:
    """The prompt's size by the gateway's tokenizer over the translated prompt: authenticated
    and checked against the key's models, neither reserved nor billed nor recorded."""
    _check_size(state, raw_body)
    carried = messages_headers(headers)
    identity = await authenticate(carried.get("authorization"), state.keys, state.now(), facts, state.tokens)
    try:
        check_version(carried.get(VERSION_HEADER))
        request = parse_request(raw_body, CountTokensRequest)
        chat_body = to_chat_body(request)
    except InvalidMessagesRequest as error:
        raise InvalidRequest(error.message, param=error.param) from error
    model = find_model(state, request.model)
    authorize_models(identity, [request.model], model.category)
    messages: list[dict[str, Any]] = chat_body["messages"]
    extra = prompt_fields(chat_body)
    upstream = model.upstream_model
    tokens = await count_tokens(len(raw_body), lambda: count_chat_tokens(messages, upstream, extra=extra))
    return Response(content=_encoder.encode({"input_tokens": tokens}), media_type="application/json")

"""``POST /v1/messages`` passed through to models served by the ``anthropic`` provider kind.

The translated path (:mod:`gateway.pipeline.messages`) runs a Messages request as chat and
loses what chat cannot say (``cache_control``, ``thinking``, ``top_k``, document blocks). For a
request whose models are all served by Anthropic adapters, the client's body goes upstream as
it is instead: only ``model`` (the upstream's name) and ``max_tokens`` (never above what was
reserved) change, and the gateway's own routing fields are dropped. The answer comes back as
the upstream's bytes, with the slug asked for as its ``model`` and ``_tollway`` added on the
message (or the stream's final ``message_delta``). Metered on the same stages as every route:
:class:`Admission` (the chain, the plan, a hold from a prompt bound) and :class:`MeteredCall`.

The client's ``anthropic-beta`` is not forwarded: a beta can change what a call costs (longer
contexts priced higher) or what it returns, beyond what the price list and this meter know.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from litestar import Response
from litestar.response import Stream

from billing.errors import OutOfBudget, RateLimitExceeded
from billing.estimates import OutputRequest, output_cap, tokens_worst_case
from billing.money import format_credits
from billing.tokens import chat_tokens_upper_bound, count_chat_tokens, count_text_tokens, prompt_fields
from gateway.catalog import CatalogModel
from gateway.pipeline.chat import CHECKPOINT_S, count_tokens, decode_object, view_of, with_meta, with_slug
from gateway.pipeline.metered import (
    Admission,
    DeadlineStream,
    MeteredCall,
    StreamEnd,
    billable_usage,
    tollway_meta,
    upstream_body,
)
from gateway.pipeline.splice import member_bytes, with_replaced
from gateway.pipeline.streaming import WatchedStream
from gateway.routing import ProviderPreferences
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.anthropic import AnthropicAdapter
from providers.anthropic.native import NativeEvent, NativeMessage
from providers.base import ProviderHandle, StreamChunk, Usage
from providers.dialects.messages import (
    KNOWN_ERROR_TYPES,
    InvalidMessagesRequest,
    MessagesRequest,
    error_type_for,
    to_chat_body,
)
from providers.errors import ProviderError, UpstreamBadResponse

__all__ = ["native_message", "serves_natively"]

MESSAGES_ROUTE = "/v1/messages"
TEXT = frozenset({"text", "image"})
_encoder = msgspec.json.Encoder()


class NativeView(msgspec.Struct):
    """The routing fields of a Messages body, typed as :class:`Admission` reads them."""

    model: str
    models: list[str] | None = None
    provider: ProviderPreferences | None = None
    user: str | None = None


def _anthropic(handle: ProviderHandle) -> AnthropicAdapter | None:
    adapter = handle.adapter
    return adapter if isinstance(adapter, AnthropicAdapter) else None


def serves_natively(state: GatewayState, request: MessagesRequest) -> bool:
    """Whether every model the request names (fallbacks too) is served only by Anthropic
    adapters; otherwise the translated path serves it (and refuses unknown models)."""
    for slug in [request.model, *(request.models or ())]:
        model = state.catalog.get(slug)
        if model is None or not model.deployments:
            return False
        for deployment in model.deployments:
            handle = state.adapters.get(deployment.provider)
            if handle is None or _anthropic(handle) is None:
                return False
    return True


def _adapter(handle: ProviderHandle) -> AnthropicAdapter:
    adapter = _anthropic(handle)
    if adapter is None:  # the plan only holds Anthropic deployments (serves_natively, _serves)
        raise AssertionError(f"provider {handle.name} is not an Anthropic adapter")
    return adapter


def _serves(handle: ProviderHandle) -> bool:
    return _anthropic(handle) is not None


class NativePrompt:
    """The prompt's size: a bound from the body's bytes first, the exact count (by the gateway's
    tokenizer over the prompt as chat would see it) when the bound does not fit or no usage came.
    A prompt chat cannot express (documents, thinking blocks) is counted at its bound."""

    def __init__(self, raw_size: int, request: MessagesRequest, model: str) -> None:
        self._raw_size = raw_size
        self._model = model
        try:
            chat = to_chat_body(request)
        except InvalidMessagesRequest:
            self._messages: list[dict[str, Any]] | None = None
            self.bound = chat_tokens_upper_bound(raw_size, [], {})
        else:
            self._messages, self._extra = chat["messages"], prompt_fields(chat)
            self.bound = chat_tokens_upper_bound(raw_size, self._messages, self._extra)
        self._exact: int | None = None

    async def exact(self) -> int:
        if self._messages is None:
            return self.bound
        if self._exact is None:
            messages, extra, model = self._messages, self._extra, self._model
            self._exact = await count_tokens(self._raw_size, lambda: count_chat_tokens(messages, model, extra=extra))
        return self._exact


async def _counted(prompt: NativePrompt, text: str, model: str) -> Usage:
    return Usage(
        input_tokens=await prompt.exact(),
        output_tokens=await count_tokens(len(text), lambda: count_text_tokens(text, model)),
    )


async def native_message(
    state: GatewayState,
    headers: Mapping[str, str],
    facts: RequestFacts,
    raw_body: bytes,
    request_id: str,
    request: MessagesRequest,
) -> Response[bytes] | Stream:
    """Admit, send the client's body to the Anthropic upstream, settle; ``request`` is
    ``raw_body`` already checked as a Messages request."""
    async with Admission(state, headers, facts, request_id) as door:
        user = request.metadata.user_id if request.metadata is not None else None
        routing = {"model": request.model, "models": request.models, "provider": request.provider, "user": user}
        view = view_of(routing, NativeView)
        plan = door.plan(view, route=MESSAGES_ROUTE, categories=TEXT, serves=_serves)
        body = decode_object(raw_body)
        prompt = NativePrompt(len(raw_body), request, request.model)
        output = OutputRequest(asked=request.max_tokens, choices=1)
        try:
            admitted = await door.reserve(plan, tokens_worst_case(plan, prompt.bound, output))
        except (OutOfBudget, RateLimitExceeded):
            admitted, _fitted = await door.reserve_output(plan, await prompt.exact(), output)

    def body_for(served: CatalogModel) -> dict[str, Any]:
        # Never more output than was reserved for: the cap only ever goes down.
        forwarded = upstream_body(body, served)
        forwarded["max_tokens"] = output_cap(served, request.max_tokens)
        return forwarded

    if request.stream:
        async with MeteredCall(state, admitted, streamed=True) as call:

            async def open_stream(handle: ProviderHandle, served: CatalogModel, deadline_at: float) -> DeadlineStream:
                upstream = await _adapter(handle).open_message_stream(body_for(served))
                return DeadlineStream(upstream, deadline_at, served.provider)

            stream = await call.dispatch(open_stream)
            response = WatchedStream(
                content=_stream_body(call, stream, prompt),
                media_type="text/event-stream",
                headers={
                    "X-Request-Id": request_id,
                    "request-id": request_id,
                    "X-Tollway-Credits-Reserved": format_credits(admitted.amount_micro),
                    "Cache-Control": "no-cache",
                    **admitted.reservation.rate_headers,
                },
            )
            call.hand_over()
            return response

    async with MeteredCall(state, admitted) as call:

        async def send(handle: ProviderHandle, served: CatalogModel, deadline_at: float) -> NativeMessage:
            return await _adapter(handle).create_message(body_for(served))

        answer = await call.dispatch(send)
        usage, anomaly = await billable_usage(
            answer.usage, lambda: _counted(prompt, answer.text, call.served.upstream_model)
        )
        bill = await call.settle(usage, anomaly=anomaly)
    raw, upstream_model = with_slug(answer.raw, answer.body, call.served.slug)
    meta = tollway_meta(state, admitted.ctx, call.served, usage, bill.cost_micro, upstream_model)
    return Response(
        content=with_meta(raw, answer.body, meta),
        media_type="application/json",
        headers={
            "X-Request-Id": request_id,
            "request-id": request_id,
            "X-Tollway-Credits-Used": format_credits(bill.cost_micro),
            **admitted.reservation.rate_headers,
        },
    )


def _frame(event: str, data: bytes) -> bytes:
    # A payload the upstream split over several data lines holds newlines: one line each again.
    lines = b"data: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"
    return b"event: " + event.encode() + b"\n" + lines if event else lines


class _NativeMeter:
    """What a passed-through stream has reported and produced so far, and its events re-framed
    with the slug on ``message_start`` and ``_tollway`` on the final ``message_delta``."""

    def __init__(self, call: MeteredCall, prompt: NativePrompt) -> None:
        self.call = call
        self.prompt = prompt
        self.upstream_model = ""
        self.started: Usage | None = None  # message_start's usage: the prompt, cache counts included
        self.reported: Usage | None = None  # message_delta's: the whole call's
        self._generated: list[str] = []

    async def billable(self) -> tuple[Usage, str]:
        if self.reported is not None or self.started is None or self.started.malformed:
            return await billable_usage(self.reported, self._count)
        # Broken before message_delta: the prompt as reported, the output as streamed.
        text = "".join(self._generated)
        output = await count_tokens(len(text), lambda: count_text_tokens(text, self.call.served.upstream_model))
        return msgspec.structs.replace(self.started, output_tokens=max(self.started.output_tokens, output)), ""

    async def _count(self) -> Usage:
        return await _counted(self.prompt, "".join(self._generated), self.call.served.upstream_model)

    async def frame(self, chunk: StreamChunk) -> bytes:
        if not isinstance(chunk, NativeEvent):
            raise UpstreamBadResponse(
                "the upstream stream is not a Messages stream", provider=self.call.served.provider
            )
        if chunk.text:
            self._generated.append(chunk.text)
        if chunk.event == "message_start":
            self.started = chunk.usage
            return _frame(chunk.event, self._with_slug(chunk))
        if chunk.event == "message_delta" and chunk.usage is not None:
            self.reported = chunk.usage
            decoded = msgspec.json.decode(chunk.data)
            if isinstance(decoded, dict):
                usage, _anomaly = await self.billable()
                call = self.call
                cost = call.settlement(usage, status_code=200).cost_micro
                meta = tollway_meta(call.state, call.ctx, call.served, usage, cost, self.upstream_model)
                return _frame(chunk.event, with_meta(chunk.data, decoded, meta))
        return _frame(chunk.event, chunk.data)

    def _with_slug(self, chunk: StreamChunk) -> bytes:
        slug, upstream = self.call.served.slug, chunk.model or ""
        self.upstream_model = upstream
        if not upstream or upstream == slug:
            return chunk.data
        replaced = with_replaced(chunk.data, member_bytes("model", upstream), member_bytes("model", slug)[0])
        if replaced is not None:
            return replaced
        decoded = msgspec.json.decode(chunk.data)
        message = decoded.get("message") if isinstance(decoded, dict) else None
        if not isinstance(message, dict):
            return chunk.data
        message["model"] = slug
        return _encoder.encode(decoded)


def _error_frame(failure: ProviderError, meta: dict[str, Any]) -> bytes:
    """The last event of a stream that broke midway: Anthropic's ``error`` event, which the
    Anthropic SDKs raise on, with what the partial answer cost in ``_tollway``."""
    kind = failure.code if failure.code in KNOWN_ERROR_TYPES else error_type_for(failure.status_code)
    message = f"{failure.message} (request id {meta['request_id']})"
    payload = {"type": "error", "error": {"type": kind, "message": message}, "_tollway": meta}
    return _frame("error", _encoder.encode(payload))


async def _stream_body(call: MeteredCall, stream: DeadlineStream, prompt: NativePrompt) -> AsyncIterator[bytes]:
    """The upstream's events as they come, one write per upstream read; settled once, however
    the stream ends (its end, an upstream break, the client hanging up)."""
    meter = _NativeMeter(call, prompt)
    failure: ProviderError | None = None
    checkpointed = time.monotonic()
    async with StreamEnd(call, stream, meter.billable) as end:
        try:
            async for batch in stream.batches():
                out = [await meter.frame(chunk) for chunk in batch]
                if time.monotonic() - checkpointed >= CHECKPOINT_S:
                    # If this process dies mid-stream, the reservation's expiry bills this much.
                    checkpointed = time.monotonic()
                    await call.checkpoint((await meter.billable())[0])
                yield b"".join(out)
        except ProviderError as error:
            failure = error
            end.failed(error)
        usage, bill = await end.settle()
        if failure is not None:
            meta = tollway_meta(call.state, call.ctx, call.served, usage, bill.cost_micro, meter.upstream_model)
            yield _error_frame(failure, meta)

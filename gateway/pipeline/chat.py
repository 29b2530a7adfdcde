"""``POST /v1/chat/completions`` (and the legacy ``/v1/completions`` stream): parse → admit →
dispatch → settle, on the shared stages of :mod:`gateway.pipeline.metered`.

Streams are forwarded chunk by chunk as they arrive; the gateway settles before ``[DONE]`` so a
client that saw the end of the stream sees its debit too, and in ``finally`` for every other
way out (upstream error, deadline, client disconnect).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, TypeVar

import anyio
import msgspec
from litestar import Response
from litestar.response import Stream

from billing.errors import OutOfBudget
from billing.money import format_credits
from billing.pricing import ModelPrice
from billing.tokens import count_chat_tokens, count_text_tokens
from gateway.catalog import CatalogModel
from gateway.errors import InvalidJSON, InvalidRequest, validation_param
from gateway.pipeline.metered import (
    Admitted,
    CallContext,
    DeadlineStream,
    Estimate,
    admit,
    dispatch,
    new_request_id,
    settle,
    settlement_for,
    tollway_meta,
    upstream_body,
)
from gateway.routing import ProviderPreferences
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import ChatCall, ChatResult, ChatStream, Usage
from providers.errors import ProviderError

__all__ = ["ChatBodyView", "chat_completions", "new_request_id", "stream_response"]

T = TypeVar("T")
CHECKPOINT_S = 1.0  # how often a stream records what it has cost so far
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
TEXT = frozenset({"text"})


class ChatBodyView(msgspec.Struct):
    """The fields of a chat request the gateway reads; everything else passes through."""

    model: str
    messages: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1)]
    stream: bool = False
    models: list[str] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    tools: list[dict[str, Any]] | None = None
    user: str | None = None
    provider: ProviderPreferences | None = None


_encoder = msgspec.json.Encoder()


def decode_object(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise InvalidJSON(f"request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def view_of(body: dict[str, Any], view_type: type[T]) -> T:
    try:
        return msgspec.convert(body, view_type)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"invalid request: {error}", param=validation_param(str(error))) from error


def parse_chat_body(raw: bytes) -> tuple[dict[str, Any], ChatBodyView]:
    body = decode_object(raw)
    return body, view_of(body, ChatBodyView)


def output_estimate(plan: list[CatalogModel], asked: int | None, input_tokens: int) -> Estimate:
    """Any deployment of the plan may end up serving, so the hold covers the dearest of them."""
    most_output, amount = 0, 0
    for served in plan:
        assert served.price is not None
        max_output = min(asked or served.max_output_tokens, served.max_output_tokens)
        most_output = max(most_output, max_output)
        amount = max(amount, served.price.worst_case_micro(input_tokens, max_output))
    return Estimate(tokens=input_tokens + most_output, amount_micro=amount)


def _completion_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
        elif isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)


def _serves_chat(adapter: object) -> bool:
    return hasattr(adapter, "complete") and hasattr(adapter, "open_stream")


async def chat_completions(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw_body: bytes, request_id: str
) -> Response[bytes] | Stream:
    holder: dict[str, Any] = {}
    input_tokens = 0

    def parse() -> ChatBodyView:
        body, view = parse_chat_body(raw_body)
        holder["body"] = body
        return view

    def estimate(view: ChatBodyView, plan: list[CatalogModel]) -> Estimate:
        nonlocal input_tokens
        input_tokens = count_chat_tokens(view.messages, plan[0].upstream_model, view.tools)
        return output_estimate(plan, view.max_completion_tokens or view.max_tokens, input_tokens)

    def shrink(view: ChatBodyView, plan: list[CatalogModel], refusal: OutOfBudget) -> Estimate | None:
        """PRODUCT.md: without max_tokens, lower it to what is affordable; with it, say what would fit."""
        affordable = min(
            min(
                served.max_output_tokens, _price(served).affordable_output_tokens(input_tokens, refusal.available_micro)
            )
            for served in plan
        )
        if view.max_completion_tokens or view.max_tokens:
            hint = f"; the largest max_tokens that fits is {affordable}" if affordable >= 1 else ""
            raise type(refusal)(refusal.message + hint, available_micro=refusal.available_micro) from refusal
        if affordable < 1:
            return None
        holder["max_tokens"] = affordable
        return output_estimate(plan, affordable, input_tokens)

    admitted, view = await admit(
        state,
        headers,
        facts,
        request_id,
        parse=parse,
        categories=TEXT | {"image"},
        route="/v1/chat/completions",
        estimate=estimate,
        serves=_serves_chat,
        shrink=shrink,
    )
    body: dict[str, Any] = holder["body"]
    clamp: int | None = holder.get("max_tokens")
    extra_headers = {"X-Tollway-Max-Tokens": str(clamp)} if clamp else {}

    def call_for(served: CatalogModel) -> ChatCall:
        forwarded = upstream_body(body, served)
        if clamp:
            # OpenAI's own API (and Azure) want max_completion_tokens; other servers know max_tokens.
            kind = state.settings.providers[served.provider].kind if served.provider in state.settings.providers else ""
            forwarded["max_completion_tokens" if kind in ("openai", "azure") else "max_tokens"] = clamp
        return ChatCall(body=forwarded, upstream_model=served.upstream_model)

    if view.stream:

        async def open_stream(adapter: Any, served: CatalogModel, deadline_at: float) -> DeadlineStream:
            return DeadlineStream(await adapter.open_stream(call_for(served)), deadline_at, served.provider)

        served, stream = await dispatch(state, admitted, open_stream, streamed=True)
        streaming = stream_response(state, admitted, served, stream, input_tokens, "chat.completion.chunk")
        streaming.headers.update(extra_headers)
        return streaming

    async def complete(adapter: Any, served: CatalogModel, deadline_at: float) -> ChatResult:
        result: ChatResult = await adapter.complete(call_for(served))
        return result

    served, result = await dispatch(state, admitted, complete)
    usage = result.usage or Usage(
        input_tokens=input_tokens,
        output_tokens=count_text_tokens(_completion_text(result.body), served.upstream_model),
    )
    cost = await settle(state, admitted, served, usage, status_code=200)
    result.body["_tollway"] = tollway_meta(state, admitted.ctx, served, usage, cost)
    return Response(
        content=_encoder.encode(result.body),
        media_type="application/json",
        headers={"X-Request-Id": request_id, "X-Tollway-Credits-Used": format_credits(cost), **extra_headers},
    )


def _price(served: CatalogModel) -> ModelPrice:
    assert served.price is not None
    return served.price


def stream_response(
    state: GatewayState,
    admitted: Admitted,
    served: CatalogModel,
    stream: ChatStream,
    input_tokens: int,
    object_name: str,
) -> Stream:
    return Stream(
        content=_stream_body(state, admitted, served, stream, input_tokens, object_name),
        media_type="text/event-stream",
        headers={
            "X-Request-Id": admitted.ctx.request_id,
            "X-Tollway-Credits-Reserved": format_credits(admitted.amount_micro),
            "Cache-Control": "no-cache",
        },
    )


def _sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _error_chunk(error: ProviderError, request_id: str, served: CatalogModel, object_name: str) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "error"}
    if object_name == "text_completion":
        choice["text"] = ""
    else:
        choice["delta"] = {}
    return _encoder.encode(
        {
            "id": request_id,
            "object": object_name,
            "created": int(time.time()),
            "model": served.slug,
            "choices": [choice],
            # Not a top-level "error" key: the OpenAI SDKs raise on that and the caller would
            # never see the finish_reason PRODUCT.md promises; the details ride in _tollway.
            "_tollway": {
                "request_id": request_id,
                "error": {"message": error.message, "type": error.type, "code": error.code},
            },
        }
    )


async def _stream_body(
    state: GatewayState,
    admitted: Admitted,
    served: CatalogModel,
    stream: ChatStream,
    input_tokens: int,
    object_name: str,
) -> AsyncIterator[bytes]:
    ctx = admitted.ctx
    generated: list[str] = []
    usage: Usage | None = None
    status, error_code, cancelled, settled = 200, "", False, False
    checkpointed = time.monotonic()
    try:
        try:
            async for chunk in stream:
                if chunk.text:
                    generated.append(chunk.text)
                if time.monotonic() - checkpointed >= CHECKPOINT_S:
                    # If this process dies mid-stream, the reservation's expiry bills this much.
                    checkpointed = time.monotonic()
                    so_far = _estimated_usage(input_tokens, generated, served)
                    await state.meter.checkpoint(
                        admitted.reservation,
                        settlement_for(
                            admitted,
                            served,
                            so_far,
                            status_code=499,
                            error_code="interrupted",
                            streamed=True,
                            cancelled=True,
                        ),
                    )
                if chunk.usage is None:
                    yield _sse(chunk.data)
                    continue
                usage = chunk.usage
                yield _sse(_with_meta(chunk.data, state, ctx, served, usage))
        except ProviderError as error:
            status, error_code = error.status_code, error.code
            yield _sse(_error_chunk(error, ctx.request_id, served, object_name))
        await stream.aclose()
        if usage is None:
            usage = _estimated_usage(input_tokens, generated, served)
            yield _sse(_usage_chunk(state, ctx, served, usage, object_name))
        settled = True
        await settle(state, admitted, served, usage, status_code=status, error_code=error_code, streamed=True)
        yield b"data: [DONE]\n\n"
    except GeneratorExit:
        cancelled = True
        raise
    except BaseException as error:
        if isinstance(error, anyio.get_cancelled_exc_class()):
            cancelled = True
        else:
            status, error_code = 500, "internal_error"
        raise
    finally:
        if not settled:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                await settle(
                    state,
                    admitted,
                    served,
                    usage or _estimated_usage(input_tokens, generated, served),
                    status_code=499 if cancelled else status,
                    error_code="client_disconnected" if cancelled else error_code,
                    streamed=True,
                    cancelled=cancelled,
                )


def _estimated_usage(input_tokens: int, generated: list[str], served: CatalogModel) -> Usage:
    """When usage never came: our prompt estimate and tiktoken over what was streamed."""
    return Usage(input_tokens=input_tokens, output_tokens=count_text_tokens("".join(generated), served.upstream_model))


def _with_meta(data: bytes, state: GatewayState, ctx: CallContext, served: CatalogModel, usage: Usage) -> bytes:
    chunk = msgspec.json.decode(data)
    assert served.price is not None
    chunk["_tollway"] = tollway_meta(state, ctx, served, usage, served.price.cost_micro(usage))
    return _encoder.encode(chunk)


def _usage_chunk(state: GatewayState, ctx: CallContext, served: CatalogModel, usage: Usage, object_name: str) -> bytes:
    assert served.price is not None
    return _encoder.encode(
        {
            "id": ctx.request_id,
            "object": object_name,
            "created": int(time.time()),
            "model": served.slug,
            "choices": [],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
            "_tollway": tollway_meta(state, ctx, served, usage, served.price.cost_micro(usage)),
        }
    )

"""``POST /v1/chat/completions`` (and the legacy ``/v1/completions`` stream): parse → admit →
dispatch → settle, on the shared stages of :mod:`gateway.pipeline.metered`.

Streams are forwarded chunk by chunk as they arrive; the gateway settles before ``[DONE]`` so a
client that saw the end of the stream sees its debit too, and in ``finally`` for every other
way out (upstream error, deadline, client disconnect).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar

import anyio
import msgspec
from litestar import Response
from litestar.response import Stream

from billing.errors import OutOfBudget, RateLimitExceeded
from billing.estimates import OutputRequest, output_cap, tokens_worst_case
from billing.money import format_credits
from billing.tokens import chat_tokens_upper_bound, count_chat_tokens, count_text_tokens, encoding_loaded, prompt_fields
from gateway.catalog import CatalogModel
from gateway.errors import InvalidJSON, InvalidRequest, PayloadTooLarge, validation_param
from gateway.pipeline.cached import ResponseCache
from gateway.pipeline.metered import (
    Admission,
    CallContext,
    DeadlineStream,
    MeteredCall,
    StreamEnd,
    billable_usage,
    stream_batches,
    tollway_meta,
    upstream_body,
)
from gateway.pipeline.splice import member_bytes, with_member, with_replaced
from gateway.pipeline.streaming import WatchedStream
from gateway.routing import ProviderPreferences
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import Capability, ChatCall, ChatResult, ChatStream, ProviderHandle, StreamChunk, Usage
from providers.errors import ProviderError

__all__ = ["ChatBodyView", "chat_completions", "stream_response"]

T = TypeVar("T")
CHECKPOINT_S = 1.0  # how often a stream records what it has cost so far
TEXT = frozenset({"text"})
CHAT_ROUTE = "/v1/chat/completions"


# Output caps beyond any model's, so an absurd value is a clear 400 and never a number that
# overflows a counter downstream.
MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Choices = Annotated[int, msgspec.Meta(ge=1, le=128)]
# Above this many bytes of prompt, exact counting runs in a worker thread, off the event loop.
TOKENISE_INLINE_BYTES = 64 * 1024


class ChatMessageView(msgspec.Struct):
    """A message's fields the gateway counts, typed so a malformed one is a 400 here rather than
    a surprise later; the message itself goes upstream as the client sent it."""

    role: str
    content: Any = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptionsView(msgspec.Struct):
    """``stream_options``: whether the client wants the final usage-only chunk."""

    include_usage: bool | None = None


class ChatBodyView(msgspec.Struct):
    """The fields of a chat request the gateway reads; everything else passes through."""

    model: str
    messages: Annotated[list[ChatMessageView], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptionsView | None = None
    models: list[str] | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    n: Choices = 1
    user: str | None = None
    provider: ProviderPreferences | None = None


_encoder = msgspec.json.Encoder()


def decode_object(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise InvalidJSON(f"request body is not valid JSON: {error}") from error
    except RecursionError as error:
        raise InvalidJSON("request body is nested too deeply") from error
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


def _serves_chat(adapter: ProviderHandle) -> bool:
    return adapter.offers(Capability.CHAT)


async def count_tokens(text_bytes: int, count: Callable[[], int]) -> int:
    """Run a tiktoken count inline when it is small, in a worker thread when it is not: one
    9 MB prompt must not stall every other request of the process. Encodings load with the
    first count (billing/tokens.py), a few hundred ms: until they have, counts run in a thread."""
    if text_bytes <= TOKENISE_INLINE_BYTES and encoding_loaded():
        return count()
    return await anyio.to_thread.run_sync(count)


class ChatPrompt:
    """A chat request's prompt size: a cheap upper bound first, the exact count only when the
    bound does not fit (or when the upstream reported no usage and the prompt must be billed)."""

    def __init__(self, raw_size: int, body: dict[str, Any], view: ChatBodyView, model: str) -> None:
        self._raw_size = raw_size
        self._messages: list[dict[str, Any]] = body["messages"]  # as sent; the view checked them
        self._extra = prompt_fields(body)
        self._model = model
        self.bound = chat_tokens_upper_bound(raw_size, self._messages, self._extra)
        self._exact: int | None = None

    async def exact(self) -> int:
        if self._exact is None:
            self._exact = await count_tokens(
                self._raw_size, lambda: count_chat_tokens(self._messages, self._model, extra=self._extra)
            )
        return self._exact


async def chat_completions(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw_body: bytes, request_id: str
) -> Response[bytes] | Stream:
    if len(raw_body) > state.settings.max_chat_body_bytes:
        raise PayloadTooLarge(
            f"a chat request may be at most {state.settings.max_chat_body_bytes} bytes (max_chat_body_bytes)"
        )
    async with Admission(state, headers, facts, request_id) as door:
        body, view = parse_chat_body(raw_body)
        plan = door.plan(view, route=CHAT_ROUTE, categories=TEXT | {"image"}, serves=_serves_chat)
        cache = await ResponseCache.look_up(state, door.ctx, headers, body, len(raw_body))
        if cache.hit is not None:
            return await cache.replay(door, plan, include_usage=wants_usage(view.stream_options))
        prompt = ChatPrompt(len(raw_body), body, view, view.model)
        output = OutputRequest(asked=view.max_completion_tokens or view.max_tokens, choices=view.n)
        try:
            admitted, fitted = await door.reserve(plan, tokens_worst_case(plan, prompt.bound, output)), None
        except (OutOfBudget, RateLimitExceeded):
            # The bound did not fit: count the prompt exactly, then fit the output if allowed.
            admitted, fitted = await door.reserve_output(plan, await prompt.exact(), output)
    asked = fitted or output.asked
    extra_headers = {"X-Tollway-Max-Tokens": str(fitted)} if fitted else {}
    extra_headers.update(cache.headers)

    def call_for(served: CatalogModel) -> ChatCall:
        # The upstream is never allowed more output than was reserved: the cap always goes up,
        # in the field the provider kind reads.
        forwarded = upstream_body(body, served)
        forwarded.pop("max_tokens", None)
        forwarded.pop("max_completion_tokens", None)
        forwarded[state.output_cap_field(served.provider)] = output_cap(served, asked)
        return ChatCall(body=forwarded, upstream_model=served.upstream_model)

    if view.stream:
        async with MeteredCall(state, admitted, streamed=True) as call:

            async def open_stream(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> DeadlineStream:
                return DeadlineStream(await adapter.chat.open_stream(call_for(served)), deadline_at, served.provider)

            stream: ChatStream = await call.dispatch(open_stream)
            stream = cache.recording(stream, call.served, prompt.exact, fitted)
            streaming = stream_response(
                call, stream, prompt.exact, "chat.completion.chunk", include_usage=wants_usage(view.stream_options)
            )
            streaming.headers.update(extra_headers)
            call.hand_over()
            return streaming

    async with MeteredCall(state, admitted) as call:

        async def complete(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> ChatResult:
            result: ChatResult = await adapter.chat.complete(call_for(served))
            return result

        result = await call.dispatch(complete)

        async def counted() -> Usage:
            text = _completion_text(result.body)
            model = call.served.upstream_model
            return Usage(
                input_tokens=await prompt.exact(),
                output_tokens=await count_tokens(len(text), lambda: count_text_tokens(text, model)),
            )

        usage, anomaly = await billable_usage(result.usage, counted)
        bill = await call.settle(usage, anomaly=anomaly)
        await cache.keep(result, usage, call.served, fitted)
    raw, upstream_model = with_slug(result.raw, result.body, call.served.slug)
    meta = tollway_meta(state, admitted.ctx, call.served, usage, bill.cost_micro, upstream_model)
    return Response(
        content=with_meta(raw, result.body, meta),
        media_type="application/json",
        headers={
            "X-Request-Id": request_id,
            "X-Tollway-Credits-Used": format_credits(bill.cost_micro),
            **admitted.reservation.rate_headers,
            **extra_headers,
        },
    )


def wants_usage(options: StreamOptionsView | None) -> bool:
    return options is not None and bool(options.include_usage)


def with_slug(raw: bytes | None, body: dict[str, Any], slug: str) -> tuple[bytes | None, str]:
    """A JSON answer naming ``slug`` as its model (``body`` changed, ``raw`` replaced in its
    bytes, or ``None`` when that cannot be done safely: the caller re-encodes ``body``), and the
    upstream's own model name ("" when it gave none)."""
    upstream = body.get("model")
    if not isinstance(upstream, str):
        return raw, ""
    body["model"] = slug
    if raw is None or upstream == slug:
        return raw, upstream
    return with_replaced(raw, member_bytes("model", upstream), member_bytes("model", slug)[0]), upstream


def stream_response(
    call: MeteredCall,
    stream: ChatStream,
    prompt_tokens: Callable[[], Awaitable[int]],
    object_name: str,
    *,
    include_usage: bool = False,
) -> Stream:
    """The client's stream; its body owns the hold from here (the caller hands it over).
    ``include_usage``: the client asked for the usage-only final chunk (``stream_options``)."""
    admitted = call.admitted
    return WatchedStream(
        content=_stream_body(call, stream, prompt_tokens, object_name, include_usage),
        media_type="text/event-stream",
        headers={
            "X-Request-Id": admitted.ctx.request_id,
            "X-Tollway-Credits-Reserved": format_credits(admitted.amount_micro),
            "Cache-Control": "no-cache",
            **admitted.reservation.rate_headers,
        },
    )


def _sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _error_event(error: ProviderError, meta: dict[str, Any]) -> bytes:
    """The last event of a stream that broke midway, in OpenAI's shape: a ``data`` object whose
    top-level ``error`` makes the OpenAI SDKs raise ``APIError`` instead of returning the half
    answer as a success. The request id is in the message (where a caller holding only the
    exception finds it) and in ``_tollway`` with what the partial answer cost."""
    return _encoder.encode(
        {
            "error": {
                "message": f"{error.message} (request id {meta['request_id']})",
                "type": error.type,
                "code": error.code,
                "param": error.param,
            },
            "_tollway": meta,
        }
    )


class _Slugs:
    """Puts the slug the client asked for in each chunk's ``model``, replacing the upstream's
    name in the chunk's bytes (one search, no re-encoding); a chunk written another way is
    re-encoded. Remembers the upstream's own name for ``_tollway.upstream_model``. ``swap`` is
    a plain method, called bound: an instance's ``__call__`` costs a slot lookup per chunk."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self.upstream = ""
        self._old: tuple[bytes, ...] = ()
        self._new = member_bytes("model", slug)[0]

    def swap(self, chunk: StreamChunk) -> bytes:
        model = chunk.model
        if model is None:
            return chunk.data
        if model != self.upstream:
            self.upstream, self._old = model, member_bytes("model", model)
        if model == self.slug:
            return chunk.data
        replaced = with_replaced(chunk.data, self._old, self._new)
        if replaced is not None:
            return replaced
        decoded = msgspec.json.decode(chunk.data)
        if not isinstance(decoded, dict):
            return chunk.data
        decoded["model"] = self.slug
        return _encoder.encode(decoded)


class _StreamMeter:
    """What a stream has produced so far, for the bill and for the checkpoints."""

    def __init__(self, call: MeteredCall, prompt_tokens: Callable[[], Awaitable[int]]) -> None:
        self.call = call
        self.generated: list[str] = []  # appended to per chunk by the body, joined only to count
        self.reported: Usage | None = None
        self._prompt_tokens = prompt_tokens

    async def counted(self) -> Usage:
        """When usage never came (or could not be believed): the prompt and what was streamed."""
        text = "".join(self.generated)
        model = self.call.served.upstream_model
        return Usage(
            input_tokens=await self._prompt_tokens(),
            output_tokens=await count_tokens(len(text), lambda: count_text_tokens(text, model)),
        )

    async def billable(self) -> tuple[Usage, str]:
        return await billable_usage(self.reported, self.counted)


async def _stream_body(
    call: MeteredCall,
    stream: ChatStream,
    prompt_tokens: Callable[[], Awaitable[int]],
    object_name: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    state, ctx, served = call.state, call.ctx, call.served
    meter = _StreamMeter(call, prompt_tokens)
    slugs = _Slugs(served.slug)
    swap, generated = slugs.swap, meter.generated
    # Without include_usage the cost rides on the last chunk that ends a choice: each such chunk
    # is held until the next one (or the end); the upstream's usage usually follows it in the
    # same read, so the hold costs no latency.
    held: bytes | None = None
    failure: ProviderError | None = None
    checkpointed = time.monotonic()
    async with StreamEnd(call, stream, meter.billable) as end:
        try:
            # What one upstream read brought goes out as one write, the chunks' bytes untouched
            # but for the model's name.
            async for batch in stream_batches(stream):
                out: list[bytes] = []
                for chunk in batch:
                    if chunk.text:
                        generated.append(chunk.text)
                    data = swap(chunk)
                    if chunk.usage is None:
                        if chunk.finished and not include_usage:
                            if held is not None:
                                out += (b"data: ", held, b"\n\n")
                            held = data
                        else:
                            out += (b"data: ", data, b"\n\n")
                        continue
                    meter.reported = chunk.usage
                    decoded = msgspec.json.decode(data)
                    if not include_usage and isinstance(decoded, dict) and not decoded.get("choices"):
                        continue  # the usage-only chunk the client did not ask for
                    usage, _anomaly = await meter.billable()
                    meta = tollway_meta(state, ctx, served, usage, call.settlement(usage, status_code=200).cost_micro)
                    meta["upstream_model"] = slugs.upstream or served.upstream_model
                    out.append(_sse(with_meta(data, decoded, meta) if isinstance(decoded, dict) else data))
                if time.monotonic() - checkpointed >= CHECKPOINT_S:
                    # If this process dies mid-stream, the reservation's expiry bills this much.
                    checkpointed = time.monotonic()
                    await call.checkpoint((await meter.billable())[0])
                if out:
                    yield b"".join(out)
        except ProviderError as error:
            failure = error
            end.failed(error)
        usage, bill = await end.settle()
        meta = tollway_meta(state, ctx, served, usage, bill.cost_micro, slugs.upstream)
        tail: list[bytes] = []
        if held is not None:
            tail.append(_sse(held if failure is not None else _with_meta(held, meta)))
        if failure is not None:
            tail.append(_sse(_error_event(failure, meta)))  # and no [DONE]: the answer is not whole
        else:
            if include_usage and meter.reported is None:
                tail.append(_sse(_usage_chunk(ctx, served, usage, meta, object_name)))
            tail.append(b"data: [DONE]\n\n")
        yield b"".join(tail)


def with_meta(raw: bytes | None, body: dict[str, Any], meta: dict[str, Any]) -> bytes:
    """The upstream's answer with ``_tollway`` added: spliced into its own bytes when it can be
    (no second serialisation of the whole answer), else re-encoded."""
    if raw is not None:
        spliced = with_member(raw, body, "_tollway", _encoder.encode(meta))
        if spliced is not None:
            return spliced
    body["_tollway"] = meta
    return _encoder.encode(body)


def _with_meta(data: bytes, meta: dict[str, Any]) -> bytes:
    chunk = msgspec.json.decode(data)
    if not isinstance(chunk, dict):
        return data
    return with_meta(data, chunk, meta)


def _usage_chunk(ctx: CallContext, served: CatalogModel, usage: Usage, meta: dict[str, Any], object_name: str) -> bytes:
    """The usage-only chunk a client asked for when the upstream sent none: the gateway's count."""
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
            "_tollway": meta,
        }
    )

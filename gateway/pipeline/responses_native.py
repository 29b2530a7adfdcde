"""``POST /v1/responses`` passed through to a provider that serves the Responses API itself
(``responses_api = true``: api.openai.com, Azure's v1 API), instead of being translated to chat.

The client's body goes upstream as it was sent but for the model (the upstream's name), the
output cap (never above what was reserved) and ``store`` (always false: the gateway is
stateless, and nothing a tenant sends may be kept under the operator's key). It is metered on
the stages every route uses: the reservation is bounded from the body's bytes, the bill is the
usage the answer (or the stream's final event) reports, else the gateway's own count.

A stream's events are forwarded as the upstream sent them, but for the model's name; the final
event (``response.completed``, ``.incomplete`` or ``.failed``) is held until the bill is
settled and goes out with ``_tollway`` in its ``response``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

import msgspec
from litestar import Response
from litestar.response import Stream

from billing.errors import OutOfBudget, RateLimitExceeded
from billing.estimates import OutputRequest, output_cap, tokens_worst_case
from billing.money import format_credits
from billing.tokens import IMAGE_UNKNOWN_SIZE, REPLY_PRIMING, TOKENS_PER_MESSAGE, TOKENS_PER_TOOL, count_text_tokens
from gateway.catalog import CatalogModel
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline.chat import count_tokens, view_of
from gateway.pipeline.common import Lazy, RoutedView, bill_json, decode_reply
from gateway.pipeline.metered import (
    Admission,
    Admitted,
    DeadlineStream,
    MeteredCall,
    StreamEnd,
    billable_usage,
    requested_models,
    stream_batches,
    tollway_meta,
    upstream_body,
)
from gateway.pipeline.splice import member_bytes, with_replaced
from gateway.pipeline.streaming import WatchedStream
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import Capability, ChatStream, ProviderHandle, StreamChunk, UpstreamReply, Usage
from providers.errors import ProviderError, UpstreamBadResponse

__all__ = ["goes_native", "native_response", "responses_usage"]

ROUTE = "/v1/responses"
UPSTREAM_ROUTE = "/responses"
TEXT = frozenset({"text", "image"})
CHECKPOINT_S = 1.0
MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
# Tools the upstream runs itself are billed per call, at prices the gateway does not hold.
CLIENT_TOOLS = frozenset({"function", "custom"})
# State kept upstream (and the tokens it would add, unseen by the reservation).
STATEFUL = ("previous_response_id", "conversation", "prompt")
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
MODEL_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})
TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
    }
)
# Parts whose bytes are not their tokens: an image is billed at its largest size.
_MEDIA_KEYS = frozenset({"image_url", "file_data"})

_encoder = msgspec.json.Encoder()


class NativeView(RoutedView, kw_only=True):
    """The fields of a Responses request the gateway reads; the rest goes upstream unread."""

    input: str | Annotated[list[Any], msgspec.Meta(min_length=1)]
    instructions: str | list[Any] | None = None  # a string, or input items (as input is)
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    max_output_tokens: MaxTokens | None = None
    background: bool | None = None
    previous_response_id: Any = None
    conversation: Any = None
    prompt: Any = None


class _UsageDetails(msgspec.Struct):
    cached_tokens: Any = None


class _UsageView(msgspec.Struct):
    input_tokens: Any = None
    output_tokens: Any = None
    input_tokens_details: _UsageDetails | None = None


class _ResponseView(msgspec.Struct):
    model: Any = None
    usage: _UsageView | None = None


class EventView(msgspec.Struct):
    """What the gateway reads of one stream event: its type, text and (final) usage."""

    type: str = ""
    delta: Any = None
    sequence_number: Any = None
    response: _ResponseView | None = None


_event_decoder = msgspec.json.Decoder(EventView)


def serves_natively(state: GatewayState, provider: str) -> bool:
    configured = state.settings.providers.get(provider)
    adapter = state.adapters.get(provider)
    return (
        configured is not None and configured.responses_api and adapter is not None and adapter.offers(Capability.JSON)
    )


def goes_native(state: GatewayState, body: dict[str, Any]) -> bool:
    """Whether the deployment routing would choose first serves the Responses API itself. A
    body this cannot tell for goes the translated way, which refuses it with the right error."""
    try:
        view = msgspec.convert(body, RoutedView)
        primary = state.catalog.get(view.model)
        if primary is None:
            return False
        plan = state.router.plan(requested_models(state, view, primary), view.provider)
    except (msgspec.ValidationError, GatewayError):
        return False
    return bool(plan) and serves_natively(state, plan[0].provider)


def responses_usage(usage: object) -> Usage | None:
    """A Responses ``usage`` object: ``None`` when absent, malformed when it cannot be believed."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        return Usage(malformed=True)
    details = usage.get("input_tokens_details")
    if details is not None and not isinstance(details, dict):
        return Usage(malformed=True)
    return Usage.reported(usage.get("input_tokens"), usage.get("output_tokens"), (details or {}).get("cached_tokens"))


def _view_usage(view: _UsageView | None) -> Usage | None:
    if view is None:
        return None
    cached = view.input_tokens_details.cached_tokens if view.input_tokens_details is not None else 0
    return Usage.reported(view.input_tokens, view.output_tokens, cached)


def _check(view: NativeView) -> None:
    for field in STATEFUL:
        if getattr(view, field) is not None:
            raise InvalidRequest(f"{field} needs state kept upstream; the gateway is stateless", param=field)
    if view.background:
        raise InvalidRequest("background responses need state kept upstream", param="background")
    for index, tool in enumerate(view.tools or ()):
        if tool.get("type") not in CLIENT_TOOLS:
            raise InvalidRequest(
                f"tool type {tool.get('type')!r} is not supported: only function and custom tools are",
                param=f"tools[{index}].type",
            )


def _walk(value: Any, texts: list[str]) -> int:
    """The strings of an input (appended to ``texts``); returns how many media parts it holds.
    A loop, not recursion: a body nested as deep as the JSON decoder allows must not overflow."""
    media, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, dict):
            for key, member in reversed(item.items()):
                if key in _MEDIA_KEYS:
                    media += 1
                elif key != "type":
                    pending.append(member)
    return media


class NativePrompt:
    """The prompt's bound from its bytes (every token is at least one), and its count (for a
    bound that does not fit, or a bill the upstream reported no usage for)."""

    def __init__(self, raw_size: int, view: NativeView, model: str) -> None:
        self._texts: list[str] = []
        media = _walk(view.input, self._texts) + _walk(view.instructions, self._texts)
        if view.tools:
            self._texts.append(_encoder.encode(view.tools).decode())
        self._items = len(view.input) if isinstance(view.input, list) else 1
        self._raw_size = raw_size
        self._media = media
        self.bound = (
            raw_size
            + REPLY_PRIMING
            + TOKENS_PER_MESSAGE * (self._items + 1)
            + TOKENS_PER_TOOL * len(view.tools or ())
            + IMAGE_UNKNOWN_SIZE * media
        )
        self.exact = Lazy(self._count)
        self._model = model

    async def _count(self) -> int:
        text = "\n".join(self._texts)
        tokens = await count_tokens(self._raw_size, lambda: count_text_tokens(text, self._model))
        return tokens + REPLY_PRIMING + TOKENS_PER_MESSAGE * (self._items + 1) + IMAGE_UNKNOWN_SIZE * self._media


def _output_text(answer: dict[str, Any]) -> str:
    """The generated text of a Responses answer (messages, refusals, tool calls, summaries)."""
    parts: list[str] = []
    for item in answer.get("output") or ():
        if not isinstance(item, dict):
            continue
        for key in ("name", "arguments", "input"):
            if isinstance(item.get(key), str):
                parts.append(item[key])
        for part in [*(item.get("content") or ()), *(item.get("summary") or ())]:
            if isinstance(part, dict):
                parts.extend(part[k] for k in ("text", "refusal") if isinstance(part.get(k), str))
    return "".join(parts)


async def _admit(
    door: Admission, raw: bytes, body: dict[str, Any]
) -> tuple[NativeView, NativePrompt, Admitted, int | None]:
    """Parse, plan (the deployments that serve the API themselves) and reserve; the output
    fitted to the balance when the client set no cap and the whole of it does not fit."""
    state = door.state
    view = view_of(body, NativeView)
    _check(view)
    plan = door.plan(view, route=ROUTE, categories=TEXT, serves=lambda _adapter: True)
    plan = [served for served in plan if serves_natively(state, served.provider)]
    if not plan:
        raise InvalidRequest(f"the provider of model {view.model!r} does not serve {ROUTE}", param="model")
    prompt = NativePrompt(len(raw), view, plan[0].upstream_model)
    output = OutputRequest(asked=view.max_output_tokens, choices=1)
    try:
        return view, prompt, await door.reserve(plan, tokens_worst_case(plan, prompt.bound, output)), None
    except (OutOfBudget, RateLimitExceeded):
        admitted, fitted = await door.reserve_output(plan, await prompt.exact(), output)
        return view, prompt, admitted, fitted


async def native_response(
    state: GatewayState,
    headers: Mapping[str, str],
    facts: RequestFacts,
    raw: bytes,
    body: dict[str, Any],
    request_id: str,
) -> Response[bytes] | Stream:
    async with Admission(state, headers, facts, request_id) as door:
        view, prompt, admitted, fitted = await _admit(door, raw, body)
    asked = fitted or view.max_output_tokens
    extra = {"X-Tollway-Max-Tokens": str(fitted)} if fitted else {}

    def forwarded(served: CatalogModel) -> dict[str, Any]:
        sent = upstream_body(body, served)
        sent["max_output_tokens"] = output_cap(served, asked)
        sent["store"] = False
        return sent

    if view.stream:
        async with MeteredCall(state, admitted, streamed=True) as call:

            async def open_stream(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> DeadlineStream:
                stream = await adapter.json.open_json_stream(UPSTREAM_ROUTE, served.upstream_model, forwarded(served))
                return DeadlineStream(stream, deadline_at, served.provider)

            stream = await call.dispatch(open_stream)
            streaming = WatchedStream(
                content=_events(call, stream, prompt.exact),
                media_type="text/event-stream",
                headers={
                    "X-Request-Id": request_id,
                    "X-Tollway-Credits-Reserved": format_credits(admitted.amount_micro),
                    "Cache-Control": "no-cache",
                    **admitted.reservation.rate_headers,
                    **extra,
                },
            )
            call.hand_over()
            return streaming

    async with MeteredCall(state, admitted) as call:

        async def post(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> dict[str, Any]:
            reply: UpstreamReply = await adapter.json.post_json(
                UPSTREAM_ROUTE, served.upstream_model, forwarded(served)
            )
            return decode_reply(reply, served.provider)

        answer = await call.dispatch(post)

        async def counted() -> Usage:
            text, model = _output_text(answer), call.served.upstream_model
            return Usage(
                input_tokens=await prompt.exact(),
                output_tokens=await count_tokens(len(text), lambda: count_text_tokens(text, model)),
            )

        reply = await bill_json(call, answer, responses_usage(answer.get("usage")), counted)
    reply.headers.update(extra)
    return reply


def _sse(kind: str, data: bytes) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class _EventMeter:
    """What a stream has produced so far, its usage once reported, and its model names."""

    def __init__(self, call: MeteredCall, prompt_tokens: Callable[[], Awaitable[int]]) -> None:
        self.call = call
        self.generated: list[str] = []
        self.generated_bytes = 0
        self.reported: Usage | None = None
        self.sequence = -1
        self.upstream_model = ""
        self.final: tuple[str, bytes] | None = None  # the final event: its type and data
        self.upstream_failed = False  # the upstream said so itself (an error event, response.failed)
        self._prompt_tokens = prompt_tokens
        self._old: tuple[bytes, ...] = ()
        self._new = member_bytes("model", call.served.slug)[0]

    def read(self, chunk: StreamChunk) -> EventView:
        try:
            event = _event_decoder.decode(chunk.data)
        except msgspec.DecodeError as error:
            provider = self.call.served.provider
            raise UpstreamBadResponse(f"upstream {provider} sent a malformed event", provider=provider) from error
        if isinstance(event.delta, str) and event.type in TEXT_DELTAS:
            self.generated.append(event.delta)
            self.generated_bytes += len(event.delta)
        if type(event.sequence_number) is int:
            self.sequence = max(self.sequence, event.sequence_number)
        return event

    def forward(self, batch: list[StreamChunk]) -> list[bytes]:
        """The SSE bytes of one upstream read; the final event is kept back (``self.final``)."""
        out: list[bytes] = []
        for chunk in batch:
            event = self.read(chunk)
            if event.type in FINAL_EVENTS:
                self.reported = _view_usage(event.response.usage if event.response else None)
                self.final = (event.type, chunk.data)
                self.upstream_failed = self.upstream_failed or event.type == "response.failed"
                continue
            self.upstream_failed = self.upstream_failed or event.type == "error"
            data = self.named(chunk, event) if event.type in MODEL_EVENTS else chunk.data
            out.append(_sse(event.type or "message", data))
        return out

    def named(self, chunk: StreamChunk, event: EventView) -> bytes:
        """The event with the slug as its response's model (in its bytes when it can be)."""
        model = event.response.model if event.response is not None else None
        if not isinstance(model, str) or model == self.call.served.slug:
            return chunk.data
        if model != self.upstream_model:
            self.upstream_model, self._old = model, member_bytes("model", model)
        replaced = with_replaced(chunk.data, self._old, self._new)
        if replaced is not None:
            return replaced
        decoded = msgspec.json.decode(chunk.data)
        if isinstance(decoded, dict) and isinstance(decoded.get("response"), dict):
            decoded["response"]["model"] = self.call.served.slug
            return _encoder.encode(decoded)
        return chunk.data

    async def counted(self) -> Usage:
        text = "".join(self.generated)
        model = self.call.served.upstream_model
        return Usage(
            input_tokens=await self._prompt_tokens(),
            output_tokens=await count_tokens(self.generated_bytes, lambda: count_text_tokens(text, model)),
        )

    async def billable(self) -> tuple[Usage, str]:
        return await billable_usage(self.reported, self.counted)


def _final_with_meta(data: bytes, meta: dict[str, Any], slug: str) -> bytes:
    decoded = msgspec.json.decode(data)
    if isinstance(decoded, dict) and isinstance(decoded.get("response"), dict):
        decoded["response"]["model"] = slug
        decoded["response"]["_tollway"] = meta
    return _encoder.encode(decoded)


def _error_event(error: ProviderError, meta: dict[str, Any], sequence: int) -> bytes:
    """The Responses API's ``error`` event, naming the request (and what the partial answer
    cost) for a caller that holds only the event."""
    return _encoder.encode(
        {
            "type": "error",
            "code": error.code,
            "message": f"{error.message} (request id {meta['request_id']})",
            "param": error.param,
            "sequence_number": sequence,
            "_tollway": meta,
        }
    )


async def _events(
    call: MeteredCall, stream: ChatStream, prompt_tokens: Callable[[], Awaitable[int]]
) -> AsyncIterator[bytes]:
    """The client's stream; it owns the hold and settles it exactly once, however it ends."""
    state, ctx, served = call.state, call.ctx, call.served
    meter = _EventMeter(call, prompt_tokens)
    failure: ProviderError | None = None
    checkpointed = time.monotonic()
    async with StreamEnd(call, stream, meter.billable) as end:
        try:
            async for batch in stream_batches(stream):
                out = meter.forward(batch)
                if time.monotonic() - checkpointed >= CHECKPOINT_S:
                    checkpointed = time.monotonic()
                    await call.checkpoint((await meter.billable())[0])
                if out:
                    yield b"".join(out)
            if meter.upstream_failed:
                end.status_code, end.error_code = 502, "upstream_error"  # its own error event went out
            elif meter.final is None:
                raise UpstreamBadResponse(
                    f"upstream {served.provider} ended the stream before its final event", provider=served.provider
                )
        except ProviderError as error:
            failure = error
            end.failed(error)
        usage, bill = await end.settle()
        meta = tollway_meta(state, ctx, served, usage, bill.cost_micro, meter.upstream_model)
        tail: list[bytes] = []
        if meter.final is not None:
            tail.append(_sse(meter.final[0], _final_with_meta(meter.final[1], meta, served.slug)))
        if failure is not None:
            tail.append(_sse("error", _error_event(failure, meta, meter.sequence + 1)))
        if tail:
            yield b"".join(tail)

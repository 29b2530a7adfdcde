"""``POST /v1/chat/completions``: parse → route → reserve → dispatch → settle.

Plain async functions with typed context, called by a thin controller. Whatever a stage
acquires its partner releases in ``finally``: a reservation is settled exactly once on every
exit path (success, upstream error, client disconnect), shielded from cancellation.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Response
from litestar.response import Stream

from billing.errors import BillingError
from billing.ledger import Settlement
from billing.metering import KeyLimits, Reservation
from billing.money import format_credits, micro_to_usd
from billing.tokens import count_chat_tokens, count_text_tokens
from gateway.catalog import CatalogModel
from gateway.errors import (
    GatewayError,
    InvalidJSON,
    InvalidRequest,
    ModelNotFound,
    ProviderUnavailable,
    validation_param,
)
from gateway.routing import ProviderPreferences, attempts, backoff_s
from gateway.state import GatewayState
from keys.chain import RequestFacts, authenticate, authorize_models
from keys.errors import KeyError_
from keys.service import KeyIdentity
from providers.base import ChatCall, ChatResult, ChatStream, StreamChunk, Usage
from providers.errors import ProviderError, UpstreamTimeout

# Fields that steer the gateway and must not reach the upstream (``user`` is the caller's
# end-user id: PRODUCT.md says it is recorded, never forwarded).
GATEWAY_FIELDS = frozenset({"models", "provider", "user"})
END_USER_HEADER = "x-tollway-user-id"
_MAX_END_USER = 256

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


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


@dataclass(slots=True)
class CallContext:
    """One request's identity and bookkeeping, threaded through every stage."""

    request_id: str
    started: float
    identity: KeyIdentity
    end_user_id: str

    def latency_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def parse_chat_body(raw: bytes) -> tuple[dict[str, Any], ChatBodyView]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise InvalidJSON(f"request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        view = msgspec.convert(body, ChatBodyView)
    except msgspec.ValidationError as error:
        param = validation_param(str(error))
        raise InvalidRequest(f"invalid request: {error}", param=param) from error
    return body, view


def find_model(state: GatewayState, slug: str, *, param: str = "model") -> CatalogModel:
    model = state.catalog.get(slug)
    if model is None:
        raise ModelNotFound(f"unknown model {slug!r}: see GET /v1/models", param=param)
    if any(d.price is None for d in model.deployments):
        raise ModelNotFound(f"model {slug!r} has no price configured and cannot be called", param=param)
    if any(d.provider not in state.adapters for d in model.deployments):
        raise ProviderUnavailable(f"no provider is configured for model {slug!r}")
    return model


def requested_models(state: GatewayState, view: ChatBodyView) -> list[CatalogModel]:
    """The model asked for, then its fallbacks from ``models`` (each once)."""
    slugs = dict.fromkeys([view.model, *(view.models or ())])
    return [find_model(state, slug, param="model" if index == 0 else "models") for index, slug in enumerate(slugs)]


def end_user_of(headers: Mapping[str, str], view: ChatBodyView) -> str:
    return (headers.get(END_USER_HEADER) or view.user or "")[:_MAX_END_USER]


def upstream_body(body: dict[str, Any], model: CatalogModel) -> dict[str, Any]:
    forwarded = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    forwarded["model"] = model.upstream_model
    return forwarded


def worst_case(plan: list[CatalogModel], view: ChatBodyView) -> tuple[int, int, int]:
    """(input token estimate, most output tokens, micro-credits to reserve) for this call.

    Any deployment of the plan may end up serving, so the hold covers the dearest of them."""
    input_tokens = count_chat_tokens(view.messages, plan[0].upstream_model, view.tools)
    asked = view.max_completion_tokens or view.max_tokens
    most_output, amount = 0, 0
    for served in plan:
        assert served.price is not None
        max_output = min(asked or served.max_output_tokens, served.max_output_tokens)
        most_output = max(most_output, max_output)
        amount = max(amount, served.price.worst_case_micro(input_tokens, max_output))
    return input_tokens, most_output, amount


def key_limits(identity: KeyIdentity) -> KeyLimits:
    return KeyLimits(
        key_id=identity.key_id,
        spending_limit_micro=identity.spending_limit_micro,
        spending_period=identity.spending_period,
        rpm_limit=identity.rpm_limit,
        tpm_limit=identity.tpm_limit,
    )


def tollway_meta(
    state: GatewayState, ctx: CallContext, model: CatalogModel, usage: Usage, cost_micro: int
) -> dict[str, Any]:
    return {
        "credits_used": format_credits(cost_micro),
        "cost_usd": micro_to_usd(cost_micro, state.settings.credits_per_usd),
        "model_used": model.slug,
        "provider": model.provider,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "latency_ms": ctx.latency_ms(),
        "request_id": ctx.request_id,
    }


async def settle(
    state: GatewayState,
    ctx: CallContext,
    model: CatalogModel,
    reservation: Reservation,
    usage: Usage,
    *,
    status_code: int,
    error_code: str = "",
    streamed: bool = False,
    cancelled: bool = False,
) -> int:
    """Bill ``usage`` once and release the hold; returns the cost in micro-credits."""
    assert model.price is not None
    cost = model.price.cost_micro(usage)
    await state.meter.settle(
        reservation,
        Settlement(
            request_id=ctx.request_id,
            account_id=ctx.identity.account_id,
            key_id=ctx.identity.key_id,
            model=model.slug,
            provider=model.provider,
            upstream_model=model.upstream_model,
            usage=usage,
            cost_micro=cost,
            latency_ms=ctx.latency_ms(),
            status_code=status_code,
            error_code=error_code,
            streamed=streamed,
            cancelled=cancelled,
            end_user_id=ctx.end_user_id,
        ),
    )
    return cost


def refused_settlement(ctx: CallContext, slug: str, error: GatewayError | BillingError | KeyError_) -> Settlement:
    """The usage record of an authenticated request refused before it reached a provider."""
    return Settlement(
        request_id=ctx.request_id,
        account_id=ctx.identity.account_id,
        key_id=ctx.identity.key_id,
        model=slug[:200],
        provider="",
        upstream_model="",
        usage=Usage(),
        cost_micro=0,
        latency_ms=ctx.latency_ms(),
        status_code=error.status_code,
        error_code=error.code,
        end_user_id=ctx.end_user_id,
    )


def _completion_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


async def chat_completions(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw_body: bytes, request_id: str
) -> Response[bytes] | Stream:
    started = time.perf_counter()
    now = state.now()
    identity = await authenticate(headers.get("authorization"), state.keys, now, facts, state.tokens)
    ctx = CallContext(request_id, started, identity, headers.get(END_USER_HEADER, "")[:_MAX_END_USER])
    slug = ""
    try:
        body, view = parse_chat_body(raw_body)
        slug = view.model
        ctx.end_user_id = end_user_of(headers, view)
        primary = find_model(state, view.model)
        authorize_models(identity, [view.model, *(view.models or ())], primary.category)
        models = requested_models(state, view)
        plan = state.router.plan(models, view.provider)
        input_tokens, max_output, amount = worst_case(plan, view)
        reservation = await state.meter.reserve(
            identity.account_id,
            amount,
            request_id,
            limits=key_limits(identity),
            tokens=input_tokens + max_output,
            now=now,
        )
    except (GatewayError, BillingError, KeyError_) as error:
        await state.meter.record(refused_settlement(ctx, slug, error))
        raise
    if view.stream:
        served, stream = await _dispatch(state, ctx, plan, reservation, body, stream=True)
        assert isinstance(stream, DeadlineStream)
        return Stream(
            content=_stream_body(state, ctx, served, reservation, stream, input_tokens),
            media_type="text/event-stream",
            headers={
                "X-Request-Id": request_id,
                "X-Tollway-Credits-Reserved": format_credits(amount),
                "Cache-Control": "no-cache",
            },
        )
    served, result = await _dispatch(state, ctx, plan, reservation, body, stream=False)
    assert isinstance(result, ChatResult)
    usage = result.usage or Usage(
        input_tokens=input_tokens,
        output_tokens=count_text_tokens(_completion_text(result.body), served.upstream_model),
    )
    with anyio.CancelScope(shield=True):
        cost = await settle(state, ctx, served, reservation, usage, status_code=200)
    result.body["_tollway"] = tollway_meta(state, ctx, served, usage, cost)
    return Response(
        content=_encoder.encode(result.body),
        media_type="application/json",
        headers={"X-Request-Id": request_id, "X-Tollway-Credits-Used": format_credits(cost)},
    )


async def _dispatch(
    state: GatewayState,
    ctx: CallContext,
    plan: list[CatalogModel],
    reservation: Reservation,
    body: dict[str, Any],
    *,
    stream: bool,
) -> tuple[CatalogModel, ChatResult | DeadlineStream]:
    """Try the plan's deployments, retrying retryable failures with backoff; a stream is only
    retried while opening, never once a byte of it could have reached the client."""
    tries = attempts(plan, state.settings.retry_attempts)
    for number, served in enumerate(tries, 1):
        adapter = state.adapters[served.provider]
        call = ChatCall(body=upstream_body(body, served), upstream_model=served.upstream_model)
        deadline_at = time.monotonic() + state.deadline_s(served.provider)
        started = time.monotonic()
        try:
            try:
                with anyio.fail_after(deadline_at - started):
                    outcome: ChatResult | ChatStream = (
                        await adapter.open_stream(call) if stream else await adapter.complete(call)
                    )
            except TimeoutError as error:
                raise UpstreamTimeout(
                    f"upstream {served.provider} did not answer within its deadline", provider=served.provider
                ) from error
        except ProviderError as error:
            if not error.retryable:
                await _settle_failure(state, ctx, served, reservation, error, streamed=stream)
                raise
            state.router.failed(served)
            if number == len(tries):
                await _settle_failure(state, ctx, served, reservation, error, streamed=stream)
                raise
            await anyio.sleep(backoff_s(number, state.settings.retry_backoff_s))
            continue
        except BaseException as error:
            await _settle_failure(state, ctx, served, reservation, error, streamed=stream)
            raise
        state.router.succeeded(served, time.monotonic() - started)
        if isinstance(outcome, ChatResult):
            return served, outcome
        return served, DeadlineStream(outcome, deadline_at, served.provider)
    raise AssertionError("attempts() always yields at least one deployment")


class DeadlineStream:
    """An upstream stream held to the provider's overall deadline, chunk by chunk."""

    def __init__(self, stream: ChatStream, deadline_at: float, provider: str) -> None:
        self._stream = stream
        self._deadline_at = deadline_at
        self._provider = provider

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        chunks = self._stream.__aiter__()
        while True:
            try:
                with anyio.fail_after(max(0.0, self._deadline_at - time.monotonic())):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError as error:
                raise UpstreamTimeout(
                    f"upstream {self._provider} stream passed its deadline", provider=self._provider
                ) from error
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _settle_failure(
    state: GatewayState,
    ctx: CallContext,
    model: CatalogModel,
    reservation: Reservation,
    error: BaseException,
    *,
    streamed: bool,
) -> None:
    """An upstream call that produced nothing costs nothing, but is still recorded."""
    status = int(getattr(error, "status_code", 499 if not isinstance(error, Exception) else 500))
    code = str(getattr(error, "code", "cancelled" if not isinstance(error, Exception) else "internal_error"))
    with anyio.CancelScope(shield=True):
        await settle(
            state,
            ctx,
            model,
            reservation,
            Usage(),
            status_code=status,
            error_code=code,
            streamed=streamed,
            cancelled=not isinstance(error, Exception),
        )


def _sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _error_chunk(error: ProviderError, request_id: str, model: CatalogModel) -> bytes:
    return _encoder.encode(
        {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model.slug,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
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
    ctx: CallContext,
    model: CatalogModel,
    reservation: Reservation,
    stream: ChatStream,
    input_tokens: int,
) -> AsyncIterator[bytes]:
    """Forward chunks as they come; settle before ``[DONE]`` so a client that saw the end of
    the stream sees its debit too, and in ``finally`` for every other way out."""
    generated: list[str] = []
    usage: Usage | None = None
    status, error_code, cancelled, settled = 200, "", False, False
    try:
        try:
            async for chunk in stream:
                if chunk.text:
                    generated.append(chunk.text)
                if chunk.usage is None:
                    yield _sse(chunk.data)
                    continue
                usage = chunk.usage
                yield _sse(_with_meta(chunk.data, state, ctx, model, usage))
        except ProviderError as error:
            status, error_code = error.status_code, error.code
            yield _sse(_error_chunk(error, ctx.request_id, model))
        await stream.aclose()
        if usage is None:
            usage = _estimated_usage(input_tokens, generated, model)
            yield _sse(_usage_chunk(state, ctx, model, usage))
        with anyio.CancelScope(shield=True):
            settled = True
            await settle(
                state, ctx, model, reservation, usage, status_code=status, error_code=error_code, streamed=True
            )
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
                    ctx,
                    model,
                    reservation,
                    usage or _estimated_usage(input_tokens, generated, model),
                    status_code=499 if cancelled else status,
                    error_code="client_disconnected" if cancelled else error_code,
                    streamed=True,
                    cancelled=cancelled,
                )


def _estimated_usage(input_tokens: int, generated: list[str], model: CatalogModel) -> Usage:
    """When usage never came: our prompt estimate and tiktoken over what was streamed."""
    return Usage(input_tokens=input_tokens, output_tokens=count_text_tokens("".join(generated), model.upstream_model))


def _with_meta(data: bytes, state: GatewayState, ctx: CallContext, model: CatalogModel, usage: Usage) -> bytes:
    chunk = msgspec.json.decode(data)
    assert model.price is not None
    chunk["_tollway"] = tollway_meta(state, ctx, model, usage, model.price.cost_micro(usage))
    return _encoder.encode(chunk)


def _usage_chunk(state: GatewayState, ctx: CallContext, model: CatalogModel, usage: Usage) -> bytes:
    assert model.price is not None
    return _encoder.encode(
        {
            "id": ctx.request_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model.slug,
            "choices": [],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
            "_tollway": tollway_meta(state, ctx, model, usage, model.price.cost_micro(usage)),
        }
    )

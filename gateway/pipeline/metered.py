"""What every ``/v1`` route shares: admit (chain, model, plan, reservation), dispatch (retries
across deployments under a deadline) and settle. No route can skip a stage: each route only
supplies how to parse its body, how to estimate its worst case and how to call the upstream.

Whatever a stage acquires its partner releases: a reservation is settled exactly once on every
exit path (success, upstream error, client disconnect), shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import anyio
from sqlalchemy.exc import SQLAlchemyError

from billing.errors import BillingError, OutOfBudget, RateLimitExceeded, SpendingLimitExceeded
from billing.ledger import Settlement
from billing.metering import KeyLimits, Reservation
from billing.money import format_credits, micro_to_usd
from billing.webhooks import enqueue, rate_limit_event, spending_limit_event
from gateway.catalog import CatalogModel
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, ProviderUnavailable
from gateway.routing import ProviderPreferences, attempts, backoff_s
from gateway.state import GatewayState
from keys.chain import RequestFacts, authenticate, authorize_models
from keys.errors import KeyError_
from keys.service import KeyIdentity
from providers.base import ChatStream, StreamChunk, Usage
from providers.errors import ProviderError, UpstreamTimeout

log = logging.getLogger("tollway.gateway")
END_USER_HEADER = "x-tollway-user-id"
MAX_END_USER = 256
# Fields that steer the gateway and must not reach the upstream (``user`` is the caller's
# end-user id: PRODUCT.md says it is recorded, never forwarded).
GATEWAY_FIELDS = frozenset({"models", "provider", "user"})

B = TypeVar("B", bound="RoutedBody")
R = TypeVar("R")


class RoutedBody(Protocol):
    """The fields every routed request body has (msgspec views of each route's body)."""

    @property
    def model(self) -> str: ...

    @property
    def models(self) -> list[str] | None: ...

    @property
    def provider(self) -> ProviderPreferences | None: ...

    @property
    def user(self) -> str | None: ...


@dataclass(slots=True)
class CallContext:
    """One request's identity and bookkeeping, threaded through every stage."""

    request_id: str
    started: float
    identity: KeyIdentity
    end_user_id: str

    def latency_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A call's worst case: tokens for the key's tpm limit and micro-credits to hold."""

    tokens: int
    amount_micro: int


@dataclass(slots=True)
class Admitted:
    ctx: CallContext
    plan: list[CatalogModel]
    reservation: Reservation
    amount_micro: int


class ClientGone(GatewayError):
    """The client disconnected before the answer was ready; the upstream call was cancelled."""

    status_code = 499
    code = "client_disconnected"


async def cancel_on_disconnect(receive: Callable[[], Awaitable[Mapping[str, Any]]], work: Awaitable[R]) -> R:
    """Run ``work`` (the whole pipeline of a request whose body has been read), cancelling it if
    the client disconnects: the upstream request is cancelled with it and the pipeline settles
    what it held (shielded), instead of paying for an answer nobody will read."""

    async def watch(scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    with anyio.CancelScope() as scope:
        # A bare task rather than a task group: errors of ``work`` must reach the error handlers
        # as themselves, not wrapped in an ExceptionGroup.
        watcher = asyncio.create_task(watch(scope))
        try:
            return await work
        finally:
            watcher.cancel()
    raise ClientGone("client disconnected")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def find_model(state: GatewayState, slug: str, *, param: str = "model") -> CatalogModel:
    model = state.catalog.get(slug)
    if model is None:
        raise ModelNotFound(f"unknown model {slug!r}: see GET /v1/models", param=param)
    if any(d.price is None for d in model.deployments):
        raise ModelNotFound(f"model {slug!r} has no price configured and cannot be called", param=param)
    if any(d.provider not in state.adapters for d in model.deployments):
        raise ProviderUnavailable(f"no provider is configured for model {slug!r}")
    return model


def requested_models(state: GatewayState, body: RoutedBody) -> list[CatalogModel]:
    """The model asked for, then its fallbacks from ``models`` (each once)."""
    slugs = dict.fromkeys([body.model, *(body.models or ())])
    return [find_model(state, slug, param="model" if index == 0 else "models") for index, slug in enumerate(slugs)]


def upstream_body(body: dict[str, Any], served: CatalogModel) -> dict[str, Any]:
    forwarded = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    forwarded["model"] = served.upstream_model
    return forwarded


def key_limits(identity: KeyIdentity) -> KeyLimits:
    return KeyLimits(
        key_id=identity.key_id,
        spending_limit_micro=identity.spending_limit_micro,
        spending_period=identity.spending_period,
        rpm_limit=identity.rpm_limit,
        tpm_limit=identity.tpm_limit,
    )


def end_user_of(headers: Mapping[str, str], body: RoutedBody | None) -> str:
    user = body.user if body is not None else None
    return (headers.get(END_USER_HEADER) or user or "")[:MAX_END_USER]


class WrongModelCategory(GatewayError):
    code = "model_not_supported"


async def admit(
    state: GatewayState,
    headers: Mapping[str, str],
    facts: RequestFacts,
    request_id: str,
    *,
    parse: Callable[[], B],
    categories: frozenset[str],
    route: str,
    estimate: Callable[[B, list[CatalogModel]], Estimate],
    serves: Callable[[object], bool],
    shrink: Callable[[B, list[CatalogModel], OutOfBudget], Estimate | None] | None = None,
) -> tuple[Admitted, B]:
    """Chain steps 1–12 for any route; an authenticated refusal is still recorded (at no cost)."""
    started = time.perf_counter()
    now = state.now()
    identity = await authenticate(headers.get("authorization"), state.keys, now, facts, state.tokens)
    ctx = CallContext(request_id, started, identity, end_user_of(headers, None))
    slug = ""
    try:
        body = parse()
        slug = body.model
        ctx.end_user_id = end_user_of(headers, body)
        primary = find_model(state, body.model)
        if primary.category not in categories:
            raise WrongModelCategory(
                f"model {body.model!r} is a {primary.category} model and cannot serve {route}", param="model"
            )
        authorize_models(identity, [body.model, *(body.models or ())], primary.category)
        models = [m for m in requested_models(state, body) if m.category in categories]
        plan = [
            served for served in state.router.plan(models, body.provider) if serves(state.adapters[served.provider])
        ]
        if not plan:
            raise InvalidRequest(f"the provider of model {body.model!r} does not offer {route}", param="model")
        worst = estimate(body, plan)
        try:
            reservation = await state.meter.reserve(
                identity.account_id,
                worst.amount_micro,
                request_id,
                limits=key_limits(identity),
                tokens=worst.tokens,
                now=now,
            )
        except OutOfBudget as refusal:
            # The route may fit the request to what is left (chat lowers max_tokens) and try once more.
            smaller = shrink(body, plan, refusal) if shrink is not None else None
            if smaller is None:
                raise
            worst = smaller
            reservation = await state.meter.reserve(
                identity.account_id,
                worst.amount_micro,
                request_id,
                limits=key_limits(identity),
                tokens=worst.tokens,
                now=now,
            )
    except (GatewayError, BillingError, KeyError_) as error:
        await state.meter.record(refused_settlement(ctx, slug, error))
        if isinstance(error, SpendingLimitExceeded | RateLimitExceeded) and identity.webhook_url:
            await _tell_webhook(state, identity, error, now)
        raise
    return Admitted(ctx, plan, reservation, worst.amount_micro), body


async def _tell_webhook(state: GatewayState, identity: KeyIdentity, error: BillingError, now: datetime) -> None:
    """Queue spending_limit_reached / rate_limit_exceeded (once per period / minute); never raises."""
    if isinstance(error, SpendingLimitExceeded):
        payload, dedupe = spending_limit_event(
            identity.key_id, identity.name, identity.spending_limit_micro, identity.spending_period, now
        )
    else:
        payload, dedupe = rate_limit_event(identity.key_id, identity.name, error.message, now)
    try:
        async with state.sessionmaker() as session:
            await enqueue(
                session,
                account_id=identity.account_id,
                key_id=identity.key_id,
                event=str(payload["event"]),
                payload=payload,
                dedupe_key=dedupe,
            )
            await session.commit()
    except SQLAlchemyError:
        log.warning("could not queue a webhook event", exc_info=True)


async def dispatch(
    state: GatewayState,
    admitted: Admitted,
    call: Callable[[Any, CatalogModel, float], Awaitable[R]],
    *,
    streamed: bool = False,
) -> tuple[CatalogModel, R]:
    """Try the plan's deployments, retrying retryable failures with backoff, each attempt under
    its provider's deadline. ``call(adapter, served, deadline_at)``. A stream is only retried
    while opening, never once a byte of it could have reached the client."""
    tries = attempts(admitted.plan, state.settings.retry_attempts)
    for number, served in enumerate(tries, 1):
        adapter = state.adapters[served.provider]
        started = time.monotonic()
        deadline_at = started + state.deadline_s(served.provider)
        try:
            try:
                # asyncio's timeout, not anyio's scope: a third of the cost, and it composes
                # with the anyio scopes around it (both count cancellations on the task).
                async with asyncio.timeout(deadline_at - started):
                    outcome = await call(adapter, served, deadline_at)
            except TimeoutError as error:
                raise UpstreamTimeout(
                    f"upstream {served.provider} did not answer within its deadline", provider=served.provider
                ) from error
        except ProviderError as error:
            if error.retryable:
                state.router.failed(served)
                if number < len(tries):
                    await anyio.sleep(backoff_s(number, state.settings.retry_backoff_s))
                    continue
            await settle_failure(state, admitted, served, error, streamed=streamed)
            raise
        except BaseException as error:
            await settle_failure(state, admitted, served, error, streamed=streamed)
            raise
        state.router.succeeded(served, time.monotonic() - started)
        return served, outcome
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
                async with asyncio.timeout(max(0.0, self._deadline_at - time.monotonic())):  # per chunk: cheap
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


def tollway_meta(
    state: GatewayState, ctx: CallContext, served: CatalogModel, usage: Usage, cost_micro: int
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "credits_used": format_credits(cost_micro),
        "cost_usd": micro_to_usd(cost_micro, state.settings.credits_per_usd),
        "model_used": served.slug,
        "provider": served.provider,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "latency_ms": ctx.latency_ms(),
        "request_id": ctx.request_id,
    }
    if usage.units:
        meta["units"] = usage.units
    return meta


def settlement_for(
    admitted: Admitted,
    served: CatalogModel,
    usage: Usage,
    *,
    status_code: int,
    error_code: str = "",
    streamed: bool = False,
    cancelled: bool = False,
) -> Settlement:
    """The bill for ``usage`` at the serving deployment's price."""
    assert served.price is not None
    ctx = admitted.ctx
    return Settlement(
        request_id=ctx.request_id,
        account_id=ctx.identity.account_id,
        key_id=ctx.identity.key_id,
        model=served.slug,
        provider=served.provider,
        upstream_model=served.upstream_model,
        usage=usage,
        cost_micro=served.price.cost_micro(usage),
        latency_ms=ctx.latency_ms(),
        status_code=status_code,
        error_code=error_code,
        streamed=streamed,
        cancelled=cancelled,
        end_user_id=ctx.end_user_id,
    )


async def settle(
    state: GatewayState,
    admitted: Admitted,
    served: CatalogModel,
    usage: Usage,
    *,
    status_code: int,
    error_code: str = "",
    streamed: bool = False,
    cancelled: bool = False,
) -> int:
    """Bill ``usage`` once at the serving deployment's price and release the hold."""
    settlement = settlement_for(
        admitted, served, usage, status_code=status_code, error_code=error_code, streamed=streamed, cancelled=cancelled
    )
    with anyio.CancelScope(shield=True):
        await state.meter.settle(admitted.reservation, settlement)
    cost = settlement.cost_micro
    return cost


async def settle_failure(
    state: GatewayState, admitted: Admitted, served: CatalogModel, error: BaseException, *, streamed: bool
) -> None:
    """An upstream call that produced nothing costs nothing, but is still recorded."""
    status = int(getattr(error, "status_code", 499 if not isinstance(error, Exception) else 500))
    code = str(getattr(error, "code", "cancelled" if not isinstance(error, Exception) else "internal_error"))
    await settle(
        state,
        admitted,
        served,
        Usage(),
        status_code=status,
        error_code=code,
        streamed=streamed,
        cancelled=not isinstance(error, Exception),
    )


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

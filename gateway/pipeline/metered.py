"""What every ``/v1`` route shares, in the order a route reads:

    async with Admission(state, headers, facts, request_id) as door:   # steps 1–6, refusals recorded
        view = parse(...)
        plan = door.plan(view, route=..., categories=..., serves=...)   # steps 7–9 and routing
        admitted = await door.reserve(plan, worst_case(...))           # steps 10–12 (billing.estimates)
    async with MeteredCall(state, admitted) as call:                   # owns the hold from here
        answer = await call.dispatch(post)                             # retries under the deadline
        await call.settle(usage)                                       # once, never above the hold

Whatever a stage acquires its partner releases: leaving the ``MeteredCall`` block any way settles
the hold exactly once (shielded from cancellation); a stream hands its hold to its body.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import anyio
from sqlalchemy.exc import SQLAlchemyError

from billing.errors import BillingError, OutOfBudget, RateLimitExceeded, SpendingLimitExceeded
from billing.estimates import Estimate, OutputRequest, affordable_output, tokens_worst_case
from billing.ledger import Settlement
from billing.metering import KeyLimits, Reservation
from billing.money import format_credits, micro_to_usd
from billing.shielding import Cancellation, shielded
from billing.webhooks import enqueue, rate_limit_event, spending_limit_event
from gateway.catalog import CatalogModel
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, ProviderUnavailable
from gateway.request_id import CURRENT
from gateway.routing import CallDeadline, ProviderPreferences, attempts, backoff_s
from gateway.state import GatewayState
from keys.chain import RequestFacts, authenticate, authorize_models
from keys.errors import KeyError_
from keys.service import KeyIdentity
from providers.base import ChatStream, ProviderHandle, StreamChunk, Usage
from providers.errors import ProviderError, UpstreamTimeout

log = logging.getLogger("tollway.gateway")
END_USER_HEADER = "x-tollway-user-id"
# Anomalies flagged on usage records (and counted per process) for the operator.
USAGE_OVER_HOLD = "usage_over_hold"
MALFORMED_USAGE = "malformed_usage"
MAX_END_USER = 256
# Fields that steer the gateway and must not reach the upstream (``user`` is the caller's
# end-user id: docs/product-rules.md: recorded, never forwarded).
GATEWAY_FIELDS = frozenset({"models", "provider", "user"})
EMBEDDINGS_ROUTE = "/v1/embeddings"

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


class DisconnectScope(Cancellation):
    """``async with DisconnectScope(receive) as scope``: the stretch of a request's task that the
    client's disconnect cancels. ``receive`` is watched for ``http.disconnect`` by
    :class:`DisconnectWatch` (no task of its own); the cancellation is asyncio's own, held off by
    :func:`billing.shielding.shielded` settlements; ``scope.caught`` tells that it ended the block."""

    __slots__ = ("_receive", "_watch")

    def __init__(self, receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        super().__init__()
        self._receive = receive

    async def __aenter__(self) -> DisconnectScope:
        await super().__aenter__()
        self._watch = DisconnectWatch(self._receive, self)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> bool:
        # Dropped, not only closed: the watch refers back to this scope, and a cycle per request
        # would wait for the garbage collector (bench/RESULTS.md, "the collector").
        watch = self._watch
        del self._watch
        watch.close()
        return await super().__aexit__(kind, error, tb)


async def cancel_on_disconnect(receive: Callable[[], Awaitable[Mapping[str, Any]]], work: Awaitable[R]) -> R:
    """Run ``work`` (the whole pipeline of a request whose body has been read), cancelling it if
    the client disconnects: the upstream request is cancelled with it and the pipeline settles
    what it held (shielded), instead of paying for an answer nobody will read. Errors of
    ``work`` reach the error handlers as themselves."""
    async with DisconnectScope(receive):
        return await work
    raise ClientGone("client disconnected")


class DisconnectWatch:
    """Waits for ``http.disconnect`` on ``receive`` without a task of its own, then cancels
    ``scope``: the coroutine of each ``receive()`` call is sent into by hand, as a task would,
    each time the future it waits on completes (an asyncio task per request, created, stepped,
    cancelled and stepped again, made the wrapper cost ~72k instructions a request, ~50k without
    it; bench/disconnect_cost.py). Messages other than
    a disconnect (a body the route already read to its end) are read past, as before."""

    __slots__ = ("_coro", "_receive", "_scope", "_waiting")

    def __init__(self, receive: Callable[[], Awaitable[Mapping[str, Any]]], scope: DisconnectScope) -> None:
        self._receive = receive
        self._scope = scope
        self._coro: Coroutine[Any, Any, Mapping[str, Any]] | None = _as_coroutine(receive())
        self._waiting: asyncio.Future[Any] | None = None
        self._step()

    def _step(self, _done: object = None) -> None:
        self._waiting = None
        while self._coro is not None:
            try:
                awaited = self._coro.send(None)
            except StopIteration as finished:
                if finished.value["type"] == "http.disconnect":
                    self._coro = None
                    self._scope.cancel()
                    return
                self._coro = _as_coroutine(self._receive())
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                # The server's receive failed: stop watching, as the watcher task would have.
                self._coro = None
                log.debug("disconnect watch ended by its receive", exc_info=True)
                return
            if awaited is None:  # a bare yield (sleep(0)): step again on the next loop turn
                asyncio.get_running_loop().call_soon(self._step)
            else:
                awaited._asyncio_future_blocking = False  # as a task does with what it awaits
                awaited.add_done_callback(self._step)
                self._waiting = awaited
            return

    def close(self) -> None:
        """Stop watching (the work is over): the pending receive is closed, not left running."""
        if self._waiting is not None:
            self._waiting.remove_done_callback(self._step)
            self._waiting = None
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()


def _as_coroutine(awaitable: Awaitable[R]) -> Coroutine[Any, Any, R]:
    if isinstance(awaitable, Coroutine):
        return awaitable

    async def wrapped() -> R:
        return await awaitable

    return wrapped()


def find_model(state: GatewayState, slug: str, *, param: str = "model") -> CatalogModel:
    model = state.catalog.get(slug)
    if model is None:
        raise ModelNotFound(f"unknown model {slug!r}: see GET /v1/models", param=param)
    if any(d.price is None for d in model.deployments):
        raise ModelNotFound(f"model {slug!r} has no price configured and cannot be called", param=param)
    if any(d.provider not in state.adapters for d in model.deployments):
        raise ProviderUnavailable(f"no provider is configured for model {slug!r}")
    return model


def requested_models(state: GatewayState, body: RoutedBody, primary: CatalogModel) -> list[CatalogModel]:
    """The model asked for (already found), then its fallbacks from ``models`` (each once)."""
    fallbacks = dict.fromkeys(slug for slug in body.models or () if slug != body.model)
    return [primary, *(find_model(state, slug, param="models") for slug in fallbacks)]


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
    """The end user named by the header or the body's ``user``: stored with the usage record, so
    it is refused when it holds a control character (Postgres refuses NUL bytes) or is too long."""
    user = headers.get(END_USER_HEADER) or (body.user if body is not None else None) or ""
    if len(user) > MAX_END_USER or not storable(user):
        raise InvalidRequest(
            f"the end user id (X-Tollway-User-Id or user) must be at most {MAX_END_USER} printable characters",
            param="user",
        )
    return user


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def storable(text: str) -> bool:
    """Whether ``text`` can be stored and shown as it is: no NUL or other control character."""
    return _CONTROL.search(text) is None


class WrongModelCategory(GatewayError):
    code = "model_not_supported"


class Admission:
    """The door of every ``/v1`` route: steps 1–12 of the chain, read top to bottom.

    ``async with Admission(...) as door:`` authenticates on entry (an unauthenticated request is
    refused and not recorded); inside, the route parses its body, asks :meth:`plan` for the
    deployments that may serve and :meth:`reserve` for the hold. Any refusal raised inside
    (a bad body, an unknown model, a restriction, no credits) leaves the block recorded once as
    a usage record at no cost, with the key's webhook told of limit refusals.
    """

    def __init__(self, state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, request_id: str) -> None:
        self.state = state
        self.headers = headers
        self.facts = facts
        self.request_id = request_id
        self._slug = ""
        self._now = state.now()
        self._ctx: CallContext | None = None

    @property
    def ctx(self) -> CallContext:
        assert self._ctx is not None, "used outside its async with"
        return self._ctx

    async def __aenter__(self) -> Admission:
        started = time.perf_counter()
        state = self.state
        if state.telemetry.tracing is not None:
            state.telemetry.tracing.begin(CURRENT.get()[0])
        try:
            identity = await authenticate(
                self.headers.get("authorization"), state.keys, self._now, self.facts, state.tokens
            )
        except BaseException as error:
            state.telemetry.refused(error, None, "", started)  # metrics and access log: once
            raise
        self._ctx = CallContext(self.request_id, started, identity, "")
        self._ctx.end_user_id = end_user_of(self.headers, None)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if error is not None and self._ctx is not None:
            self.state.telemetry.refused(error, self._ctx.identity, self._slug, self._ctx.started)  # once
        if not isinstance(error, GatewayError | BillingError | KeyError_) or self._ctx is None:
            return
        state, identity = self.state, self._ctx.identity
        await state.meter.record(refused_settlement(self._ctx, self._slug, error))
        if isinstance(error, SpendingLimitExceeded | RateLimitExceeded) and identity.webhook_url:
            await _tell_webhook(state, identity, error, self._now)

    def plan(
        self, body: RoutedBody, *, route: str, categories: frozenset[str], serves: Callable[[ProviderHandle], bool]
    ) -> list[CatalogModel]:
        """Steps 7–9 and routing: the model and its fallbacks, allowed for this key, in the order
        the router would try them, each offering ``route``."""
        state, ctx = self.state, self.ctx
        self._slug = body.model
        ctx.end_user_id = end_user_of(self.headers, body)
        embeddings = route == EMBEDDINGS_ROUTE
        primary = find_model(state, body.model)
        if primary.category not in categories:
            raise WrongModelCategory(
                f"model {body.model!r} is a {primary.category} model and cannot serve {route}", param="model"
            )
        if primary.embeds_only and not embeddings:
            raise WrongModelCategory(
                f"model {body.model!r} is an embedding model and cannot serve {route}", param="model"
            )
        authorize_models(ctx.identity, [body.model, *(body.models or ())], primary.category)
        models = [
            m
            for m in requested_models(state, body, primary)
            if m.category in categories and (embeddings or not m.embeds_only)
        ]
        plan = [
            served for served in state.router.plan(models, body.provider) if serves(state.adapters[served.provider])
        ]
        if not plan:
            raise InvalidRequest(f"the provider of model {body.model!r} does not offer {route}", param="model")
        return plan

    async def reserve(self, plan: list[CatalogModel], worst: Estimate) -> Admitted:
        """Steps 10–12 in one atomic apply: the key's rate and spending limits and the balance."""
        identity = self.ctx.identity
        reservation = await self.state.meter.reserve(
            identity.account_id,
            worst.amount_micro,
            self.request_id,
            limits=key_limits(identity),
            tokens=worst.tokens,
            now=self._now,
        )
        self.state.telemetry.open_reservations += 1  # until Telemetry.finished
        return Admitted(self.ctx, plan, reservation, worst.amount_micro)

    async def reserve_output(
        self, plan: list[CatalogModel], input_tokens: int, output: OutputRequest
    ) -> tuple[Admitted, int | None]:
        """Reserve a generating call, applying docs/product-rules.md's rule when it does not fit:
        without a cap the output is lowered to what is affordable (returned, to send upstream),
        with one the 402 names the largest cap that would fit."""
        try:
            return await self.reserve(plan, tokens_worst_case(plan, input_tokens, output)), None
        except OutOfBudget as refusal:
            affordable = affordable_output(plan, input_tokens, refusal.available_micro, output.choices)
            if output.asked is not None:
                hint = f"; the largest max_tokens that fits is {affordable}" if affordable >= 1 else ""
                raise type(refusal)(refusal.message + hint, available_micro=refusal.available_micro) from refusal
            if affordable < 1:
                raise
            fitted = OutputRequest(asked=affordable, choices=output.choices)
            return await self.reserve(plan, tokens_worst_case(plan, input_tokens, fitted)), affordable


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


class MeteredCall:
    """The one owner of an admitted request's hold, from dispatch to settle.

    ``async with MeteredCall(state, admitted) as call:`` — whatever happens inside (an upstream
    error, a malformed answer, a bug, the client hanging up), leaving the block settles the
    hold exactly once: with :meth:`settle`'s bill if the route got that far, else at no cost
    with the error recorded. A stream hands the hold over to its body (:meth:`hand_over`),
    which then settles in its own ``finally``.

    The bill never exceeds the hold: usage beyond what was reserved (a lying upstream, a model
    that ignored ``max_tokens``) is billed at the hold and flagged as an anomaly for the
    operator; usage that cannot be believed is replaced by the gateway's own count.
    """

    def __init__(self, state: GatewayState, admitted: Admitted, *, streamed: bool = False) -> None:
        self.state = state
        self.admitted = admitted
        self.served = admitted.plan[0]
        self.streamed = streamed
        self._settled = False
        self._handed_over = False
        self._upstream_s: float | None = None  # the successful attempt's time, for the metrics

    async def __aenter__(self) -> MeteredCall:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if self._settled or self._handed_over:
            return
        if error is None:
            error = RuntimeError("the route left its metered call without settling")
            log.error("request %s: %s", self.admitted.ctx.request_id, error)
        await self.settle_failure(error)

    @property
    def ctx(self) -> CallContext:
        return self.admitted.ctx

    def hand_over(self) -> None:
        """A stream's body now owns the hold (it settles in its ``finally``)."""
        self._handed_over = True

    async def dispatch(self, call: Callable[[ProviderHandle, CatalogModel, float], Awaitable[R]]) -> R:
        """Try the plan's deployments, retrying retryable failures with backoff, every attempt
        under its provider's deadline and all of them under the call's one deadline
        (gateway.routing.CallDeadline: retries never extend a call). ``call(adapter, served,
        deadline_at)``. A stream is only retried while opening, never once a byte of it could
        have reached the client."""
        state = self.state
        tries = attempts(self.admitted.plan, state.settings.retry_attempts)
        deadline = CallDeadline(state.deadline_s(tries[0].provider))
        for number, served in enumerate(tries, 1):
            self.served = served
            adapter = state.adapters[served.provider]
            started, deadline_at = deadline.attempt_window(state.deadline_s(served.provider))
            spent = False  # this attempt ran into the call's own deadline: nothing is left to retry in
            try:
                try:
                    # asyncio's timeout: it composes with the DisconnectScope around it (both
                    # count their cancellations on the task).
                    async with asyncio.timeout(deadline_at - started):
                        outcome = await call(adapter, served, deadline_at)
                except TimeoutError as error:
                    spent = deadline_at >= deadline.at
                    raise UpstreamTimeout(
                        f"upstream {served.provider} did not answer within its deadline", provider=served.provider
                    ) from error
            except ProviderError as error:
                state.telemetry.upstream_failed(served, error, time.monotonic() - started, number)  # once per failure
                if not error.retryable or number == len(tries):
                    raise
                state.router.failed(served)
                wait_s = backoff_s(number, state.settings.retry_backoff_s)
                if tries[number].provider == served.provider:
                    # The same upstream again: never sooner than it asked (Retry-After); past the
                    # deadline, the client gets the error and the header instead.
                    wait_s = max(wait_s, error.retry_after_s())
                if spent or not deadline.allows_retry_after(wait_s):
                    raise  # the retry would start at or past the call's deadline
                await anyio.sleep(wait_s)
                continue
            self._upstream_s = time.monotonic() - started
            state.router.succeeded(served, self._upstream_s)
            return outcome
        raise AssertionError("attempts() always yields at least one deployment")

    def settlement(
        self,
        usage: Usage,
        *,
        status_code: int,
        error_code: str = "",
        cancelled: bool = False,
        anomaly: str = "",
    ) -> Settlement:
        """The bill for ``usage`` at the serving deployment's price, never above the hold."""
        served = self.served
        assert served.price is not None
        ctx = self.admitted.ctx
        cost = served.price.cost_micro(usage)
        if cost > self.admitted.amount_micro:
            log.warning(
                "request %s: usage %s costs %d micro-credits, more than the %d held; billed at the hold",
                ctx.request_id,
                usage,
                cost,
                self.admitted.amount_micro,
            )
            cost, anomaly = self.admitted.amount_micro, anomaly or USAGE_OVER_HOLD
        return Settlement(
            request_id=ctx.request_id,
            account_id=ctx.identity.account_id,
            key_id=ctx.identity.key_id,
            model=served.slug,
            provider=served.provider,
            upstream_model=served.upstream_model,
            usage=usage,
            cost_micro=cost,
            latency_ms=ctx.latency_ms(),
            status_code=status_code,
            error_code=error_code,
            streamed=self.streamed,
            cancelled=cancelled,
            end_user_id=ctx.end_user_id,
            anomaly=anomaly,
        )

    async def settle(
        self,
        usage: Usage,
        *,
        status_code: int = 200,
        error_code: str = "",
        cancelled: bool = False,
        anomaly: str = "",
    ) -> Settlement:
        """Bill ``usage`` once and release the hold (shielded: a cancelled request still pays
        for what it was served). Returns what was billed."""
        settlement = self.settlement(
            usage, status_code=status_code, error_code=error_code, cancelled=cancelled, anomaly=anomaly
        )
        if self._settled:
            raise AssertionError(f"request {settlement.request_id} settled twice")
        self._settled = True
        if settlement.anomaly:
            self.state.anomalies[settlement.anomaly] += 1
        with shielded():
            await self.state.meter.settle(self.admitted.reservation, settlement)
        self.state.telemetry.finished(  # metrics and access log: once per admitted request
            settlement, self.ctx.identity, self._upstream_s, stream_opened=self._handed_over
        )
        return settlement

    async def checkpoint(self, so_far: Usage) -> None:
        """What a stream has cost so far, billed by the reservation's expiry if this process dies."""
        settlement = self.settlement(so_far, status_code=499, error_code="interrupted", cancelled=True)
        await self.state.meter.checkpoint(self.admitted.reservation, settlement)

    async def settle_failure(self, error: BaseException) -> None:
        """An upstream call that produced nothing billable costs nothing, but is still recorded."""
        cancelled = not isinstance(error, Exception)
        if isinstance(error, GatewayError | ProviderError):
            status, code = error.status_code, error.code
        elif cancelled:
            status, code = 499, "cancelled"
        else:
            log.error("request %s failed inside the pipeline", self.ctx.request_id, exc_info=error)
            status, code = 500, "internal_error"
        await self.settle(Usage(), status_code=status, error_code=code, cancelled=cancelled)


def stream_batches(stream: ChatStream) -> AsyncIterator[list[StreamChunk]]:
    """A stream's chunks grouped as each upstream read brought them (one client write each),
    or one by one for a stream that cannot say."""
    grouped = getattr(stream, "batches", None)
    return grouped() if grouped is not None else _one_by_one(stream)


async def _one_by_one(stream: ChatStream) -> AsyncIterator[list[StreamChunk]]:
    async for chunk in stream:
        yield [chunk]


class StreamEnd:
    """How a metered stream ends, settled exactly once whichever way it ends: the body calls
    :meth:`settle` at its normal end (after :meth:`failed` for an upstream error midway);
    leaving the ``async with`` without it — the client gone (``GeneratorExit``, cancellation:
    499 ``client_disconnected``) or a bug (500 ``internal_error``) — settles what was counted
    so far, shielded, so a dropped stream still pays for what it was served.

    ``billable`` gives the usage to bill and its anomaly (the reported usage, else a count)."""

    def __init__(
        self, call: MeteredCall, stream: ChatStream, billable: Callable[[], Awaitable[tuple[Usage, str]]]
    ) -> None:
        self._call, self._stream, self._billable = call, stream, billable
        self.status_code, self.error_code = 200, ""
        self._settled = False

    def failed(self, error: ProviderError) -> None:
        self.status_code, self.error_code = error.status_code, error.code

    async def settle(self) -> tuple[Usage, Settlement]:
        await self._stream.aclose()
        usage, anomaly = await self._billable()
        self._settled = True
        bill = await self._call.settle(usage, status_code=self.status_code, error_code=self.error_code, anomaly=anomaly)
        return usage, bill

    async def __aenter__(self) -> StreamEnd:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if self._settled:
            return
        cancelled = kind is GeneratorExit or isinstance(error, asyncio.CancelledError)
        if error is not None and not cancelled:
            self.status_code, self.error_code = 500, "internal_error"
        with shielded():
            await self._stream.aclose()
            usage, anomaly = await self._billable()
            await self._call.settle(
                usage,
                status_code=499 if cancelled else self.status_code,
                error_code="client_disconnected" if cancelled else self.error_code,
                cancelled=cancelled,
                anomaly=anomaly,
            )


async def billable_usage(reported: Usage | None, count: Callable[[], Awaitable[Usage]]) -> tuple[Usage, str]:
    """The usage to bill: the upstream's when it sent a believable one, else the gateway's own
    count (flagged when the upstream sent one that could not be believed)."""
    if reported is None:
        return await count(), ""
    if reported.malformed:
        return await count(), MALFORMED_USAGE
    return reported, ""


class DeadlineStream:
    """An upstream stream held to the provider's overall deadline, chunk by chunk.

    One timer per stream, not an ``asyncio.timeout`` entered per upstream read (~30k
    instructions each under uvloop, a handle made and cancelled every read). The timer cancels
    the task only while it is inside a read, as a timeout around the read would: between reads
    the generator has yielded and the task runs the consumer's code (writing to the client,
    a checkpoint), which the deadline must not cancel. A deadline that passes there marks the
    stream expired, and the next read is cancelled when it waits, as ``asyncio.timeout(0)``
    around it would do. A cancellation the timer did not request passes through untouched."""

    def __init__(self, stream: ChatStream, deadline_at: float, provider: str) -> None:
        self._stream = stream
        self._deadline_at = deadline_at
        self._provider = provider
        self._timer: asyncio.TimerHandle | None = None
        self._reading: asyncio.Task[Any] | None = None  # the task inside a read, while it is
        self._expired = False
        self._cancelled_reading = False  # the timer cancelled the read in progress

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._before_deadline(self._stream.__aiter__())

    def batches(self) -> AsyncIterator[list[StreamChunk]]:
        """The chunks grouped by the upstream read that brought them, when the stream can tell
        (:meth:`providers.http.SSEStream.batches`), else one by one; the deadline as above."""
        grouped = getattr(self._stream, "batches", None)
        return self._one_by_one() if grouped is None else self._before_deadline(grouped())

    async def _one_by_one(self) -> AsyncIterator[list[StreamChunk]]:
        async for chunk in self:
            yield [chunk]

    def _on_deadline(self) -> None:
        self._expired = True
        task = self._reading
        if task is not None and not self._cancelled_reading:
            self._cancelled_reading = True
            task.cancel()

    async def _before_deadline(self, items: AsyncIterator[R]) -> AsyncIterator[R]:
        loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + max(0.0, self._deadline_at - time.monotonic()), self._on_deadline)
        try:
            while True:
                task = asyncio.current_task()
                assert task is not None, "read outside a task"
                cancelling = task.cancelling()
                self._reading = task
                if self._expired:
                    loop.call_soon(self._on_deadline)  # cancels this read if it has to wait
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError as error:
                    if self._cancelled_reading:
                        self._cancelled_reading = False
                        if task.uncancel() <= cancelling:  # no other cancellation asked for
                            raise UpstreamTimeout(
                                f"upstream {self._provider} stream passed its deadline", provider=self._provider
                            ) from error
                    raise
                finally:
                    self._reading = None
                    if self._cancelled_reading:  # the read ended some other way: as asyncio.timeout
                        self._cancelled_reading = False
                        task.uncancel()
                yield item
        finally:
            self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def aclose(self) -> None:
        self._stop_timer()
        await self._stream.aclose()


def tollway_meta(
    state: GatewayState,
    ctx: CallContext,
    served: CatalogModel,
    usage: Usage,
    cost_micro: int,
    upstream_model: str = "",
) -> dict[str, Any]:
    """``upstream_model``: the upstream's own name for the model as its answer gave it (the
    answer's ``model`` is the slug the client asked for); the configured name when it gave none."""
    meta: dict[str, Any] = {
        "credits_used": format_credits(cost_micro),
        "cost_usd": micro_to_usd(cost_micro, state.settings.credits_per_usd),
        "model_used": served.slug,
        "upstream_model": upstream_model or served.upstream_model,
        "provider": served.provider,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "latency_ms": ctx.latency_ms(),
        "request_id": ctx.request_id,
    }
    if usage.units:
        meta["units"] = usage.units
    return meta


def refused_settlement(ctx: CallContext, slug: str, error: GatewayError | BillingError | KeyError_) -> Settlement:
    """The usage record of an authenticated request refused before it reached a provider."""
    return Settlement(
        request_id=ctx.request_id,
        account_id=ctx.identity.account_id,
        key_id=ctx.identity.key_id,
        # The model as the client named it, made storable: it may be anything a client sent.
        model=_CONTROL.sub("\ufffd", slug[:200]),
        provider="",
        upstream_model="",
        usage=Usage(),
        cost_micro=0,
        latency_ms=ctx.latency_ms(),
        status_code=error.status_code,
        error_code=error.code,
        end_user_id=ctx.end_user_id,
    )

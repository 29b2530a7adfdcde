"""The ``/fn`` runtime: envmanager.md §4's checks, in its order, then the forwarded call.

Framework-free: the gateway's ASGI route (``gateway/api/function_runtime.py``) reads the request
and writes the answer; the test endpoint (``POST /api/functions/{id}/test/``) calls the same two
methods with a request it was given, skipping only the origin check. Every refusal is an
:class:`Answer` with a JSON body ``{"error": "..."}``; a call that reaches the target is a
:class:`Forwarded` whose body streams through untouched.

=====  =====================================================  ======  =====================
step   condition                                              status  CORS headers
=====  =====================================================  ======  =====================
1      no id after ``/fn/``                                   404     no
2      unknown id, or an extra path the function does not     404     no
       forward
3      ``OPTIONS``: origin allowed → 204, else 403            204/403 204 yes / 403 no
4      ``Content-Length`` over ``function_max_body_bytes``    413     yes
5      function disabled                                      404     yes
6      no ``x-proxy-token``                                   401     yes
7      wrong token (constant time)                            401     yes
8      origin not allowed (none sent: only ``*`` allows it)   403     yes
9      method other than the function's                      405     yes (+ ``Allow``)
9a     extra path refused (``..``, encoded ``/``, …)          400     yes
9b     body over the limit while it streams in (chunked)      413     yes
10     rate limit reached; limiter unavailable (fail closed)  429/503 yes (+ rate headers,
                                                                     ``Retry-After``)
11     a mapping's secret did not resolve                     500     yes
12     the ledger refuses (no credits) / cannot answer        402/503 yes
13     the target is not allowed (SSRF guard)                 502     yes
14     the target cannot be reached                           502     yes
15     no answer within the function's timeout                504     yes
16     the target answered                                    its own yes
=====  =====================================================  ======  =====================

Steps 1–3 and 9b belong to the ASGI layer (they need the raw request); this module does 4–16.
Steps 11 and 12 are envmanager's 13 and 11–12 swapped, so a call whose secrets cannot be
resolved is refused before it is counted. The timeout bounds the wait for the target's answer
(connect, send, headers); once the answer streams, it is an idle timeout per chunk, so a long
SSE stream is not cut while it flows.

Invocation ledger (:mod:`functions.invocations`): ``admit`` once the call passed the rate limit;
``finish`` exactly once for every admitted call, whatever happens (:meth:`Forwarded.close` for a
call that reached the target, here for the others); ``refused`` for a 429 and a 402.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import aiohttp
import httpx
import msgspec

from billing.counters import CounterStoreUnavailable
from billing.errors import BillingError
from billing.shielding import shielded
from functions.config import ResolvedFunction
from functions.egress import EgressRefused, FunctionEgress
from functions.forwarding import Plan, build_body, build_url, clean_extra_path
from functions.invocations import ErrorType, InvocationLedger, InvocationRefused, InvocationTicket
from functions.ratelimit import RateDecision, RateLimiter

__all__ = ["Answer", "Call", "Forwarded", "FunctionRuntime", "error_answer"]

log = logging.getLogger("tollway.functions")

JSON_HEADER = (b"content-type", b"application/json")
REQUEST_ID_HEADER = b"x-request-id"
_PLANS_MAX = 10_000
TIMEOUT_MESSAGE = "Gateway timeout: target API did not respond in time"
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Call:
    """What the runtime needs of one request (headers already picked out by the caller)."""

    method: str
    origin: str | None
    token: str | None
    extra_path: bytes  # raw, percent-encoding kept; b"" for none
    query: bytes  # raw query string; b"" for none
    content_type: str | None
    request_id: str
    check_origin: bool = True  # the test endpoint calls whatever the allowed origins


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer the runtime made itself."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def error_answer(status: int, message: str, headers: list[tuple[bytes, bytes]], **extra: object) -> Answer:
    body = _encode({"error": message, **extra})
    return Answer(status, [JSON_HEADER, (b"content-length", str(len(body)).encode()), *headers], body)


def _rate_headers(decision: RateDecision | None) -> list[tuple[bytes, bytes]]:
    if decision is None:
        return []
    return [
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
        (b"x-ratelimit-reset", str(decision.reset_s).encode()),
    ]


def _timed_out(error: httpx.HTTPError) -> bool:
    # httpx-aiohttp maps a refused connection to ConnectTimeout; the aiohttp cause tells them apart.
    cause = error.__cause__
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return True
    if isinstance(cause, aiohttp.ClientConnectorError):
        return False
    return isinstance(error, httpx.TimeoutException)


class Forwarded:
    """The target's answer: its status, the headers the client gets, and its body as a stream of
    raw chunks. :meth:`close` must be called once the body is done (or abandoned): it closes the
    upstream response and finishes the call in the ledger, once."""

    __slots__ = (
        "_closed",
        "_error_type",
        "_function",
        "_latency_ms",
        "_ledger",
        "_origin",
        "_response",
        "_ticket",
        "content_length",
        "headers",
        "status",
    )

    def __init__(
        self,
        response: httpx.Response,
        headers: list[tuple[bytes, bytes]],
        *,
        function: ResolvedFunction,
        ledger: InvocationLedger | None,
        ticket: InvocationTicket | None,
        latency_ms: int,
        origin: str,
    ) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = headers
        length = response.headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._function = function
        self._ledger = ledger
        self._ticket = ticket
        self._latency_ms = latency_ms
        self._origin = origin
        self._error_type = ErrorType.TARGET_ERROR if self.status >= 500 else ErrorType.NONE
        self._closed = False

    async def raw(self) -> AsyncGenerator[bytes, None]:
        """The body exactly as the target sent it (still encoded). A failure mid-body is raised
        (``httpx.HTTPError``) after noting it for the ledger."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as error:
            self._error_type = ErrorType.TIMEOUT if _timed_out(error) else ErrorType.TARGET_ERROR
            raise

    async def decoded(self) -> AsyncGenerator[bytes, None]:
        """The body with its ``Content-Encoding`` undone (for showing it, as the test endpoint does)."""
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as error:
            self._error_type = ErrorType.TIMEOUT if _timed_out(error) else ErrorType.TARGET_ERROR
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with shielded():
            try:
                await self._response.aclose()
            except httpx.HTTPError:
                pass
            finally:
                if self._ledger is not None and self._ticket is not None:
                    await self._ledger.finish(
                        self._ticket,
                        self._function,
                        status=self.status,
                        latency_ms=self._latency_ms,
                        error_type=self._error_type,
                        origin=self._origin,
                    )


class FunctionRuntime:
    """One per process: the egress transport, the rate limiter and the per-function plans."""

    def __init__(
        self,
        egress: FunctionEgress,
        limiter: RateLimiter,
        *,
        max_body_bytes: int,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._egress = egress
        self._limiter = limiter
        self.max_body_bytes = max_body_bytes
        self._timer = timer
        self._plans: dict[str, Plan] = {}
        limit = "1MB" if max_body_bytes == 1024 * 1024 else f"{max_body_bytes} bytes"
        self.too_large_message = f"Request body too large (max {limit})"

    def plan(self, function: ResolvedFunction) -> Plan:
        """The function worked out for forwarding, rebuilt whenever the directory reloads it."""
        plan = self._plans.get(function.id)
        if plan is None or plan.function is not function:
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            plan = self._plans[function.id] = Plan.of(function, self._egress.policy)
        return plan

    def _cors(self, plan: Plan, call: Call) -> list[tuple[bytes, bytes]]:
        return [(REQUEST_ID_HEADER, call.request_id.encode()), *plan.origins.headers(call.origin)]

    def preflight(self, function: ResolvedFunction, call: Call) -> Answer:
        """Step 3: an ``OPTIONS`` request (even to a disabled function, as envmanager)."""
        plan = self.plan(function)
        if not plan.origins.allows(call.origin):
            return error_answer(403, "Origin not allowed", [(REQUEST_ID_HEADER, call.request_id.encode())])
        return Answer(204, self._cors(plan, call), b"")

    def too_large(self, function: ResolvedFunction, call: Call) -> Answer:
        return error_answer(413, self.too_large_message, self._cors(self.plan(function), call))

    def check(self, function: ResolvedFunction, call: Call, content_length: int | None) -> Answer | None:
        """Steps 4–9a (and 2's extra path, for callers that did not check it), before the body
        is read; None when the call may go on."""
        plan = self.plan(function)
        if call.extra_path and not function.forward_path:  # step 2: as an unknown function
            return error_answer(404, "Not found", [(REQUEST_ID_HEADER, call.request_id.encode())])
        if content_length is not None and content_length > self.max_body_bytes:
            return self.too_large(function, call)
        if not function.enabled:
            return error_answer(404, "Not found", self._cors(plan, call))
        if not call.token:
            return error_answer(401, "Missing x-proxy-token header", self._cors(plan, call))
        if not function.token_matches(call.token):
            return error_answer(401, "Invalid proxy token", self._cors(plan, call))
        if call.check_origin and not plan.origins.allows(call.origin):
            return error_answer(403, "Origin not allowed", self._cors(plan, call))
        expected = function.method.value
        if call.method != expected:
            headers = [*self._cors(plan, call), (b"allow", plan.origins.methods)]
            return error_answer(405, f"Method {call.method} not allowed. Expected {expected}", headers)
        if call.extra_path and clean_extra_path(call.extra_path) is None:
            return error_answer(400, "Invalid path", self._cors(plan, call))
        return None

    async def forward(
        self, function: ResolvedFunction, call: Call, body: bytes, ledger: InvocationLedger | None
    ) -> Answer | Forwarded:
        """Steps 10–16, once :meth:`check` passed and the body is read."""
        plan = self.plan(function)
        headers = self._cors(plan, call)
        decision: RateDecision | None = None
        limit = function.rate_limit_per_minute
        if limit is not None:
            try:
                decision = await self._limiter.hit(function.id, limit)
            except CounterStoreUnavailable:
                log.warning("proxy function %s: the rate limiter is unavailable; refusing (fail closed)", function.id)
                return error_answer(503, "Rate limiter unavailable", headers)
            headers += _rate_headers(decision)
            if not decision.allowed:
                if ledger is not None:
                    await ledger.refused(
                        function,
                        request_id=call.request_id,
                        status=429,
                        error_type=ErrorType.RATE_LIMITED,
                        origin=call.origin or "",
                    )
                headers.append((b"retry-after", str(decision.retry_after_s).encode()))
                return error_answer(429, "Rate limit exceeded", headers, retry_after=decision.retry_after_s)
        if function.unresolved:
            return error_answer(500, "Failed to resolve proxy configuration", headers)
        ticket: InvocationTicket | None = None
        if ledger is not None:
            try:
                ticket = await ledger.admit(function, call.request_id)
            except InvocationRefused:
                await ledger.refused(
                    function,
                    request_id=call.request_id,
                    status=402,
                    error_type=ErrorType.PAYMENT_REQUIRED,
                    origin=call.origin or "",
                )
                return error_answer(402, "Insufficient credits", headers)
            except BillingError as error:
                return error_answer(error.status_code, "Billing unavailable", headers)
        return await self._send(plan, call, body, headers, ledger, ticket)

    async def _send(
        self,
        plan: Plan,
        call: Call,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        ledger: InvocationLedger | None,
        ticket: InvocationTicket | None,
    ) -> Answer | Forwarded:
        function = plan.function
        started = self._timer()
        # Until the target answers, this call is the ledger's to finish here: a refusal, a failure
        # or a cancellation (server shutdown) ends it as "no answer came".
        status, message, error_type = 502, "Failed to reach target API", ErrorType.UNREACHABLE
        answered = False
        try:
            response = await self._request(plan, call, body)
            answered = True
        except EgressRefused as error:
            log.warning("proxy function %s: target refused by the SSRF guard (%s)", function.id, error)
            message = "Target address not allowed"
        except TimeoutError:
            status, message, error_type = 504, TIMEOUT_MESSAGE, ErrorType.TIMEOUT
        except httpx.HTTPError as error:
            if _timed_out(error):
                status, message, error_type = 504, TIMEOUT_MESSAGE, ErrorType.TIMEOUT
            log.info("proxy function %s: target failed (%s)", function.id, type(error).__name__)
        finally:
            if not answered and ledger is not None and ticket is not None:
                with shielded():
                    await ledger.finish(
                        ticket,
                        function,
                        status=status,
                        latency_ms=int((self._timer() - started) * 1000),
                        error_type=error_type,
                        origin=call.origin or "",
                    )
        if not answered:
            return error_answer(status, message, headers)
        forwarded_headers = headers
        content_type = response.headers.get("content-type")
        if content_type is not None:
            forwarded_headers = [(b"content-type", content_type.encode("latin-1")), *headers]
        for name in ("content-encoding", "content-length"):
            value = response.headers.get(name)
            if value is not None:
                forwarded_headers.append((name.encode(), value.encode("latin-1")))
        return Forwarded(
            response,
            forwarded_headers,
            function=function,
            ledger=ledger,
            ticket=ticket,
            latency_ms=int((self._timer() - started) * 1000),
            origin=call.origin or "",
        )

    async def _request(self, plan: Plan, call: Call, body: bytes) -> httpx.Response:
        """Build the upstream request and send it; the answer's headers within the timeout."""
        if plan.refusal is not None:
            raise EgressRefused(plan.refusal)
        upstream = build_body(plan, call.method, body, call.content_type)
        request_headers = list(plan.headers)
        if upstream.content_type is not None and not plan.sets_content_type:
            request_headers.append(("Content-Type", upstream.content_type))
        timeout = plan.function.timeout_s
        request = httpx.Request(
            call.method,
            build_url(plan, call.extra_path, call.query),
            headers=request_headers,
            content=upstream.content,
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
        )
        async with asyncio.timeout(timeout):
            return await self._egress.send(request)

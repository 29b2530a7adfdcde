"""Retries and fallbacks never extend a call past its deadline (issue 14).

The deadline is the first deployment's ``deadline_s``; every attempt ends at its own provider's
deadline or the call's, whichever is first. :class:`CallDeadline`'s arithmetic is checked on an
injected clock; ``MeteredCall.dispatch`` is driven with scripted attempts whose outcomes do not
depend on how fast the machine is (the deadlines each attempt is given, and how many attempts
run, never an elapsed time).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from gateway.catalog import CatalogModel
from gateway.metrics import Telemetry
from gateway.pipeline.metered import Admitted, CallContext, MeteredCall
from gateway.routing import CallDeadline, Router
from gateway.settings import ProviderSettings, Settings
from gateway.state import GatewayState
from providers.base import ProviderHandle
from providers.errors import UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable


class SteppedClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_call_deadline_attempt_windows_end_at_the_call_deadline() -> None:
    clock = SteppedClock()
    deadline = CallDeadline(10.0, clock)
    assert deadline.attempt_window(10.0) == (1000.0, 1010.0)
    clock.now = 1007.0  # the first attempt failed after 7 s
    assert deadline.attempt_window(10.0) == (1007.0, 1010.0)  # 3 s left, not another 10
    assert deadline.attempt_window(1.0) == (1007.0, 1008.0)  # a provider's shorter deadline still holds


def test_call_deadline_refuses_a_retry_whose_backoff_reaches_the_deadline() -> None:
    clock = SteppedClock()
    deadline = CallDeadline(10.0, clock)
    clock.now = 1009.0
    assert deadline.allows_retry_after(0.5)
    assert not deadline.allows_retry_after(1.0)
    clock.now = 1010.0
    assert not deadline.allows_retry_after(0.0)


# --- dispatch -------------------------------------------------------------------------------


class DispatchState:
    """The parts of the gateway state ``dispatch`` reads."""

    def __init__(self, deadlines: dict[str, float], retry_attempts: int) -> None:
        self.settings = Settings(
            retry_attempts=retry_attempts,
            retry_backoff_s=0.001,
            providers={
                name: ProviderSettings(kind="openai", base_url="http://127.0.0.1:9", deadline_s=seconds)
                for name, seconds in deadlines.items()
            },
        )
        self.adapters = {name: cast(ProviderHandle, object()) for name in deadlines}
        self.router = Router(breaker_failures=100, breaker_cooldown_s=1.0)
        self.telemetry = Telemetry()  # metrics off: dispatch reports each failed attempt to it

    def deadline_s(self, provider: str) -> float:
        return self.settings.providers[provider].deadline_s


def _served(provider: str) -> CatalogModel:
    return CatalogModel(
        slug="m/m",
        provider=provider,
        upstream_model="m",
        category="text",
        price=None,
        max_output_tokens=1,
        context_length=1,
    )


def _call(state: DispatchState, providers: list[str]) -> MeteredCall:
    admitted = Admitted(
        ctx=cast(CallContext, None),
        plan=[_served(name) for name in providers],
        reservation=cast(Any, None),  # dispatch never touches the hold
        amount_micro=0,
    )
    return MeteredCall(cast(GatewayState, state), admitted)


class Attempts:
    """Scripted attempts: each entry is "fail" (a fast retryable error), "hang" or "ok"."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.seen: list[tuple[str, float]] = []  # (provider, deadline_at) per attempt

    async def __call__(self, _adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> str:
        self.seen.append((served.provider, deadline_at))
        step = self.script.pop(0)
        if step == "fail":
            raise UpstreamUnavailable("refused", provider=served.provider)
        if step == "hang":
            await asyncio.Event().wait()
        return "answer"


async def test_dispatch_retry_keeps_the_first_attempts_deadline() -> None:
    state = DispatchState({"a": 600.0}, retry_attempts=3)
    attempts = Attempts("fail", "ok")
    assert await _call(state, ["a"]).dispatch(attempts) == "answer"
    (_, first), (_, second) = attempts.seen
    assert second == first  # before: the retry got a fresh 600 s from its own start


async def test_dispatch_fallback_to_a_longer_deadline_keeps_the_calls() -> None:
    state = DispatchState({"a": 600.0, "b": 3600.0}, retry_attempts=2)
    attempts = Attempts("fail", "ok")
    assert await _call(state, ["a", "b"]).dispatch(attempts) == "answer"
    (first_provider, first), (second_provider, second) = attempts.seen
    assert (first_provider, second_provider) == ("a", "b")
    assert second == first  # b's own hour does not extend a's ten minutes


async def test_dispatch_attempt_that_times_out_at_the_call_deadline_is_not_retried() -> None:
    # Three attempts allowed; the first hangs until the call's deadline: no second attempt (before,
    # each retry started its own 0.05 s, three in all).
    state = DispatchState({"a": 0.05, "b": 600.0}, retry_attempts=3)
    attempts = Attempts("hang", "ok", "ok")
    with pytest.raises(UpstreamTimeout):
        await _call(state, ["a", "b"]).dispatch(attempts)
    assert [provider for provider, _ in attempts.seen] == ["a"]


async def test_dispatch_shorter_provider_deadline_still_allows_a_retry() -> None:
    # The call's deadline is a's hour; b times out at its own 0.05 s, well inside it, and the
    # call moves on to a again.
    state = DispatchState({"a": 3600.0, "b": 0.05}, retry_attempts=3)
    attempts = Attempts("fail", "hang", "ok")
    assert await _call(state, ["a", "b"]).dispatch(attempts) == "answer"
    assert [provider for provider, _ in attempts.seen] == ["a", "b", "a"]
    (_, call_deadline), (_, b_deadline), (_, last) = attempts.seen
    assert b_deadline < call_deadline and last == call_deadline


class RateLimited:
    """Attempts answered by an upstream 429 asking for ``retry_after`` seconds, then "ok"."""

    def __init__(self, retry_after: str, failures: int = 1) -> None:
        self.retry_after = retry_after
        self.failures = failures
        self.seen: list[str] = []

    async def __call__(self, _adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> str:
        self.seen.append(served.provider)
        if len(self.seen) <= self.failures:
            error = UpstreamHTTPError("slow down", provider=served.provider, upstream_status=429)
            raise error.passing_on({"retry-after": self.retry_after})
        return "answer"


async def test_dispatch_waits_as_long_as_the_upstreams_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("gateway.pipeline.metered.anyio.sleep", sleep)
    state = DispatchState({"a": 600.0}, retry_attempts=2)
    limited = RateLimited("2")
    assert await _call(state, ["a"]).dispatch(limited) == "answer"
    assert limited.seen == ["a", "a"] and slept == [2.0]  # not the 1 ms backoff


async def test_dispatch_retry_after_past_the_deadline_goes_to_the_client() -> None:
    state = DispatchState({"a": 5.0}, retry_attempts=3)
    limited = RateLimited("30")
    with pytest.raises(UpstreamHTTPError) as refused:
        await _call(state, ["a"]).dispatch(limited)
    assert limited.seen == ["a"] and refused.value.headers == {"Retry-After": "30"}


async def test_dispatch_retry_after_does_not_delay_another_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("gateway.pipeline.metered.anyio.sleep", sleep)
    state = DispatchState({"a": 600.0, "b": 600.0}, retry_attempts=2)
    limited = RateLimited("30")
    assert await _call(state, ["a", "b"]).dispatch(limited) == "answer"
    assert limited.seen == ["a", "b"] and slept and slept[0] < 1

"""Which deployment serves a call: the request's preferences, prices, health and latency.

A slug can have several deployments (provider + upstream model). The request may add
fallback slugs (``models``) and a ``provider`` object in OpenRouter's shape:

    order            providers to try first, in this order
    allow / ignore   only these providers / never these
    allow_fallbacks  false: nothing beyond ``order`` (or the first deployment) is tried
    sort             "price" or "latency" for the rest

A deployment that fails ``breaker_failures`` times in a row with a retryable error is
skipped for ``breaker_cooldown_s`` (a per-process circuit breaker); if every candidate is
cooling down the plan still tries them rather than refuse outright, except when
``allow_fallbacks`` is false, which answers 503. Latency is an exponentially weighted
average of the time to a complete answer (or to the stream's first chunk).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from gateway.catalog import CatalogModel
from gateway.errors import GatewayError

_NAME = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
_LATENCY_WEIGHT = 0.3


class ProviderPreferences(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    order: list[_NAME] | None = None
    allow: list[_NAME] | None = None
    ignore: list[_NAME] | None = None
    allow_fallbacks: bool = True
    sort: Literal["price", "latency"] | None = None


class NoDeploymentAvailable(GatewayError):
    status_code = 503
    type = "api_error"
    code = "no_deployment_available"


@dataclass(slots=True)
class _Health:
    consecutive_failures: int = 0
    open_until: float = 0.0
    latency_s: float | None = None


class Router:
    def __init__(
        self,
        *,
        breaker_failures: int,
        breaker_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._breaker_failures = breaker_failures
        self._cooldown_s = breaker_cooldown_s
        self._clock = clock
        self._health: dict[tuple[str, str], _Health] = {}

    def _of(self, served: CatalogModel) -> _Health:
        key = (served.provider, served.upstream_model)
        health = self._health.get(key)
        if health is None:
            health = self._health[key] = _Health()
        return health

    def cooling_down(self, served: CatalogModel) -> bool:
        return self._of(served).open_until > self._clock()

    def succeeded(self, served: CatalogModel, elapsed_s: float) -> None:
        health = self._of(served)
        health.consecutive_failures = 0
        health.open_until = 0.0
        previous = health.latency_s
        health.latency_s = elapsed_s if previous is None else previous + _LATENCY_WEIGHT * (elapsed_s - previous)

    def failed(self, served: CatalogModel) -> None:
        health = self._of(served)
        health.consecutive_failures += 1
        if health.consecutive_failures >= self._breaker_failures:
            health.open_until = self._clock() + self._cooldown_s

    def plan(self, models: Sequence[CatalogModel], preferences: ProviderPreferences | None) -> list[CatalogModel]:
        """Deployments to try, best first; raises 503 when the preferences leave none usable."""
        prefs = preferences or ProviderPreferences()
        candidates = [
            model.served_by(d)
            for model in models
            for d in model.deployments
            if (prefs.allow is None or d.provider in prefs.allow)
            and (not prefs.ignore or d.provider not in prefs.ignore)
        ]
        if not candidates:
            raise NoDeploymentAvailable("no deployment of the requested models matches the provider preferences")
        order = prefs.order or []
        # Stable sort: within one provider, the requested model comes before its fallbacks.
        preferred = sorted((c for c in candidates if c.provider in order), key=lambda c: order.index(c.provider))
        rest = [c for c in candidates if c.provider not in order]
        if prefs.sort == "price":
            rest.sort(key=_unit_price)
        elif prefs.sort == "latency":
            rest.sort(key=self._latency)
        if not prefs.allow_fallbacks:
            chosen = preferred or candidates[:1]
            healthy = [c for c in chosen if not self.cooling_down(c)]
            if not healthy:
                raise NoDeploymentAvailable(
                    "the requested deployment is unavailable and allow_fallbacks is false", param="provider"
                )
            return healthy
        ranked = preferred + rest
        healthy = [c for c in ranked if not self.cooling_down(c)]
        return healthy or ranked

    def breakers(self) -> list[tuple[str, str, bool, int]]:
        """Each deployment seen so far: provider, upstream model, whether its breaker is open
        (being skipped) and its consecutive failures; read by the metrics at scrape time."""
        now = self._clock()
        return [
            (provider, model, health.open_until > now, health.consecutive_failures)
            for (provider, model), health in list(self._health.items())
        ]

    def _latency(self, served: CatalogModel) -> float:
        latency = self._of(served).latency_s
        return latency if latency is not None else 0.0  # unmeasured first, so it gets measured


def _unit_price(served: CatalogModel) -> int:
    price = served.price
    if price is None:
        return 1 << 62
    return price.worst_case_micro(1_000_000, 1_000_000)


class CallDeadline:
    """One routed call's overall deadline, shared by all its attempts (retries and fallbacks).

    It is the first deployment's ``deadline_s``, counted from the first attempt. Each attempt ends
    at its own provider's deadline or at this one, whichever comes first, so retrying never makes
    a call last longer than a single attempt was allowed to; a retry that would start with no
    time left (or whose backoff would use up the rest) is not made, the last error stands.
    ``at`` is on ``clock``'s scale, the one the pipeline's deadlines use (time.monotonic, as the
    event loop's timers do). A plain slotted class: built once per request on the hot path."""

    __slots__ = ("at", "clock")

    def __init__(self, deadline_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.at = clock() + deadline_s

    def attempt_window(self, deadline_s: float) -> tuple[float, float]:
        """``(started, ends_at)`` for an attempt starting now under its provider's ``deadline_s``."""
        started = self.clock()
        ends_at = started + deadline_s
        return started, ends_at if ends_at < self.at else self.at

    def allows_retry_after(self, wait_s: float) -> bool:
        """Whether an attempt waiting ``wait_s`` first would still start before the deadline."""
        return self.clock() + wait_s < self.at


def attempts(plan: Sequence[CatalogModel], limit: int) -> list[CatalogModel]:
    """``limit`` attempts over the plan in order, cycling when it is shorter (a lone deployment is retried)."""
    return list(itertools.islice(itertools.cycle(plan), limit))


def backoff_s(attempt: int, base_s: float) -> float:
    """Exponential backoff with full jitter: attempt 1 waits up to base, 2 up to 2×base, …"""
    return random.uniform(0, base_s * (2 ** (attempt - 1)))

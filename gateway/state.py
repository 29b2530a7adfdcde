"""Everything a request needs that lives as long as the process: built by the lifespan."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar import Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.counters import CounterStore
from billing.metering import Meter
from billing.payments.provider import PaymentProvider
from functions.directory import FunctionDirectory
from functions.egress import FunctionEgress
from functions.invocations import InvocationLedger
from functions.runtime import FunctionRuntime
from gateway.cache import ResponseStore
from gateway.catalog import CatalogModel, kind_of
from gateway.metrics import Telemetry
from gateway.pipeline.facts import request_facts
from gateway.routing import Router
from gateway.settings import Settings
from keys.browser_tokens import BrowserTokens
from keys.chain import RequestFacts
from keys.restrictions import IPNetwork
from keys.service import KeyResolver
from keys.sessions import SessionService
from providers.base import ProviderHandle
from providers.registry import output_cap_field

if TYPE_CHECKING:
    # maxminddb (and the multiprocessing it imports) only when a country database is configured.
    from gateway.pipeline.geoip import CountryDatabase

DEFAULT_DEADLINE_S = 600.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    counters: CounterStore
    meter: Meter
    keys: KeyResolver
    catalog: dict[str, CatalogModel]
    # Each provider's adapter and what it serves, checked when built (gateway.catalog.build_adapters).
    adapters: dict[str, ProviderHandle]
    tokens: BrowserTokens
    sessions: SessionService
    router: Router
    trusted_proxies: tuple[IPNetwork, ...] = ()
    countries: CountryDatabase | None = None
    # Proxy functions, resolved and cached per process (the /fn hot path reads only this).
    functions: FunctionDirectory | None = None
    # The one outbound transport of every function's calls (SSRF-guarded, functions/egress.py),
    # the runtime that serves /fn with it, and each /fn call logged (and priced) behind the
    # request (functions.ledger); all built in the lifespan.
    function_client: FunctionEgress | None = None
    function_runtime: FunctionRuntime | None = None
    function_calls: InvocationLedger | None = None
    # The process's clocks, read through the state so a test can move time instead of waiting:
    # ``now`` is wall time (sessions, bt- token expiry, periods, webhooks), ``monotonic`` measures
    # durations (the key cache, the balance refresh). create_app wires components to both.
    now: Callable[[], datetime] = field(default=utc_now)
    monotonic: Callable[[], float] = field(default=time.monotonic)
    # Usage anomalies seen by this process (usage over the hold, usage that could not be
    # believed), by kind: each is also flagged on its usage record and logged.
    anomalies: Counter[str] = field(default_factory=Counter)
    # Metrics and the access log of the request path (gateway/metrics.py); built by create_app.
    telemetry: Telemetry = field(default_factory=Telemetry)
    # The payment providers that sell credits and send webhooks, by name (gateway/payment_providers.py).
    payments: dict[str, PaymentProvider] = field(default_factory=dict)
    # The opt-in response cache's store (gateway/cache/, gateway/pipeline/cached.py): Redis when
    # the gateway has one, else the process's embedded store; built in the lifespan.
    responses: ResponseStore | None = None

    def output_cap_field(self, provider: str) -> str:
        """The chat body field that caps output tokens for ``provider`` (its kind's, in the registry)."""
        return output_cap_field(kind_of(self.settings, provider))

    def deadline_s(self, provider: str) -> float:
        configured = self.settings.providers.get(provider)
        return configured.deadline_s if configured is not None else DEFAULT_DEADLINE_S

    def request_facts(self, request: Request[Any, Any, Any]) -> RequestFacts:
        client = request.scope.get("client")
        return request_facts(
            client[0] if client else None,
            request.headers,
            trusted_proxies=self.trusted_proxies,
            country_header=self.settings.country_header.lower(),
            fail_closed_on_unknown_country=self.settings.country_fail_closed,
            country_lookup=self.countries.country_of if self.countries is not None else None,
        )

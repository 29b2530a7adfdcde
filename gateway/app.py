"""The Litestar application factory.

``create_app(settings)`` builds nothing itself: the lifespan opens the database engine, the
counter store and one HTTP client per upstream when the server starts, and closes them when
it stops, so importing this module (or building an app in a test) has no side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec
from litestar import Controller, Litestar
from litestar import Router as Layer
from litestar.exceptions import HTTPException
from litestar.logging.config import LoggingConfig

from billing.counters import build_counter_store
from billing.metering import Meter, settlement_writer
from billing.money import credits_to_micro
from functions.directory import FunctionDirectory
from functions.egress import EgressPolicy, FunctionEgress
from functions.keyfile import load_keyring
from functions.keyops import check_stored_keys
from functions.ledger import FunctionLedger
from functions.ratelimit import RateLimiter
from functions.runtime import FunctionRuntime
from gateway.api.admin import AdminController
from gateway.api.auth import AuthController
from gateway.api.billing import CreditsController, UsageController, WebhooksController
from gateway.api.bodies import StrictBody, path_params_first
from gateway.api.chat import create_chat_completion
from gateway.api.deps import DEPENDENCIES
from gateway.api.function_analytics import FunctionAnalyticsController
from gateway.api.function_code import FunctionCodeController
from gateway.api.function_runtime import FunctionTestController, function_runtime
from gateway.api.functions import FunctionsController
from gateway.api.health import healthz, readyz
from gateway.api.keys import AuditController, KeysController
from gateway.api.members import InvitationsController, MembersController
from gateway.api.messages import count_message_tokens_route, create_message_route
from gateway.api.metrics import get_metrics, metrics_listener
from gateway.api.openapi import V1_AUTH, openapi_config
from gateway.api.payments import PaymentsController, receive_payment_webhook
from gateway.api.projects import EnvironmentsController, ProjectsController, VariablesController
from gateway.api.responses import create_response_handler
from gateway.api.v1 import (
    create_completion,
    create_embeddings,
    create_images,
    create_speech,
    create_transcription,
    create_video,
    get_generation,
    list_models,
    retrieve_model,
    retrieve_video,
    video_content,
)
from gateway.cache import build_response_store
from gateway.catalog import build_adapters, build_catalog
from gateway.collector import settle_heap
from gateway.cors import cors_middleware
from gateway.dashboard import dashboard_routes, template_config
from gateway.dashboard.nav import BILLING_PATH
from gateway.db import create_engine, create_sessionmaker, create_writer_engine
from gateway.errors import (
    DOMAIN_ERRORS,
    handle_domain_error,
    handle_http_exception,
    handle_recursion_error,
    handle_restriction_error,
    handle_unexpected,
    handle_validation_error,
)
from gateway.logs import formatters
from gateway.metrics import Telemetry
from gateway.overload import InFlightLimit
from gateway.payment_providers import build_payment_providers
from gateway.prices import follow_price_changes, reload_catalogue
from gateway.request_id import request_id_middleware
from gateway.routing import Router
from gateway.settings import Settings, load_settings, sqlite_path
from gateway.state import GatewayState
from gateway.webhooks import WebhookWorker, deliver_webhooks
from keys.browser_tokens import BrowserTokens
from keys.restrictions import RestrictionError, parse_networks
from keys.service import KeyResolver
from keys.sessions import SessionService, load_signing_secret

if TYPE_CHECKING:
    from gateway.pipeline.geoip import CountryDatabase

API_CONTROLLERS: list[type[Controller]] = [
    KeysController,
    AuditController,
    MembersController,
    InvitationsController,
    CreditsController,
    UsageController,
    WebhooksController,
    AuthController,
    AdminController,
    FunctionAnalyticsController,
    FunctionsController,
    ProjectsController,
    EnvironmentsController,
    VariablesController,
    FunctionCodeController,
    FunctionTestController,
    PaymentsController,
]

log = logging.getLogger("tollway")

V1_HANDLERS = [
    create_chat_completion,
    create_completion,
    create_embeddings,
    create_images,
    create_speech,
    create_transcription,
    create_video,
    retrieve_video,
    video_content,
    list_models,
    retrieve_model,
    get_generation,
    create_message_route,
    count_message_tokens_route,
    create_response_handler,
]


def create_app(settings: Settings, *, env: Mapping[str, str] | None = None) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        keyring = await asyncio.to_thread(
            load_keyring,
            settings.function_secret_keys,
            settings.function_secret_key_file,
            sqlite_path(settings.database_url),
        )
        if keyring.created_file is not None:
            log.warning(
                "created the secret key file %s for proxy-function secrets: back it up with the "
                "database, without it no stored secret can be opened",
                keyring.created_file,
            )
        try:
            # Encrypted data and no key to open it: refuse to start, never serve empty secrets.
            await check_stored_keys(sessionmaker, keyring.ring)
        except BaseException:
            await engine.dispose()
            raise
        counters = build_counter_store(settings.redis_url, settings.redis_prefix)
        adapters = build_adapters(settings, env)
        countries: CountryDatabase | None = None
        if settings.geoip_database:
            # Here, not at the top: maxminddb's reader is memory a gateway without one need not hold.
            from gateway.pipeline.geoip import CountryDatabase

            countries = CountryDatabase(settings.geoip_database)
        # The components' clocks follow the state's, which tests may replace; read through a plain
        # closure (Litestar's app.state attribute lookup costs microseconds on the hot path).
        built: list[GatewayState] = []

        def now() -> datetime:
            return built[0].now()

        def monotonic() -> float:
            return built[0].monotonic()

        sessions = SessionService(
            sessionmaker,
            counters,
            await load_signing_secret(sessionmaker, settings.session_secret),
            prefix=settings.redis_prefix,
            access_ttl_s=settings.session_ttl_s,
            refresh_ttl_s=settings.session_refresh_ttl_s,
            now=now,
        )
        # The settlement writer's own pool, without a ping per round (None on SQLite: shared).
        writer_engine = create_writer_engine(settings.database_url)
        app.state.gateway = GatewayState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            counters=counters,
            meter=Meter(
                counters,
                engine,
                sessionmaker,
                prefix=settings.redis_prefix,
                refresh_s=settings.balance_refresh_s,
                reservation_ttl_s=settings.reservation_ttl_s,
                claim_idle_s=settings.settlement_claim_idle_s,
                clock=monotonic,
                writer_engine=writer_engine,
            ),
            keys=KeyResolver(sessionmaker, ttl_s=settings.key_cache_ttl_s, clock=monotonic),
            catalog=build_catalog(settings),
            adapters=adapters,
            tokens=BrowserTokens(counters, prefix=settings.redis_prefix, clock=lambda: now().timestamp()),
            sessions=sessions,
            router=Router(breaker_failures=settings.breaker_failures, breaker_cooldown_s=settings.breaker_cooldown_s),
            trusted_proxies=parse_networks(settings.trusted_proxies, strict=False),
            countries=countries,
            functions=FunctionDirectory(
                sessionmaker, keyring.ring, ttl_s=settings.function_cache_ttl_s, clock=monotonic
            ),
            telemetry=Telemetry(
                metrics=settings.metrics,
                access=settings.access_log,
                known_model=lambda slug: slug in built[0].catalog,
            ),
        )
        state: GatewayState = app.state.gateway
        built.append(state)
        state.responses = build_response_store(
            settings.redis_url, max_bytes=settings.response_cache.embedded_max_bytes, clock=monotonic
        )
        state.telemetry.attach(state)
        if settings.otel_traces_endpoint:
            from gateway.tracing import Tracing

            state.telemetry.tracing = Tracing(
                settings.otel_traces_endpoint,
                settings.otel_service_name,
                provider_kind=lambda name: settings.providers[name].kind if name in settings.providers else "",
            )
        state.payments = build_payment_providers(settings, env)
        state.function_client = FunctionEgress(EgressPolicy.from_settings(settings.function_allow_hosts))
        state.function_runtime = FunctionRuntime(
            state.function_client,
            RateLimiter(counters, prefix=settings.redis_prefix, clock=lambda: now().timestamp()),
            max_body_bytes=settings.function_max_body_bytes,
        )
        # Proxy-function calls: logged through the meter's write-behind streams and, when the
        # operator prices them, reserved and settled like any metered call (functions/ledger.py).
        state.function_calls = FunctionLedger(
            state.meter, price_micro=credits_to_micro(settings.function_invocation_credits), now=now
        )
        await reload_catalogue(state)  # the operator's price overrides
        webhooks = WebhookWorker(
            sessionmaker,
            allow_private=settings.webhook_allow_private,
            retry_base_s=settings.webhook_retry_base_s,
            now=now,
            billing_url=settings.public_url.rstrip("/") + BILLING_PATH if settings.public_url else "",
        )
        try:
            async with (
                follow_price_changes(state, counters),
                deliver_webhooks(webhooks, settings.webhook_poll_s),
                settlement_writer(
                    state.meter,
                    scan_s=settings.settlement_scan_s,
                    batch_window_s=settings.settlement_batch_window_s,
                ),
                metrics_listener(state, settings.metrics_bind)
                if settings.metrics and settings.metrics_bind
                else contextlib.nullcontext(),
            ):
                yield
        finally:
            for adapter in adapters.values():
                await adapter.aclose()
            for payment_provider in state.payments.values():
                await payment_provider.aclose()
            await state.function_client.aclose()
            await state.responses.close()
            await counters.close()
            if state.telemetry.tracing is not None:
                await asyncio.to_thread(state.telemetry.tracing.close)  # exports what is buffered
            await engine.dispose()
            if writer_engine is not None:
                await writer_engine.dispose()
            if countries is not None:
                countries.close()

    exception_handlers: dict[type[Exception] | int, object] = {
        error_type: handle_domain_error for error_type in DOMAIN_ERRORS
    }
    exception_handlers[RestrictionError] = handle_restriction_error
    exception_handlers[HTTPException] = handle_http_exception
    exception_handlers[msgspec.ValidationError] = handle_validation_error
    exception_handlers[RecursionError] = handle_recursion_error
    exception_handlers[Exception] = handle_unexpected
    return Litestar(
        route_handlers=[
            Layer(path="/", route_handlers=V1_HANDLERS, security=V1_AUTH, tags=["v1"]),
            # Our own API takes small JSON bodies: one cap for all of it (413 past it), far
            # below the app-wide default that /v1 keeps for prompts and uploads. Handlers
            # declare ``gateway``, ``caller`` (gateway/api/deps.py) and ``data: SomeStruct``,
            # read strictly by StrictBody; answers are Structs, encoded as they are.
            Layer(
                path="/",
                route_handlers=API_CONTROLLERS,
                request_max_body_size=settings.api_max_body_bytes,
                dependencies=DEPENDENCIES,
                dto=StrictBody,
                return_dto=None,
                guards=[path_params_first],
            ),
            # Payment providers' webhooks: public, authenticated by each provider's signature.
            receive_payment_webhook,
            # Proxy functions: public, authenticated by each function's token (a raw ASGI mount).
            function_runtime,
            healthz,
            readyz,
            # Prometheus, behind the operator token (unless metrics_bind serves it elsewhere).
            *([get_metrics] if settings.metrics and not settings.metrics_bind else []),
            # The dashboard's pages at / and its static files (gateway/dashboard/).
            *dashboard_routes(settings),
        ],
        template_config=template_config(),
        lifespan=[lifespan],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        openapi_config=openapi_config(),
        # The request id first, so even CORS-decorated answers carry it.
        middleware=[
            request_id_middleware,
            InFlightLimit(settings.max_in_flight_requests),
            cors_middleware(settings.cors_max_age_s),
        ],
        logging_config=LoggingConfig(
            formatters=formatters(settings.log_format),
            root={"level": settings.log_level.upper(), "handlers": ["queue_listener"]},
            # httpx logs every upstream request at INFO: a formatted line per call on the hot path.
            loggers={"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
            log_exceptions="never",
        ),
        # Every route's ceiling (413 past it, in the OpenAI error shape); /api, chat and /fn
        # keep smaller caps of their own under it.
        request_max_body_size=settings.max_request_body_bytes,
        debug=False,
    )


def serving_app(settings: Settings) -> Litestar:
    """The app a server process runs (not a test's): the collector is tuned once it started."""
    app = create_app(settings)
    app.on_startup.append(settle_heap)
    return app


def app_from_environment() -> Litestar:
    """Factory for server workers: settings come from ``TOLLWAY_CONFIG`` and ``TOLLWAY_*``."""
    return serving_app(load_settings(env=os.environ))

"""What the operator sees of the request path: Prometheus metrics and the access log.

The ``/v1`` pipeline reports to :class:`Telemetry` at three points and nowhere else (nothing
per stream chunk):

    Telemetry.finished(...)        once per admitted request, as its usage record is settled
    Telemetry.refused(...)         once per request refused before it reached a provider
    Telemetry.upstream_failed(...) once per failed upstream attempt (each retry is one)

Each call is a dict lookup and a handful of list increments: the counts live in plain lists
(:class:`CounterValues`, :class:`HistogramValues`), one per label tuple, which the request's
entry in ``Telemetry._children`` (made once per route × model × provider × status) points at
directly; :class:`CountsCollector` turns them into Prometheus families when scraped.
prometheus-client's own ``Counter.inc`` takes a lock and runs checks per call (eight of them
were ~40,000 instructions a request); the event loop is the only writer and the only reader
here, so neither is needed. Labels
are bounded by construction: routes are the ``/v1`` paths, models and providers come from the
catalogue (a refused request's model is named only when it is a catalogue slug), statuses and
codes are class attributes of our errors; never a key id or anything a caller can vary freely.

What needs I/O (settlements buffered for the database, the webhook outbox) is read at scrape
time by :class:`ScrapeCollector`, never on the request path; the scrape gathers those numbers
first (``await Telemetry.gather(state)``) and the collector reports what was gathered.

Several workers: every process counts for itself and answers for itself (prometheus-client's
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, is not supported: its per-process files cost a
write per increment); run one worker per replica and scrape each (README, Operating).
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select

from billing.ledger import Settlement
from billing.models import WebhookDelivery, WebhookEvent
from gateway.request_id import CURRENT
from keys.service import KeyIdentity
from providers.errors import ProviderError

if TYPE_CHECKING:
    from gateway.catalog import CatalogModel
    from gateway.state import GatewayState
    from gateway.tracing import Tracing

__all__ = ["CHAIN_STEPS", "CounterValues", "HistogramValues", "ScrapeCollector", "Telemetry", "render"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
access_log = logging.getLogger("tollway.access")
upstream_log = logging.getLogger("tollway.upstream")

# The security chain's steps (keys/chain.py's table) by the code each refuses with; 10–12 are
# billing's atomic reservation. Any other refusal (a bad body, an unknown model) is "request".
CHAIN_STEPS: Mapping[str, str] = {
    "missing_api_key": "1",
    "account_suspended": "2",
    "invalid_api_key": "3",
    "token_expired": "3",
    "outside_active_hours": "4",
    "ip_not_allowed": "5",
    "country_blocked": "6",
    "origin_not_allowed": "7",
    "model_not_allowed": "8",
    "category_not_allowed": "9",
    "rate_limit_exceeded": "10",
    "spending_limit_exceeded": "11",
    "insufficient_credits": "12",
}
REQUEST_STEP = "request"
# Seconds: from a cache hit to a long generation.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class CounterValues:
    """A labelled counter's values: ``cell(labels)`` is ``[value, created]``, and the hot path
    adds to ``cell[0]`` itself (no lock: only the event loop writes and scrapes)."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.cells: dict[tuple[str, ...], list[float]] = {}

    def cell(self, labels: tuple[str, ...]) -> list[float]:
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = [0, time.time()]
        return cell

    def family(self, created: bool) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (value, since) in list(self.cells.items()):
            family.add_metric(labels, value, created=since if created else None)
        return family


class HistogramValues:
    """A labelled histogram's values: ``cell(labels)`` is one count per bucket (``bounds``, then
    +Inf), the sum, and the creation time. Observing ``v`` is
    ``cell[bisect_left(bounds, v)] += 1; cell[len(bounds) + 1] += v``: ``bisect_left`` puts a
    value equal to a bound in that bound's bucket (Prometheus's ``le``). The count is the buckets'
    total, as prometheus-client reports it."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.bounds = bounds
        self.sum_index = len(bounds) + 1
        self._les = [floatToGoString(b) for b in (*bounds, float("inf"))]  # type: ignore[no-untyped-call]
        self.cells: dict[tuple[str, ...], list[float]] = {}

    def cell(self, labels: tuple[str, ...]) -> list[float]:
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = [0] * self.sum_index + [0.0, time.time()]
        return cell

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        """Off the hot path (tests, rare series); ``Telemetry.finished`` inlines the same."""
        cell = self.cell(labels)
        cell[bisect_left(self.bounds, value)] += 1
        cell[self.sum_index] += value

    def family(self, created: bool) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cell in list(self.cells.items()):
            cumulative, buckets = 0.0, []
            for le, count in zip(self._les, cell, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(labels, buckets, cell[self.sum_index])
            if created:  # prometheus-client's Histogram reports it; HistogramMetricFamily has no argument for it
                family.samples.append(
                    Sample(self.name + "_created", dict(zip(self.labelnames, labels, strict=True)), cell[-1], None)
                )
        return family


class CountsCollector(Collector):
    """The request path's counters and histograms, turned into metric families when scraped."""

    def __init__(self, *series: CounterValues | HistogramValues) -> None:
        self.series = series

    def collect(self) -> Iterable[Metric]:
        # Read per scrape, as prometheus-client does (PROMETHEUS_DISABLE_CREATED_SERIES).
        created = bool(prometheus_metrics._use_created)
        for one in self.series:
            yield one.family(created)


@dataclass(slots=True)
class _Children:
    """One route × model × provider × status's cells, resolved once (the hot path's only lookup)."""

    requests: list[float]
    duration: list[float]
    input_tokens: list[float]
    output_tokens: list[float]
    credits: list[float]
    upstream: list[float]


_SUM = len(_LATENCY_BUCKETS) + 1  # a latency histogram cell's sum (HistogramValues)


class Telemetry:
    """One per process (built with the app); see the module docstring for when it is called."""

    def __init__(
        self, *, metrics: bool = False, access: bool = False, known_model: Callable[[str], bool] = bool
    ) -> None:
        self.enabled = metrics
        self.access = access
        self._known_model = known_model  # the catalogue is rebuilt on price changes: asked each time
        self.collector: ScrapeCollector | None = None
        # OpenTelemetry spans (gateway/tracing.py), when otel_traces_endpoint is set.
        self.tracing: Tracing | None = None
        # This process's holds between reserve and settle (read at scrape time).
        self.open_reservations = 0
        self.registry = CollectorRegistry(auto_describe=True)
        if metrics and os.environ.get(MULTIPROCESS_ENV):
            logging.getLogger("tollway.metrics").warning(
                "%s is set but not used: each process serves its own /metrics (README, Operating)", MULTIPROCESS_ENV
            )
        by_route = ("route", "model", "provider", "status")
        self._requests = CounterValues("tollway_requests", "Requests on the /v1 routes, by outcome.", by_route)
        self._duration = HistogramValues(
            "tollway_request_duration_seconds",
            "Time from the request's admission to its settlement (a stream: to its end).",
            by_route,
            _LATENCY_BUCKETS,
        )
        self._upstream = HistogramValues(
            "tollway_upstream_duration_seconds",
            "Successful upstream calls: time to the answer (a stream: to its opening).",
            ("provider", "model"),
            _LATENCY_BUCKETS,
        )
        self._upstream_errors = CounterValues(
            "tollway_upstream_errors",
            "Failed upstream attempts (each retry counts) and streams broken after they opened.",
            ("provider", "model", "code"),
        )
        self._tokens = CounterValues(
            "tollway_tokens", "Tokens billed, by direction.", ("model", "provider", "direction")
        )
        self._credits = CounterValues("tollway_credits_micro", "Micro-credits billed.", ("model", "provider"))
        self._refusals = CounterValues(
            "tollway_refusals",
            "Requests refused before any provider was called, by security-chain step (keys/chain.py).",
            ("step", "code"),
        )
        self.registry.register(
            CountsCollector(
                self._requests,
                self._duration,
                self._upstream,
                self._upstream_errors,
                self._tokens,
                self._credits,
                self._refusals,
            )
        )
        self._children: dict[tuple[str, str, str, int], _Children] = {}

    def attach(self, state: GatewayState) -> ScrapeCollector:
        """The scrape-time gauges of ``state`` (once, when the app has built it)."""
        self.collector = ScrapeCollector(state)
        self.registry.register(self.collector)
        return self.collector

    def _of(self, route: str, model: str, provider: str, status: int) -> _Children:
        key = (route, model, provider, status)
        children = self._children.get(key)
        if children is None:
            # Every series made at once, as prometheus-client's labels() children were: a refusal
            # shows zero tokens for its model, which the exposition has always had.
            labels = (route, model, provider, str(status))
            children = self._children[key] = _Children(
                self._requests.cell(labels),
                self._duration.cell(labels),
                self._tokens.cell((model, provider, "input")),
                self._tokens.cell((model, provider, "output")),
                self._credits.cell((model, provider)),
                self._upstream.cell((provider, model)),
            )
        return children

    # -- the request path ----------------------------------------------------------------------

    def finished(
        self, settlement: Settlement, identity: KeyIdentity, upstream_s: float | None, *, stream_opened: bool
    ) -> None:
        """An admitted request's usage record is settled (every admitted request, once)."""
        self.open_reservations -= 1
        route, request_id = CURRENT.get()
        request_id = request_id or settlement.request_id
        status = settlement.status_code
        broken = stream_opened and status >= 500
        if self.enabled:
            model, provider = settlement.model, settlement.provider
            # The lookup inlined: the call to _of was ~600 of ~8,400 instructions (callgrind).
            children = self._children.get((route, model, provider, status)) or self._of(route, model, provider, status)
            children.requests[0] += 1
            latency_s = settlement.latency_ms / 1000
            duration = children.duration
            duration[bisect_left(_LATENCY_BUCKETS, latency_s)] += 1  # HistogramValues.observe, inlined
            duration[_SUM] += latency_s
            usage = settlement.usage
            if usage.input_tokens:
                children.input_tokens[0] += usage.input_tokens
            if usage.output_tokens:
                children.output_tokens[0] += usage.output_tokens
            if settlement.cost_micro:
                children.credits[0] += settlement.cost_micro
            if upstream_s is not None:
                upstream = children.upstream
                upstream[bisect_left(_LATENCY_BUCKETS, upstream_s)] += 1
                upstream[_SUM] += upstream_s
            if broken:
                self._upstream_errors.cell((settlement.provider, settlement.model, settlement.error_code))[0] += 1
        if broken:
            upstream_log.warning(
                "upstream stream broke: request_id=%s provider=%s model=%s code=%s status=%d",
                request_id,
                settlement.provider,
                settlement.model,
                settlement.error_code,
                status,
                extra={
                    "event": "upstream_stream_broken",
                    "request_id": request_id,
                    "provider": settlement.provider,
                    "model": settlement.model,
                    "code": settlement.error_code,
                    "status": status,
                },
            )
        if self.access and access_log.isEnabledFor(logging.INFO):
            self._access_line(route, request_id, settlement, identity)
        if self.tracing is not None:
            self.tracing.finished(settlement, route, request_id)

    def refused(self, error: BaseException, identity: KeyIdentity | None, slug: str, started: float) -> None:
        """A request refused before any provider was called (once per such request)."""
        route, request_id = CURRENT.get()
        status = int(getattr(error, "status_code", 500)) if isinstance(error, Exception) else 499
        code = str(getattr(error, "code", "")) or ("cancelled" if status == 499 else "internal_error")
        model = slug if slug and self._known_model(slug) else ""
        latency_s = time.perf_counter() - started
        if self.enabled:
            children = self._of(route, model, "", status)
            children.requests[0] += 1
            duration = children.duration
            duration[bisect_left(_LATENCY_BUCKETS, latency_s)] += 1
            duration[_SUM] += latency_s
            self._refusals.cell((CHAIN_STEPS.get(code, REQUEST_STEP), code))[0] += 1
        if self.tracing is not None:
            self.tracing.refused(status, code, model, route)
        if self.access and access_log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": request_id,
                "route": route,
                "key_prefix": identity.prefix if identity is not None else "",
                "key_id": identity.key_id if identity is not None else None,
                "account_id": identity.account_id if identity is not None else None,
                "model": model,
                "provider": "",
                "status": status,
                "code": code,
                "latency_ms": int(latency_s * 1000),
                "credits_micro": 0,
            }
            access_log.info(_access_text(fields), extra={"event": "request", **fields})

    def upstream_failed(self, served: CatalogModel, error: ProviderError, elapsed_s: float, attempt: int) -> None:
        """One failed upstream attempt (a retry that follows is another attempt)."""
        request_id = CURRENT.get()[1]
        if self.enabled:
            self._upstream_errors.cell((served.provider, served.slug, error.code))[0] += 1
        upstream_log.warning(
            "upstream failure: request_id=%s provider=%s model=%s code=%s status=%d attempt=%d elapsed_ms=%d",
            request_id,
            served.provider,
            served.slug,
            error.code,
            error.status_code,
            attempt,
            int(elapsed_s * 1000),
            extra={
                "event": "upstream_timeout" if error.code == "upstream_timeout" else "upstream_failure",
                "request_id": request_id,
                "provider": served.provider,
                "model": served.slug,
                "code": error.code,
                "status": error.status_code,
                "attempt": attempt,
                "retryable": error.retryable,
                "elapsed_ms": int(elapsed_s * 1000),
            },
        )

    def _access_line(self, route: str, request_id: str, settlement: Settlement, identity: KeyIdentity) -> None:
        fields = {
            "request_id": request_id,
            "record_id": settlement.request_id,
            "route": route,
            "key_prefix": identity.prefix,
            "key_id": identity.key_id,
            "account_id": identity.account_id,
            "model": settlement.model,
            "provider": settlement.provider,
            "status": settlement.status_code,
            "code": settlement.error_code,
            "latency_ms": settlement.latency_ms,
            "input_tokens": settlement.usage.input_tokens,
            "output_tokens": settlement.usage.output_tokens,
            "credits_micro": settlement.cost_micro,
            "streamed": settlement.streamed,
        }
        access_log.info(_access_text(fields), extra={"event": "request", **fields})


def _access_text(fields: Mapping[str, object]) -> str:
    """The access line for text logs (JSON logs use the fields themselves); ``%`` doubled so a
    model name cannot act as a format directive."""
    return "request " + " ".join(f"{k}={v}" for k, v in fields.items()).replace("%", "%%")


# -- scrape time -------------------------------------------------------------------------------


@dataclass(slots=True)
class Gathered:
    """What a scrape read by I/O before rendering (``None``: could not be read)."""

    buffered_settlements: int | None = None
    outbox_events: int | None = None
    outbox_deliveries: int | None = None


class ScrapeCollector(Collector):
    """The gauges of a scrape: the process's state, plus what :meth:`Telemetry.gather` read."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self.gathered = Gathered()

    def collect(self) -> Iterable[Metric]:
        state, gathered = self._state, self.gathered
        yield _gauge(
            "tollway_reservations_open",
            "Credit holds this process took and has not settled.",
            state.telemetry.open_reservations,
        )
        if gathered.buffered_settlements is not None:
            yield _gauge(
                "tollway_settlements_buffered",
                "Settlements buffered in the counter store that the database has not taken yet.",
                gathered.buffered_settlements,
            )
        writer = state.meter.writer
        lag = getattr(writer, "lag_s", None)
        if lag is not None:
            yield _gauge(
                "tollway_settlement_write_lag_seconds",
                "Age of the oldest settlement in the writer's last batch when it reached the database.",
                lag,
            )
        if gathered.outbox_events is not None and gathered.outbox_deliveries is not None:
            outbox = GaugeMetricFamily(
                "tollway_webhook_outbox", "Webhook events not yet fanned out and deliveries pending.", labels=["kind"]
            )
            outbox.add_metric(["events"], gathered.outbox_events)
            outbox.add_metric(["deliveries"], gathered.outbox_deliveries)
            yield outbox
        breakers = GaugeMetricFamily(
            "tollway_breaker_open",
            "1 while a deployment's circuit breaker is open (the router skips it).",
            labels=["provider", "upstream_model"],
        )
        failures = GaugeMetricFamily(
            "tollway_breaker_consecutive_failures",
            "Consecutive retryable failures of a deployment.",
            labels=["provider", "upstream_model"],
        )
        for provider, model, is_open, count in state.router.breakers():
            breakers.add_metric([provider, model], 1.0 if is_open else 0.0)
            failures.add_metric([provider, model], count)
        yield breakers
        yield failures
        anomalies = GaugeMetricFamily(
            "tollway_usage_anomalies", "Usage anomalies this process flagged, by kind.", labels=["kind"]
        )
        for kind, count in sorted(state.anomalies.items()):
            anomalies.add_metric([kind], count)
        yield anomalies


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def gather(state: GatewayState, collector: ScrapeCollector) -> None:
    """Read what the scrape-time gauges need; a store that cannot answer leaves its gauge out."""
    gathered = Gathered()
    try:
        gathered.buffered_settlements = await state.counters.queued_settlements(None)
    except Exception:
        logging.getLogger("tollway.metrics").warning("metrics: the counter store did not answer", exc_info=True)
    try:
        async with state.sessionmaker() as session:
            gathered.outbox_events = await session.scalar(
                select(func.count()).select_from(WebhookEvent).where(WebhookEvent.fanned_out.is_(False))
            )
            gathered.outbox_deliveries = await session.scalar(
                select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "pending")
            )
    except Exception:
        logging.getLogger("tollway.metrics").warning("metrics: the database did not answer", exc_info=True)
    collector.gathered = gathered


async def render(state: GatewayState) -> bytes:
    """The text exposition of one scrape."""
    collector = state.telemetry.collector or state.telemetry.attach(state)
    await gather(state, collector)
    return generate_latest(state.telemetry.registry)

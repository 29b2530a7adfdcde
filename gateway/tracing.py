"""Optional OpenTelemetry traces: one span per ``/v1`` call, named and described by the GenAI
semantic conventions (``gen_ai.*``), exported over OTLP/HTTP.

Off unless ``otel_traces_endpoint`` is set, and then the SDK is imported (never before: a
serving process imports what it uses). A span begins where a call enters the pipeline
(:class:`gateway.pipeline.metered.Admission`), as a child of the caller's ``traceparent`` when
it sent one, and the upstream is sent this span's context instead, so the provider's own spans
nest under it; it ends when the call's usage record is settled or the call is refused
(:class:`gateway.metrics.Telemetry`). Exporting runs in the SDK's batch thread, off the event
loop; ``OTEL_TRACES_SAMPLER`` and the ``OTEL_BSP_*`` variables tune it as the SDK documents.

The span's kind is CLIENT, as the conventions ask of a call to a model: the gateway is the
caller's client of the provider. Its attributes carry no prompt, answer, key or secret: the
model, the provider, the token counts, the status and Tollway's own ids and credits.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from billing.ledger import Settlement
from providers.http import FORWARDED

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

__all__ = ["Tracing", "operation_of"]

#: The span of the call this task serves (set by :meth:`Tracing.begin`).
_CURRENT_SPAN: ContextVar[Span | None] = ContextVar("tollway_span", default=None)

# gen_ai.operation.name by route; anything else that makes content is "generate_content".
_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "chat",
    "/v1/messages": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}

# gen_ai.provider.name for the provider kinds the conventions name; other kinds keep their own.
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
}


def _take_span() -> Span | None:
    """The call's span, once: a second end finds none."""
    span = _CURRENT_SPAN.get()
    if span is not None:
        _CURRENT_SPAN.set(None)
    return span


def operation_of(route: str) -> str:
    return _OPERATIONS.get(route, "generate_content")


class Tracing:
    """The tracer of one app: spans begun per call, ended once with what the call came to."""

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        provider_kind: Callable[[str], str],
        exporter: SpanExporter | None = None,
    ) -> None:
        # Imported here: a gateway without tracing never loads the SDK.
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint)
        self._provider: TracerProvider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("tollway")
        self._propagator = TraceContextTextMapPropagator()
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._in_context = set_span_in_context
        self._provider_kind = provider_kind

    def begin(self, route: str) -> None:
        """A call enters the pipeline: its span begins, and the upstream will be sent its context."""
        forwarded = FORWARDED.get()
        incoming = {name: value for name, value in forwarded if name == "traceparent"}
        parent = self._propagator.extract(incoming) if incoming else None
        operation = operation_of(route)
        span = self._tracer.start_span(
            operation, context=parent, kind=self._client, attributes={"gen_ai.operation.name": operation}
        )
        _CURRENT_SPAN.set(span)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._in_context(span))
        FORWARDED.set([(name, value) for name, value in forwarded if name != "traceparent"] + list(carrier.items()))

    def finished(self, settlement: Settlement, route: str, request_id: str) -> None:
        """The call's usage record is settled: the span ends with what it came to."""
        span = _take_span()
        if span is None:
            return
        span.update_name(f"{operation_of(route)} {settlement.model}")
        usage = settlement.usage
        attributes: dict[str, str | int | bool] = {
            "gen_ai.provider.name": self._provider_name(settlement.provider),
            "gen_ai.request.model": settlement.model,
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "http.response.status_code": settlement.status_code,
            "tollway.provider": settlement.provider,
            "tollway.request_id": settlement.request_id,
            "tollway.correlation_id": request_id,
            "tollway.account_id": settlement.account_id,
            "tollway.credits_micro": settlement.cost_micro,
            "tollway.streamed": settlement.streamed,
        }
        if settlement.upstream_model:
            attributes["gen_ai.response.model"] = settlement.upstream_model
        if settlement.key_id is not None:
            attributes["tollway.key_id"] = settlement.key_id
        self._end(span, attributes, settlement.status_code, settlement.error_code)

    def refused(self, status: int, code: str, model: str, route: str) -> None:
        """The call was refused before a provider was asked (at the door or later)."""
        span = _take_span()
        if span is None:
            return
        attributes: dict[str, str | int | bool] = {"http.response.status_code": status}
        if model:
            attributes["gen_ai.request.model"] = model
            span.update_name(f"{operation_of(route)} {model}")
        self._end(span, attributes, status, code)

    def _end(self, span: Span, attributes: dict[str, str | int | bool], status: int, code: str) -> None:
        span.set_attributes(attributes)
        if status >= 400:
            span.set_attribute("error.type", code or str(status))
        if status >= 500:
            span.set_status(self._error)
        span.end()

    def _provider_name(self, provider: str) -> str:
        kind = self._provider_kind(provider)
        return _PROVIDER_NAMES.get(kind, kind or provider)

    def close(self) -> None:
        """Export what is buffered and stop (blocking: called from a thread)."""
        self._provider.shutdown()

"""OpenTelemetry spans of /v1 calls (gateway/tracing.py): a child of the caller's context, its
own context sent upstream, named and described by the GenAI conventions, ended once."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TypeVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from billing.ledger import Settlement
from gateway.settings import SettingsError, load_settings
from gateway.tracing import Tracing
from providers.base import Usage
from providers.http import FORWARDED

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
CHAT = "/v1/chat/completions"
R = TypeVar("R")


def settlement(status: int = 200, code: str = "") -> Settlement:
    return Settlement(
        request_id="req_own",
        account_id=7,
        key_id=3,
        model="up/claude",
        provider="up",
        upstream_model="claude-sonnet-4-5",
        usage=Usage(input_tokens=12, output_tokens=34),
        cost_micro=5_678,
        latency_ms=40,
        status_code=status,
        error_code=code,
    )


def in_a_request(work: Callable[[], R]) -> R:
    """Each call in a context of its own, as each request's task has."""
    return contextvars.copy_context().run(work)


@pytest.fixture
def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    kinds = {"up": "anthropic", "local": "vllm"}
    endpoint = "http://127.0.0.1:9/v1/traces"  # never reached: the exporter is in memory
    tracing = Tracing(endpoint, "tollway-test", lambda name: kinds.get(name, ""), exporter=exporter)
    return tracing, exporter


def spans(tracing: Tracing, exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    tracing.close()  # exports what the batch processor holds
    return exporter.get_finished_spans()


def test_a_call_is_a_child_of_the_callers_span_and_sends_its_own_upstream(
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = traced

    def call() -> dict[str, str]:
        FORWARDED.set([("x-request-id", "client-1"), ("traceparent", TRACEPARENT)])
        tracing.begin(CHAT)
        sent = dict(FORWARDED.get())
        tracing.finished(settlement(), CHAT, "client-1")
        tracing.finished(settlement(), CHAT, "client-1")  # a second end is no second span
        return sent

    sent = in_a_request(call)
    (span,) = spans(tracing, exporter)
    assert span.name == "chat up/claude" and span.kind is SpanKind.CLIENT
    assert span.context is not None and span.parent is not None
    assert (span.context.trace_id, span.parent.span_id) == (TRACE_ID, PARENT_ID)
    # The provider is sent this span as its parent, the caller's request id unchanged.
    assert sent == {"x-request-id": "client-1", "traceparent": f"00-{TRACE_ID:032x}-{span.context.span_id:016x}-01"}
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "up/claude",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34,
        "http.response.status_code": 200,
        "tollway.provider": "up",
        "tollway.request_id": "req_own",
        "tollway.correlation_id": "client-1",
        "tollway.account_id": 7,
        "tollway.key_id": 3,
        "tollway.credits_micro": 5_678,
        "tollway.streamed": False,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "tollway-test"


def test_without_a_callers_context_the_call_starts_a_trace(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced

    def call() -> dict[str, str]:
        FORWARDED.set([("x-request-id", "req_x")])
        tracing.begin("/v1/embeddings")
        sent = dict(FORWARDED.get())
        tracing.finished(settlement(), "/v1/embeddings", "req_x")
        return sent

    sent = in_a_request(call)
    (span,) = spans(tracing, exporter)
    assert span.parent is None and span.name == "embeddings up/claude"
    assert span.context is not None
    version_trace_span, flags = sent["traceparent"].rsplit("-", 1)
    assert version_trace_span == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"
    assert int(flags, 16) & 1  # sampled (the SDK may add W3C's "random trace id" flag)


def test_failures_and_refusals_are_marked(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced

    def failed() -> None:
        tracing.begin(CHAT)
        tracing.finished(settlement(502, "upstream_error"), CHAT, "r")

    def refused() -> None:
        tracing.begin("/v1/images/generations")
        tracing.refused(401, "invalid_api_key", "", "/v1/images/generations")

    def refused_model() -> None:
        tracing.begin(CHAT)
        tracing.refused(402, "insufficient_credits", "up/claude", CHAT)

    for call in (failed, refused, refused_model):
        in_a_request(call)
    upstream, door, credits = spans(tracing, exporter)
    assert upstream.status.status_code is StatusCode.ERROR
    assert (upstream.attributes or {})["error.type"] == "upstream_error"
    # A refusal is the caller's error, not the gateway's: marked by error.type, status unset.
    assert door.name == "generate_content" and door.status.status_code is StatusCode.UNSET
    assert dict(door.attributes or {}) == {
        "gen_ai.operation.name": "generate_content",
        "http.response.status_code": 401,
        "error.type": "invalid_api_key",
    }
    assert credits.name == "chat up/claude" and (credits.attributes or {})["error.type"] == "insufficient_credits"


def test_a_provider_kind_outside_the_conventions_names_itself(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced

    def call() -> None:
        tracing.begin(CHAT)
        tracing.finished(
            Settlement(
                request_id="r",
                account_id=1,
                key_id=None,
                model="local/llama",
                provider="local",
                upstream_model="",
                usage=Usage(),
                cost_micro=0,
                latency_ms=1,
                status_code=200,
            ),
            CHAT,
            "r",
        )

    in_a_request(call)
    (span,) = spans(tracing, exporter)
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.provider.name"] == "vllm"
    assert "gen_ai.response.model" not in attributes and "tollway.key_id" not in attributes


def test_an_end_without_a_beginning_is_nothing(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    in_a_request(lambda: tracing.finished(settlement(), CHAT, "r"))
    in_a_request(lambda: tracing.refused(401, "missing_api_key", "", CHAT))
    assert spans(tracing, exporter) == ()


@pytest.mark.parametrize("endpoint", ["collector:4318", "ftp://collector/v1/traces", "http:///v1/traces"])
def test_a_bad_endpoint_is_refused_without_echoing_it(endpoint: str) -> None:
    with pytest.raises(SettingsError, match="otel_traces_endpoint") as refused:
        load_settings(env={"TOLLWAY_OTEL_TRACES_ENDPOINT": endpoint})
    assert endpoint not in str(refused.value)

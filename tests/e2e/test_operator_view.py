"""What an operator sees: /metrics moves by exactly what was served, the access log's JSON
fields (and no secret in any line), and request ids / trace context kept and forwarded."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import JsonFormatter
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import free_port

CHAT = "/v1/chat/completions"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[Sample, float]:
    response = httpx.get(url, headers=OPERATOR if headers is None else headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(before: dict[Sample, float], after: dict[Sample, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in after, f"no sample {key}"
    return after[key] - before.get(key, 0.0)


def chat(
    gateway: Gateway, *, key: str | None = None, stream: bool = False, headers: dict[str, str] | None = None
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key or gateway.key}"} if key != "" else {}
    body: dict[str, Any] = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(gateway.v1 + "/chat/completions", json=body, headers={**auth, **(headers or {})}, timeout=10)


def test_metrics_counters_move_by_exactly_what_was_served(gateway: Gateway) -> None:
    before = scrape(gateway.url + "/metrics")
    assert [chat(gateway).status_code for _ in range(2)] == [200, 200]
    streamed = chat(gateway, stream=True)
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    gateway.fake.fail_status, gateway.fake.fail_times = 400, 1  # not retryable: one failed attempt
    failed = chat(gateway)
    assert failed.status_code >= 400
    failed_code = failed.json()["error"]["code"]
    assert chat(gateway, key="prx-" + "0" * 48).status_code == 401  # chain step 3
    assert chat(gateway, key="").status_code == 401  # chain step 1
    gateway.settled()
    after = scrape(gateway.url + "/metrics")

    served = {"route": CHAT, "model": FAKE_MODEL, "provider": "fake"}
    refused = {"route": CHAT, "model": "", "provider": ""}
    assert moved(before, after, "tollway_requests_total", **served, status="200") == 3
    assert moved(before, after, "tollway_requests_total", **served, status=str(failed.status_code)) == 1
    assert moved(before, after, "tollway_requests_total", **refused, status="401") == 2
    assert moved(before, after, "tollway_request_duration_seconds_count", **served, status="200") == 3
    assert moved(before, after, "tollway_refusals_total", step="3", code="invalid_api_key") == 1
    assert moved(before, after, "tollway_refusals_total", step="1", code="missing_api_key") == 1
    upstream = {"provider": "fake", "model": FAKE_MODEL}
    assert moved(before, after, "tollway_upstream_errors_total", **upstream, code=failed_code) == 1
    assert moved(before, after, "tollway_upstream_duration_seconds_count", **upstream) == 3
    # Tokens and credits: exactly what the usage records of these requests say.
    records = [r for r in gateway.usage_records() if r.status_code == 200]
    assert len(records) == 3
    billed = {"model": FAKE_MODEL, "provider": "fake"}
    assert moved(before, after, "tollway_tokens_total", **billed, direction="input") == sum(
        r.input_tokens for r in records
    )
    assert moved(before, after, "tollway_tokens_total", **billed, direction="output") == sum(
        r.output_tokens for r in records
    )
    assert moved(before, after, "tollway_credits_micro_total", **billed) == sum(r.credits_micro for r in records)
    # Scrape-time gauges: nothing held or queued once every request is settled and written.
    assert after[("tollway_reservations_open", ())] == 0
    assert after[("tollway_settlements_buffered", ())] == 0
    assert after[("tollway_webhook_outbox", (("kind", "deliveries"),))] == 0
    assert after[("tollway_breaker_open", (("provider", "fake"), ("upstream_model", "gpt-4o-mini")))] == 0


def test_metrics_refused_without_the_operator_token(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    assert httpx.get(gateway.url + "/metrics", headers={"Authorization": f"Bearer {gateway.key}"}).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * len(ADMIN_TOKEN)}
    response = httpx.get(gateway.url + "/metrics", headers=wrong)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_token"


def test_metrics_bind_serves_metrics_on_its_own_listener(backend: Backend, fake_openai: FakeOpenAI) -> None:
    port = free_port()
    settings = gateway_settings(backend, fake_openai, metrics_bind=f"127.0.0.1:{port}")
    gw, server = start_gateway(settings, fake_openai)
    try:
        assert chat(gw).status_code == 200
        samples = scrape(f"http://127.0.0.1:{port}/metrics", headers={})
        served = {"route": CHAT, "model": FAKE_MODEL, "provider": "fake", "status": "200"}
        assert samples[("tollway_requests_total", tuple(sorted(served.items())))] == 1
        assert httpx.get(f"http://127.0.0.1:{port}/other").status_code == 404
        # Not on the main port then, not even with the token.
        assert httpx.get(gw.url + "/metrics", headers=OPERATOR).status_code == 404
    finally:
        server.stop()


class _Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_gateway(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, _Lines]]:
    settings = gateway_settings(backend, fake_openai, log_format="json", access_log=True)
    gw, server = start_gateway(settings, fake_openai)
    # The formatter the app configured on its own handlers, fed every record of the run.
    (formatter,) = {h.formatter for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)}
    lines = _Lines(formatter)
    logging.getLogger().addHandler(lines)
    try:
        yield gw, lines
    finally:
        logging.getLogger().removeHandler(lines)
        server.stop()


def test_json_access_log_line_has_the_request_fields_and_no_secret(json_gateway: tuple[Gateway, _Lines]) -> None:
    gateway, lines = json_gateway
    parent = httpx.post(
        gateway.url + "/api/keys/", json={"name": "parent"}, headers={"Authorization": f"Bearer {gateway.key}"}
    )
    assert parent.status_code == 201, parent.text
    minted = httpx.post(
        gateway.url + "/api/keys/ephemeral/",
        json={"key_id": parent.json()["id"], "ttl": 60},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    token = minted.json()["data"]["token"]
    assert token.startswith("bt-")
    ok = chat(gateway, headers={"X-Request-Id": "client-req-1"})
    assert ok.status_code == 200
    assert chat(gateway, key=token).status_code == 200
    gateway.fake.fail_status, gateway.fake.fail_times = 500, 3  # every attempt fails: three lines
    assert chat(gateway).status_code == 502
    assert chat(gateway, key=gateway.key[:-4] + "0000").status_code == 401

    records = [json.loads(line) for line in lines.lines]
    access = [r for r in records if r["logger"] == "tollway.access"]
    first = next(r for r in access if r["request_id"] == "client-req-1")
    assert first["record_id"] == ok.headers["x-tollway-request-id"]
    assert first["key_prefix"] == gateway.key[:8]
    assert first["account_id"] == gateway.account_id
    assert (first["model"], first["provider"], first["status"], first["route"]) == (FAKE_MODEL, "fake", 200, CHAT)
    assert first["credits_micro"] > 0 and first["latency_ms"] >= 0 and first["input_tokens"] > 0
    assert {"ts", "level", "message"} <= set(first)
    assert sorted(r["status"] for r in access) == [200, 200, 401, 502]
    failures = [r for r in records if r["logger"] == "tollway.upstream"]
    assert [f["attempt"] for f in failures] == [1, 2, 3]
    assert {f["event"] for f in failures} == {"upstream_failure"}
    # No secret in any line: the key, the bt- token, the upstream's key, the operator token.
    everything = "\n".join(lines.lines)
    for secret in (gateway.key, token, gateway.fake.api_key, ADMIN_TOKEN, gateway.key[8:], token[7:]):
        assert secret not in everything


def test_request_id_and_traceparent_kept_and_forwarded(gateway: Gateway) -> None:
    answer = chat(gateway, headers={"X-Request-Id": "order-42/attempt-1", "traceparent": TRACEPARENT})
    assert answer.status_code == 200
    sent = gateway.fake.received[-1].headers
    assert sent["x-request-id"] == "order-42/attempt-1" == answer.headers["x-request-id"]
    assert sent["traceparent"] == TRACEPARENT
    own = answer.headers["x-tollway-request-id"]
    assert own.startswith("req_") and answer.json()["_tollway"]["request_id"] == own

    streamed = chat(gateway, stream=True, headers={"X-Request-Id": "stream-7", "traceparent": TRACEPARENT})
    assert streamed.headers["x-request-id"] == "stream-7" == gateway.fake.received[-1].headers["x-request-id"]

    # Without one, the gateway's own id goes up and comes back; nothing invented for traceparent.
    plain = chat(gateway)
    assert gateway.fake.received[-1].headers["x-request-id"] == plain.headers["x-request-id"]
    assert plain.headers["x-request-id"].startswith("req_") and "traceparent" not in gateway.fake.received[-1].headers

    # Malformed ones are replaced (the id) or dropped (the trace context).
    for bad in ("has space", "x" * 129, "tab\there"):
        odd = chat(gateway, headers={"X-Request-Id": bad, "traceparent": "00-zz-00-01"})
        assert odd.headers["x-request-id"].startswith("req_")
        assert gateway.fake.received[-1].headers["x-request-id"] == odd.headers["x-request-id"]
        assert "traceparent" not in gateway.fake.received[-1].headers

    # A refusal names the caller's id too.
    refused = chat(gateway, key="prx-" + "0" * 48, headers={"X-Request-Id": "refused-1"})
    assert (refused.status_code, refused.headers["x-request-id"]) == (401, "refused-1")


def test_replayed_request_id_is_billed_every_time(gateway: Gateway) -> None:
    """The caller's id is for correlation only: reusing it never makes a settlement a duplicate."""
    first = chat(gateway, headers={"X-Request-Id": "same"})
    second = chat(gateway, headers={"X-Request-Id": "same"})
    own = {first.headers["x-tollway-request-id"], second.headers["x-tollway-request-id"]}
    assert len(own) == 2
    debits = gateway.debit_counts()
    assert all(debits.get(request_id) == 1 for request_id in own)


class _Collector:
    """An OTLP/HTTP traces receiver on loopback: keeps every span it is sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        received: list[Any] = []
        self.spans = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest.FromString(body)
                for resource in export.resource_spans:
                    for scope in resource.scope_spans:
                        received.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _attributes(span: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def test_traces_reach_the_collector_with_the_genai_attributes(backend: Backend, fake_openai: FakeOpenAI) -> None:
    collector = _Collector()
    settings = gateway_settings(backend, fake_openai, otel_traces_endpoint=collector.url)
    gw, server = start_gateway(settings, fake_openai)
    try:
        answer = chat(gw, headers={"traceparent": TRACEPARENT, "X-Request-Id": "traced-1"})
        assert answer.status_code == 200
        sent = gw.fake.received[-1].headers["traceparent"]
        streamed = chat(gw, stream=True)
        assert streamed.status_code == 200
        assert chat(gw, key="prx-" + "0" * 48).status_code == 401
        gw.settled()
        records = {r.request_id: r for r in gw.usage_records()}
    finally:
        server.stop()  # the app's shutdown exports what the batch processor holds
        collector.server.shutdown()
    spans = {_attributes(s).get("tollway.request_id", "refused"): s for s in collector.spans}
    assert len(collector.spans) == 3 and len(spans) == 3

    traced = spans[answer.headers["x-tollway-request-id"]]
    attributes = _attributes(traced)
    record = records[answer.headers["x-tollway-request-id"]]
    assert traced.name == f"chat {FAKE_MODEL}"
    assert (
        traced.trace_id.hex() == TRACEPARENT.split("-")[1] and traced.parent_span_id.hex() == TRACEPARENT.split("-")[2]
    )
    # The upstream was sent the gateway's span as its parent.
    assert sent.split("-")[1:3] == [traced.trace_id.hex(), traced.span_id.hex()]
    assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == FAKE_MODEL
    assert attributes["gen_ai.usage.input_tokens"] == record.input_tokens > 0
    assert attributes["gen_ai.usage.output_tokens"] == record.output_tokens > 0
    assert (
        attributes["tollway.credits_micro"] == record.credits_micro
        and attributes["tollway.correlation_id"] == "traced-1"
    )
    # Without a caller's id, Tollway's own is the one answered.
    assert _attributes(spans[streamed.headers["x-request-id"]])["tollway.streamed"] is True
    refused = _attributes(spans["refused"])
    assert (refused["http.response.status_code"], refused["error.type"]) == (401, "invalid_api_key")
    # Nothing secret went to the collector: not the key, not the upstream's key.
    everything = b"".join(s.SerializeToString() for s in collector.spans)
    assert gw.key.encode() not in everything and gw.fake.api_key.encode() not in everything

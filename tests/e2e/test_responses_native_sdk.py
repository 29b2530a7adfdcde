"""``client.responses.create`` (the official ``openai`` package) against a gateway whose provider
serves the Responses API itself (``responses_api = true``): the body is passed through to the
upstream's ``/v1/responses`` (never translated to chat), billed at the usage it reports, once."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.settings import ProviderSettings, Settings
from tests.fakes.gateway_fixtures import (
    FAKE_MODEL,
    Backend,
    Gateway,
    expected_cost_micro,
    gateway_settings,
    start_gateway,
)
from tests.fakes.openai_upstream import FakeOpenAI

OPENING = 500_000_000
GOLDEN_TEXT = "Hello! How can I assist you today?"
STREAM_TEXT = "Héllo 👋"  # the golden stream's deltas, joined
# The fake's usage (tests/golden/responses/response_text.responses.json): 19 in (4 cached), 10 out.
GOLDEN_COST = expected_cost_micro(prompt=19, completion=10, cached=4)


def _native_settings(backend: Backend, fake_openai: FakeOpenAI) -> Settings:
    base = gateway_settings(backend, fake_openai)
    provider = base.providers["fake"]
    native = ProviderSettings(
        kind="openai", base_url=provider.base_url, api_key=provider.api_key, read_timeout_s=5.0, responses_api=True
    )
    return gateway_settings(backend, fake_openai, providers={"fake": native})


@pytest.fixture
def native(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    gateway, server = start_gateway(_native_settings(backend, fake_openai), fake_openai)
    try:
        yield gateway
    finally:
        server.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)


def _billed_once(gateway: Gateway, expected: int) -> None:
    (record,) = gateway.usage_records()
    assert record.credits_micro == expected
    assert gateway.debit_count(record.request_id) == 1
    assert gateway.balance_micro() == OPENING - expected


def test_native_plain_is_passed_through_and_billed_exactly(native: Gateway) -> None:
    raw = sdk(native).responses.with_raw_response.create(
        model=FAKE_MODEL,
        input="Say hello",
        instructions="Be brief.",
        metadata={"team": "a"},
        max_output_tokens=100,
        store=True,
    )
    response = raw.parse()
    assert response.output_text == GOLDEN_TEXT
    assert response.model == FAKE_MODEL and response.status == "completed"
    assert response.usage is not None and response.usage.input_tokens == 19
    meta = response.model_extra["_tollway"]  # type: ignore[index]
    assert meta["request_id"] == raw.headers["x-request-id"] and meta["upstream_model"] == "gpt-4o-mini"
    assert meta["credits_used"] == raw.headers["x-tollway-credits-used"]
    (received,) = native.fake.received
    assert received.path == "/v1/responses"
    sent = received.body
    assert "messages" not in sent and sent["input"] == "Say hello" and sent["instructions"] == "Be brief."
    assert sent["model"] == "gpt-4o-mini" and sent["store"] is False and sent["max_output_tokens"] == 100
    assert sent["metadata"] == {"team": "a"}
    _billed_once(native, GOLDEN_COST)


def test_native_output_is_capped_at_what_was_reserved(native: Gateway) -> None:
    sdk(native).responses.create(model=FAKE_MODEL, input=[{"role": "user", "content": "hi"}])
    assert native.fake.received[-1].body["max_output_tokens"] == 16384  # the model's maximum, reserved
    _billed_once(native, GOLDEN_COST)


def test_native_without_usage_bills_the_count(native: Gateway) -> None:
    native.fake.omit_usage = True
    response = sdk(native).responses.create(model=FAKE_MODEL, input="Say hello")
    meta = response.model_extra["_tollway"]  # type: ignore[index]
    assert meta["input_tokens"] > 0 and meta["output_tokens"] > 0
    (record,) = native.usage_records()
    assert record.credits_micro == expected_cost_micro(prompt=meta["input_tokens"], completion=meta["output_tokens"])
    _billed_once(native, record.credits_micro)


def test_native_lying_usage_is_not_believed(native: Gateway) -> None:
    native.fake.usage_override = {"input_tokens": -5, "output_tokens": 2**70}
    response = sdk(native).responses.create(model=FAKE_MODEL, input="Say hello")
    (record,) = native.usage_records()
    assert record.anomaly == "malformed_usage" and record.credits_micro > 0
    assert response.model_extra["_tollway"]["output_tokens"] < 100  # type: ignore[index]
    _billed_once(native, record.credits_micro)


def test_native_stream_forwards_events_and_bills_final_usage(native: Gateway) -> None:
    events = list(sdk(native).responses.create(model=FAKE_MODEL, input="Say hello", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == STREAM_TEXT
    assert events[0].type == "response.created" and events[0].response.model == FAKE_MODEL
    final = events[-1]
    assert final.type == "response.completed" and final.response.model == FAKE_MODEL
    meta = final.response.model_extra["_tollway"]  # type: ignore[index]
    assert meta["input_tokens"] == 19 and meta["output_tokens"] == 10
    sent = native.fake.received[-1].body
    assert sent["stream"] is True and "stream_options" not in sent and "messages" not in sent
    _billed_once(native, GOLDEN_COST)
    (record,) = native.usage_records()
    assert record.streamed and not record.cancelled and record.status_code == 200


def test_native_stream_upstream_break_ends_with_error_and_settles_once(native: Gateway) -> None:
    native.fake.stream_error_after = 6
    events = list(sdk(native).responses.create(model=FAKE_MODEL, input="Say hello", stream=True))
    last = events[-1]
    assert last.type == "error" and "request id" in last.message
    assert "response.completed" not in [e.type for e in events]
    (record,) = native.usage_records()
    assert record.status_code == 502 and record.streamed and record.credits_micro > 0
    _billed_once(native, record.credits_micro)


def test_native_stream_dropped_by_the_client_settles_once(native: Gateway) -> None:
    native.fake.chunk_delay_s = 0.2
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            native.v1 + "/responses",
            json={"model": FAKE_MODEL, "input": "count", "stream": True},
            headers={"Authorization": f"Bearer {native.key}"},
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: response.output_item.added"):
                break  # leaving the block closes the connection mid-stream
    (record,) = native.awaited_usage_records()
    assert record.cancelled and record.status_code == 499 and record.streamed
    _billed_once(native, record.credits_micro)


BAD = [
    ({"model": FAKE_MODEL, "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": FAKE_MODEL, "input": "hi", "background": True}, "background"),
    ({"model": FAKE_MODEL, "input": "hi", "conversation": "conv_1"}, "conversation"),
    ({"model": FAKE_MODEL, "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": FAKE_MODEL, "input": "hi", "max_output_tokens": 2**63}, "max_output_tokens"),
    ({"model": FAKE_MODEL, "input": []}, "input"),
    ({"model": FAKE_MODEL}, "input"),
]


def test_native_bad_requests_are_400_before_the_upstream(native: Gateway) -> None:
    for body, param in BAD:
        response = httpx.post(native.v1 + "/responses", json=body, headers={"Authorization": f"Bearer {native.key}"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["type"]) == (param, "invalid_request_error"), body
    assert native.fake.received == []
    assert [(r.status_code, r.credits_micro) for r in native.usage_records()] == [(400, 0)] * len(BAD)
    assert native.balance_micro() == OPENING


def test_native_output_is_fitted_to_the_balance(backend: Backend, fake_openai: FakeOpenAI) -> None:
    """One credit holds about 1,600 output tokens at this price, not the model's 16,384: without a
    cap the output is lowered to what fits, sent upstream and named in X-Tollway-Max-Tokens."""
    gateway, server = start_gateway(_native_settings(backend, fake_openai), fake_openai, credits_micro=1_000_000)
    try:
        raw = sdk(gateway).responses.with_raw_response.create(model=FAKE_MODEL, input="Say hello")
        fitted = int(raw.headers["x-tollway-max-tokens"])
        assert 1 <= fitted < 16384 and fake_openai.received[-1].body["max_output_tokens"] == fitted
        (record,) = gateway.usage_records()
        assert record.credits_micro == GOLDEN_COST and gateway.debit_count(record.request_id) == 1
        assert gateway.balance_micro() == 1_000_000 - GOLDEN_COST
    finally:
        server.stop()

"""The official ``anthropic`` client against a real gateway's ``/v1/messages``, on both backends,
routed to the OpenAI-compatible, Anthropic and Gemini fakes: answers, tool use, streams, errors,
and money to the micro-credit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, ToolParam

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gateway_fixtures import (
    FAKE_MODEL,
    Backend,
    Gateway,
    expected_cost_micro,
    gateway_settings,
    start_gateway,
)
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.provider_kinds import CLAUDE, GEMINI, gateway_with_every_kind

OPENING = 500_000_000

WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
HELLO: list[MessageParam] = [{"role": "user", "content": "Say hello"}]


def sdk(gateway: Gateway, **kwargs: object) -> anthropic.Anthropic:
    options: dict[str, object] = {"api_key": gateway.key, **kwargs}
    return anthropic.Anthropic(base_url=gateway.url, max_retries=0, **options)  # type: ignore[arg-type]


def _micro(tokens: int, usd_per_mtok: str) -> int:
    return int(tokens * Decimal(usd_per_mtok) * 1000)


@pytest.fixture
def kinds(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, FakeAnthropic, FakeGemini]]:
    with gateway_with_every_kind(backend, fake_openai) as (claude_gateway, claude, gemini):
        yield claude_gateway, claude, gemini


# ---------------------------------------------------------------- the OpenAI-compatible fake


def test_messages_create_debits_exact_usage(gateway: Gateway) -> None:
    raw = sdk(gateway).messages.with_raw_response.create(
        model=FAKE_MODEL, max_tokens=100, system="Be brief.", messages=HELLO, metadata={"user_id": "end-user-7"}
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == FAKE_MODEL
    assert message.id.startswith("msg_")
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Hello from the fake upstream")]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 5)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (0, 0)
    assert message.model_extra is not None and message.model_extra["_tollway"]["credits_used"] == "0.00615"
    assert gateway.balance_micro() == OPENING - expected_cost_micro(21, 5)
    (record,) = gateway.usage_records()
    assert record.request_id == raw.headers["x-request-id"] and record.status_code == 200
    assert record.end_user_id == "end-user-7"
    sent = gateway.fake.received[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert sent["max_completion_tokens"] == 100 and "user" not in sent


def test_messages_cache_reads_leave_input_tokens(gateway: Gateway) -> None:
    gateway.fake.cached_tokens = 16
    message = sdk(gateway).messages.create(model=FAKE_MODEL, max_tokens=50, messages=HELLO)
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (21 - 16, 16)
    assert gateway.balance_micro() == OPENING - expected_cost_micro(21, 5, cached=16)


def test_messages_stream_debits_usage(gateway: Gateway) -> None:
    with sdk(gateway).messages.stream(model=FAKE_MODEL, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake upstream"
    assert final.stop_reason == "end_turn" and final.model == FAKE_MODEL
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 5)
    assert gateway.fake.received[-1].body["stream_options"] == {"include_usage": True}
    (record,) = gateway.usage_records()
    assert record.streamed and not record.cancelled and record.credits_micro == expected_cost_micro(21, 5)
    assert gateway.balance_micro() == OPENING - expected_cost_micro(21, 5)


def test_messages_stream_wire_events_in_order(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": FAKE_MODEL, "max_tokens": 20, "messages": HELLO, "stream": True},
        headers={"x-api-key": gateway.key, "anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    kinds = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    assert kinds[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_messages_bearer_and_x_api_key_both_work(gateway: Gateway) -> None:
    by_bearer = anthropic.Anthropic(base_url=gateway.url, auth_token=gateway.key, max_retries=0)
    assert by_bearer.messages.create(model=FAKE_MODEL, max_tokens=10, messages=HELLO).content
    assert sdk(gateway).messages.create(model=FAKE_MODEL, max_tokens=10, messages=HELLO).content
    assert len(gateway.usage_records()) == 2


def test_messages_bad_key_is_authentication_error(gateway: Gateway) -> None:
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="prx-" + "0" * 48, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model=FAKE_MODEL, max_tokens=10, messages=HELLO)
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert gateway.fake.received == [] and gateway.usage_records() == []


def test_messages_missing_key_is_401_in_anthropic_shape(gateway: Gateway) -> None:
    response = httpx.post(gateway.url + "/v1/messages", json={"model": FAKE_MODEL, "messages": HELLO})
    assert response.status_code == 401
    assert set(response.json()) == {"type", "error", "request_id"}
    assert set(response.json()["error"]) == {"type", "message"}


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"model": FAKE_MODEL, "messages": HELLO}, 400, "invalid_request_error"),  # no max_tokens
        ({"model": FAKE_MODEL, "max_tokens": 0, "messages": HELLO}, 400, "invalid_request_error"),
        ({"model": FAKE_MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, None),
        ({"model": "nope/missing", "max_tokens": 5, "messages": HELLO}, 400, "invalid_request_error"),
        ({"model": FAKE_MODEL, "max_tokens": 5, "messages": HELLO, "tools": [{"type": "bash_20250124"}]}, 400, None),
    ],
)
def test_messages_bad_body_is_400_recorded_once(
    gateway: Gateway, body: dict[str, object], status: int, kind: str | None
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gateway).post("/v1/messages", cast_to=object, body=body)
    assert caught.value.status_code == status
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert error["error"]["type"] == (kind or "invalid_request_error")
    assert gateway.fake.received == []
    (record,) = gateway.usage_records()
    assert (record.status_code, record.credits_micro) == (400, 0)


def test_messages_bad_version_is_400(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError):
        sdk(gateway, default_headers={"anthropic-version": "yesterday"}).messages.create(
            model=FAKE_MODEL, max_tokens=10, messages=HELLO
        )


def test_messages_out_of_credits_is_402_billing_error(backend: Backend, fake_openai: FakeOpenAI) -> None:
    poor, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai, credits_micro=10)
    try:
        with pytest.raises(anthropic.APIStatusError) as caught:
            sdk(poor).messages.create(model=FAKE_MODEL, max_tokens=10, messages=HELLO)
    finally:
        server.stop()
    assert caught.value.status_code == 402
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "billing_error"
    assert fake_openai.received == []


def test_messages_count_tokens_bills_nothing(gateway: Gateway) -> None:
    counted = sdk(gateway).messages.count_tokens(model=FAKE_MODEL, system="Be brief.", messages=HELLO)
    assert counted.input_tokens > 0
    bigger = sdk(gateway).messages.count_tokens(
        model=FAKE_MODEL,
        system="Be brief.",
        messages=HELLO,
        tools=[WEATHER],
    )
    assert bigger.input_tokens > counted.input_tokens
    assert gateway.fake.received == [] and gateway.usage_records() == []
    assert gateway.balance_micro() == OPENING
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="nope", max_retries=0).messages.count_tokens(
            model=FAKE_MODEL, messages=HELLO
        )


def test_messages_dropped_stream_is_settled_once(gateway: Gateway) -> None:
    gateway.fake.reply_words = [f"w{i}" for i in range(200)]
    gateway.fake.chunk_delay_s = 0.02
    with sdk(gateway).messages.stream(model=FAKE_MODEL, max_tokens=500, messages=HELLO) as stream:
        for seen, _text in enumerate(stream.text_stream, 1):
            if seen >= 5:
                break  # leaving the block closes the connection mid-stream
    (record,) = gateway.awaited_usage_records()
    assert record.cancelled and record.status_code == 499 and record.streamed
    assert 0 < record.output_tokens < 200
    assert gateway.balance_micro() == OPENING - record.credits_micro
    assert gateway.debit_count(record.request_id) <= 1


def test_messages_mid_stream_failure_raises_in_sdk(gateway: Gateway) -> None:
    gateway.fake.stream_error_after = 2
    with (
        pytest.raises(anthropic.APIStatusError),
        sdk(gateway).messages.stream(model=FAKE_MODEL, max_tokens=50, messages=HELLO) as stream,
    ):
        for _text in stream.text_stream:
            pass
    (record,) = gateway.usage_records()
    assert record.status_code == 502 and gateway.balance_micro() == OPENING - record.credits_micro


# ---------------------------------------------------------------- the Anthropic and Gemini fakes


def test_messages_anthropic_upstream_keeps_cache_usage(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, claude, _ = kinds
    message = sdk(gateway).messages.create(model=CLAUDE, max_tokens=100, system="Be brief.", messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text == "Hello from the fake Claude"
    # An Anthropic model is passed through (test_messages_native.py): its usage comes back as sent.
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (21, 4, 2)
    assert usage.output_tokens == 5
    expected = _micro(21, "3") + _micro(4, "0.30") + _micro(2, "3.75") + _micro(5, "15")
    (record,) = gateway.usage_records()
    assert record.credits_micro == expected and gateway.balance_micro() == OPENING - expected
    assert claude.received[-1].body["system"] == "Be brief."


def test_messages_anthropic_tool_use_round_trip(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, claude, _ = kinds
    claude.tool_call = True
    client = sdk(gateway)
    asked: list[MessageParam] = [{"role": "user", "content": "weather in SF?"}]
    first = client.messages.create(model=CLAUDE, max_tokens=200, messages=asked, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert (call.id, call.name, call.input) == (claude.tool_id, "get_weather", claude.tool_input)
    claude.tool_call = False
    follow_up: list[MessageParam] = [
        *asked,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]},
    ]
    second = client.messages.create(model=CLAUDE, max_tokens=200, messages=follow_up, tools=[WEATHER])
    assert second.stop_reason == "end_turn"
    sent = claude.received[-1].body["messages"]
    assert sent[1]["content"][-1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": claude.tool_input,
    }
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]
    assert len(gateway.usage_records()) == 2


def test_messages_anthropic_stream_with_tool(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, claude, _ = kinds
    claude.tool_call = True
    with sdk(gateway).messages.stream(
        model=CLAUDE,
        max_tokens=200,
        messages=[{"role": "user", "content": "weather in SF?"}],
        tools=[WEATHER],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.input == claude.tool_input
    assert final.stop_reason == "tool_use"
    usage = final.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (21, 4, 2)
    (record,) = gateway.usage_records()
    assert record.streamed and gateway.balance_micro() == OPENING - record.credits_micro > 0


def test_messages_gemini_create_stream_and_function_call(kinds: tuple[Gateway, FakeAnthropic, FakeGemini]) -> None:
    gateway, _, gemini = kinds
    client = sdk(gateway)
    message = client.messages.create(model=GEMINI, max_tokens=100, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text == "Hello from the fake Gemini"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (17 - 5, 5)
    expected = _micro(12, "0.30") + _micro(5, "0.075") + _micro(message.usage.output_tokens, "2.50")
    assert gateway.usage_records()[0].credits_micro == expected
    with client.messages.stream(model=GEMINI, max_tokens=100, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == "Hello from the fake Gemini"
    gemini.function_call = True
    with client.messages.stream(
        model=GEMINI,
        max_tokens=100,
        messages=HELLO,
        tools=[WEATHER],
    ) as stream:
        final = stream.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == gemini.function_args
    assert final.stop_reason == "tool_use"
    records = gateway.usage_records()
    assert len(records) == 3
    assert gateway.balance_micro() == OPENING - sum(r.credits_micro for r in records)
    assert json.loads(json.dumps(gemini.received[-1].body))["tools"]

"""``client.responses.create`` (the official ``openai`` package) against a running gateway,
routed to the OpenAI-compatible, Anthropic and Gemini fakes: plain, with a function tool over
two turns, and streamed; every call billed to the micro-credit, once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import (
    FunctionToolParam,
    ResponseCompletedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
)

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.asgi import ReceivedRequest
from tests.fakes.gateway_fixtures import (
    FAKE_MODEL,
    Backend,
    Gateway,
    expected_cost_micro,
)
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.provider_kinds import CLAUDE, GEMINI, gateway_with_every_kind

OPENING = 500_000_000

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    "strict": False,
}


def _micro(tokens: int, usd_per_mtok: str) -> int:
    # tokens × USD/Mtok × 1000 credits/USD × 10⁶ micro/credit ÷ 10⁶ tokens/Mtok
    return int(tokens * Decimal(usd_per_mtok) * 1000)


def _openai_tool_answer(call_id: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-tool",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
    }


@dataclass
class Target:
    """One upstream kind behind the gateway: its model, its fake, what it answers and costs."""

    name: str
    model: str
    text: str
    fake: FakeOpenAI | FakeAnthropic | FakeGemini
    cost: Callable[[int, int], int]  # (input tokens reported, output tokens reported) -> micro-credits
    tool_on: Callable[[], None]
    tool_off: Callable[[], None]

    @property
    def received(self) -> list[ReceivedRequest]:
        return list(self.fake.received)  # type: ignore[arg-type]  # each fake module names the same class


@pytest.fixture
def upstreams(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, dict[str, Target]]]:
    with gateway_with_every_kind(backend, fake_openai) as (gateway, anthropic, gemini):
        yield gateway, _targets(fake_openai, anthropic, gemini)


def _targets(fake_openai: FakeOpenAI, anthropic: FakeAnthropic, gemini: FakeGemini) -> dict[str, Target]:
    def openai_tool_on() -> None:
        fake_openai.canned_completion = _openai_tool_answer("call_fake_1")

    def openai_tool_off() -> None:
        fake_openai.canned_completion = None

    def anthropic_tool(on: bool) -> Callable[[], None]:
        return lambda: setattr(anthropic, "tool_call", on)

    def gemini_tool(on: bool) -> Callable[[], None]:
        return lambda: setattr(gemini, "function_call", on)

    targets = {
        "openai": Target(
            "openai",
            FAKE_MODEL,
            "Hello from the fake upstream",
            fake_openai,
            lambda prompt, out: expected_cost_micro(prompt=prompt, completion=out),
            openai_tool_on,
            openai_tool_off,
        ),
        "anthropic": Target(
            "anthropic",
            CLAUDE,
            "Hello from the fake Claude",
            anthropic,
            # 21 fresh + 4 cache reads + 2 cache writes reported as 27 input tokens.
            lambda prompt, out: _micro(21, "3") + _micro(4, "0.30") + _micro(2, "3.75") + _micro(out, "15"),
            anthropic_tool(True),
            anthropic_tool(False),
        ),
        "gemini": Target(
            "gemini",
            GEMINI,
            "Hello from the fake Gemini",
            gemini,
            lambda prompt, out: _micro(prompt - 5, "0.30") + _micro(5, "0.075") + _micro(out, "2.50"),
            gemini_tool(True),
            gemini_tool(False),
        ),
    }
    return targets


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)


KINDS = ["openai", "anthropic", "gemini"]


def _billed_once(gateway: Gateway, expected: list[int]) -> None:
    records = gateway.usage_records()
    assert [r.credits_micro for r in records] == expected
    assert all(gateway.debit_count(r.request_id) == 1 for r in records)
    assert gateway.balance_micro() == OPENING - sum(expected)


@pytest.mark.parametrize("kind", KINDS)
def test_responses_plain_billed_exactly(upstreams: tuple[Gateway, dict[str, Target]], kind: str) -> None:
    gateway, targets = upstreams
    target = targets[kind]
    raw = sdk(gateway).responses.with_raw_response.create(
        model=target.model,
        input="Say hello",
        instructions="Be brief.",
        metadata={"team": "a"},
        text={"format": {"type": "json_object"}},
        max_output_tokens=100,
    )
    response = raw.parse()
    assert response.output_text == target.text
    assert response.object == "response" and response.status == "completed" and response.model == target.model
    assert response.id == "resp_" + raw.headers["x-request-id"].removeprefix("req_")
    assert response.usage is not None
    meta = response.model_extra["_tollway"]  # type: ignore[index]
    assert meta["request_id"] == raw.headers["x-request-id"] and meta["provider"] != ""
    cost = target.cost(response.usage.input_tokens, response.usage.output_tokens)
    _billed_once(gateway, [cost])
    assert meta["credits_used"] == raw.headers["x-tollway-credits-used"]
    sent = target.received[-1].body
    assert "metadata" not in sent and "store" not in sent  # nothing the upstream would store
    if kind == "openai":
        assert sent["response_format"] == {"type": "json_object"} and sent["max_completion_tokens"] == 100
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("kind", KINDS)
def test_responses_function_tool_two_turns(upstreams: tuple[Gateway, dict[str, Target]], kind: str) -> None:
    gateway, targets = upstreams
    target = targets[kind]
    client = sdk(gateway)
    target.tool_on()
    first = client.responses.create(
        model=target.model,
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice="auto",
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    json.loads(calls[0].arguments)
    assert target.received[-1].body.get("tools")  # the tool went upstream in the provider's own shape
    target.tool_off()
    second = client.responses.create(
        model=target.model,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temperature_c": 18}'},
        ],
        tools=[WEATHER],
    )
    assert second.output_text == target.text
    assert "temperature_c" in json.dumps(target.received[-1].body)  # the tool's result reached the upstream
    assert first.usage is not None and second.usage is not None
    _billed_once(
        gateway,
        [
            target.cost(first.usage.input_tokens, first.usage.output_tokens),
            target.cost(second.usage.input_tokens, second.usage.output_tokens),
        ],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_responses_stream_events_and_usage(upstreams: tuple[Gateway, dict[str, Target]], kind: str) -> None:
    gateway, targets = upstreams
    target = targets[kind]
    events = list(sdk(gateway).responses.create(model=target.model, input="Say hello", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == target.text
    final = events[-1]
    assert final.type == "response.completed"
    usage = final.response.usage
    assert usage is not None and final.response.output_text == target.text
    _billed_once(gateway, [target.cost(usage.input_tokens, usage.output_tokens)])
    (record,) = gateway.usage_records()
    assert record.streamed and not record.cancelled


def test_responses_stream_tool_call_events(upstreams: tuple[Gateway, dict[str, Target]]) -> None:
    gateway, targets = upstreams
    target = targets["anthropic"]
    target.tool_on()
    events = list(sdk(gateway).responses.create(model=target.model, input="weather?", tools=[WEATHER], stream=True))
    arguments = "".join(e.delta for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent))
    done = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
    assert len(done) == 1 and done[0].arguments == arguments
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent)
    (call,) = [item for item in final.response.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == arguments and call.call_id == "toolu_01FakeToolUse"


def test_responses_stream_upstream_failure_ends_failed_and_bills_what_was_sent(
    upstreams: tuple[Gateway, dict[str, Target]],
) -> None:
    gateway, targets = upstreams
    gateway.fake.stream_error_after = 2
    events = list(sdk(gateway).responses.create(model=FAKE_MODEL, input="Say hello", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    (record,) = gateway.usage_records()
    assert record.status_code == 502 and record.credits_micro > 0
    assert gateway.balance_micro() == OPENING - record.credits_micro
    del targets


def test_responses_stream_cut_by_the_client_settles_once(upstreams: tuple[Gateway, dict[str, Target]]) -> None:
    gateway, _targets = upstreams
    gateway.fake.reply_words = [f"w{i}" for i in range(200)]
    gateway.fake.chunk_delay_s = 0.02
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            gateway.v1 + "/responses",
            json={"model": FAKE_MODEL, "input": "count", "stream": True},
            headers={"Authorization": f"Bearer {gateway.key}"},
        ) as response,
    ):
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            if line.startswith("event: response.output_text.delta"):
                seen += 1
            if seen >= 3:
                break  # leaving the block closes the connection mid-stream
    (record,) = gateway.awaited_usage_records()
    assert record.cancelled and record.status_code == 499 and record.streamed
    assert 0 < record.output_tokens < 200
    assert gateway.debit_count(record.request_id) == 1
    assert gateway.balance_micro() == OPENING - record.credits_micro


BAD = [
    ({"model": FAKE_MODEL, "input": "hi", "store": True}, "store"),
    ({"model": FAKE_MODEL, "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": FAKE_MODEL, "input": "hi", "background": True}, "background"),
    ({"model": FAKE_MODEL, "input": "hi", "conversation": "conv_1"}, "conversation"),
    ({"model": FAKE_MODEL, "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": FAKE_MODEL, "input": "hi", "max_output_tokens": 2**63}, "max_output_tokens"),
    ({"model": FAKE_MODEL, "input": "hi\u0000", "tool_choice": {"type": "mcp"}}, "tool_choice"),
    ({"model": FAKE_MODEL}, "input"),
    ({"model": "nope/missing", "input": "hi"}, "model"),
]


def test_responses_bad_requests_are_400_with_param(upstreams: tuple[Gateway, dict[str, Target]]) -> None:
    """One gateway for every case (each start costs seconds): each refusal names its field and
    is recorded once, at no cost, before any upstream is called."""
    gateway, _targets = upstreams
    for body, param in BAD:
        response = httpx.post(gateway.v1 + "/responses", json=body, headers={"Authorization": f"Bearer {gateway.key}"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["type"]) == (param, "invalid_request_error") and error["message"], body
    assert gateway.fake.received == []
    records = gateway.usage_records()
    assert [(r.status_code, r.credits_micro) for r in records] == [(400, 0)] * len(BAD)
    assert gateway.balance_micro() == OPENING


def test_responses_sdk_raises_bad_request_and_auth_errors(upstreams: tuple[Gateway, dict[str, Target]]) -> None:
    gateway, _targets = upstreams
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway).responses.create(model=FAKE_MODEL, input="hi", store=True)
    assert caught.value.param == "store"
    response = httpx.post(gateway.v1 + "/responses", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"
    bad = openai.OpenAI(base_url=gateway.v1, api_key="prx-" + "0" * 48, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model=FAKE_MODEL, input="hi")
    assert len(gateway.usage_records()) == 1

"""The OpenAI Agents SDK runs one agent with one function tool through Tollway's
``/v1/responses``: the upstream (a fake on 127.0.0.1) first calls the tool, then answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from agents import Agent, Runner, function_tool, set_default_openai_api, set_default_openai_client, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

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


def _answer(message: dict[str, Any], finish: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-agent",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


TOOL_CALL = _answer(
    {
        "content": None,
        "tool_calls": [
            {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    "tool_calls",
    prompt=60,
    completion=12,
)
FINAL = _answer({"content": "It is sunny and 18 °C in Paris."}, "stop", prompt=85, completion=11)


@dataclass
class ScriptedOpenAI(FakeOpenAI):
    """Answers chat completions from a script, in order (the agent's turns)."""

    script: list[dict[str, Any]] = field(default_factory=list)

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.script.pop(0)


@pytest.fixture
def scripted_gateway(backend: Backend, _fake_openai_server: Any) -> Iterator[Gateway]:
    current, server = _fake_openai_server
    fake = ScriptedOpenAI(script=[TOOL_CALL, FINAL])
    fake.url = server.url  # type: ignore[attr-defined]
    current.fake = fake
    gateway, app_server = start_gateway(gateway_settings(backend, fake), fake)
    try:
        yield gateway
    finally:
        app_server.stop()
        current.fake = None


def test_agents_sdk_runs_an_agent_with_a_tool(scripted_gateway: Gateway) -> None:
    gateway = scripted_gateway
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"sunny, 18 C in {city}"

    async def run() -> Any:
        client = AsyncOpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)
        set_default_openai_client(client, use_for_tracing=False)
        set_default_openai_api("responses")
        set_tracing_disabled(True)  # nothing may leave 127.0.0.1
        # A slug with a "/" reads to the SDK's default provider as a provider prefix: name the
        # model through the Responses model class (docs/responses.md says so too).
        model = OpenAIResponsesModel(model=FAKE_MODEL, openai_client=client)
        agent = Agent(name="weather", instructions="Answer with the tool.", model=model, tools=[get_weather])
        try:
            return await Runner.run(agent, "What is the weather in Paris?")
        finally:
            await client.close()

    result = asyncio.run(run())
    assert result.final_output == "It is sunny and 18 °C in Paris."
    assert calls == ["Paris"]
    first, second = (r.body for r in gateway.fake.received)
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert first["messages"][0] == {"role": "system", "content": "Answer with the tool."}
    tool_turn = second["messages"][-1]
    assert tool_turn["role"] == "tool" and tool_turn["tool_call_id"] == "call_w1" and "sunny" in tool_turn["content"]
    records = gateway.usage_records()
    expected = [expected_cost_micro(prompt=60, completion=12), expected_cost_micro(prompt=85, completion=11)]
    assert [r.credits_micro for r in records] == expected
    assert all(gateway.debit_count(r.request_id) == 1 for r in records)
    assert gateway.balance_micro() == OPENING - sum(expected)

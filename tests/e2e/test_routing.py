"""Routing through the real app with the official SDK: deployments, fallbacks, the circuit
breaker, provider preferences, deadlines, and Azure's wire format."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from gateway.settings import DeploymentSettings, ModelSettings, ProviderSettings
from tests.fakes.gateway_fixtures import Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

HI = [{"role": "user", "content": "hi"}]


class Upstreams:
    def __init__(self) -> None:
        self.fakes: dict[str, FakeOpenAI] = {}
        self._servers: list[ThreadedServer] = []

    def start(self, name: str, **options: Any) -> FakeOpenAI:
        fake = FakeOpenAI(api_key=f"sk-{name}-key", **options)
        server = ThreadedServer(fake).start()
        fake.url = server.url  # type: ignore[attr-defined]
        self.fakes[name] = fake
        self._servers.append(server)
        return fake

    def stop(self) -> None:
        for server in self._servers:
            server.stop()


def _provider(fake: FakeOpenAI, kind: str = "openai", **options: Any) -> ProviderSettings:
    suffix = "" if kind == "azure" else "/v1"
    return ProviderSettings(kind=kind, base_url=fake.url + suffix, api_key=fake.api_key, **options)  # type: ignore[arg-type,attr-defined]


@pytest.fixture
def routed(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, Upstreams]]:
    upstreams = Upstreams()
    east = upstreams.start("east")
    west = upstreams.start("west")
    slow = upstreams.start("slow")
    azure = upstreams.start("azure", azure_deployment="prod-4o-mini")
    base = gateway_settings(backend, fake_openai)
    settings = gateway_settings(
        backend,
        fake_openai,
        retry_backoff_s=0.01,
        breaker_failures=2,
        breaker_cooldown_s=60,
        providers={
            **base.providers,
            "east": _provider(east),
            "west": _provider(west),
            "slow": _provider(slow, deadline_s=0.4),
            "azure": _provider(azure, kind="azure", api_version="2024-10-21"),
        },
        models={
            **base.models,
            "multi/gpt": ModelSettings(
                upstream_model="",
                input_per_mtok=Decimal("0.15"),
                output_per_mtok=Decimal("0.60"),
                deployments=[
                    DeploymentSettings(provider="east", upstream_model="gpt-4o-mini"),
                    DeploymentSettings(
                        provider="west",
                        upstream_model="gpt-4o-mini",
                        input_per_mtok=Decimal("0.10"),
                        output_per_mtok=Decimal("0.40"),
                    ),
                ],
            ),
            "east/only": ModelSettings(
                provider="east", upstream_model="e", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2")
            ),
            "west/only": ModelSettings(
                provider="west", upstream_model="w", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("4")
            ),
            "slow/gpt": ModelSettings(
                provider="slow", upstream_model="s", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2")
            ),
            "azure/gpt-4o-mini": ModelSettings(
                provider="azure",
                upstream_model="prod-4o-mini",
                input_per_mtok=Decimal("0.15"),
                output_per_mtok=Decimal("0.60"),
            ),
        },
    )
    gateway, server = start_gateway(settings, fake_openai)
    try:
        yield gateway, upstreams
    finally:
        server.stop()
        upstreams.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)


def chat(gateway: Gateway, model: str, **extra: Any) -> Any:
    return sdk(gateway).chat.completions.create(model=model, messages=HI, **extra)  # type: ignore[call-overload]


def test_a_failing_deployment_falls_back_and_then_cools_down(routed: tuple[Gateway, Upstreams]) -> None:
    gateway, upstreams = routed
    east, west = upstreams.fakes["east"], upstreams.fakes["west"]
    east.fail_status, east.fail_times = 500, 99
    for _ in range(2):
        reply = chat(gateway, "multi/gpt")
        assert reply.model_extra["_tollway"]["provider"] == "west"
    assert len(east.received) == 2 and west.served == 2
    # Two failures in a row opened east's breaker: the next call goes straight to west.
    chat(gateway, "multi/gpt")
    assert len(east.received) == 2 and west.served == 3
    records = gateway.usage_records()
    assert [(r.provider, r.status_code) for r in records] == [("west", 200)] * 3
    # Billed at the deployment that served (west is cheaper than the model's list price).
    # micro-credits = tokens × USD per Mtok × 1000 credits per USD (the 10⁶s cancel out)
    assert records[0].credits_micro == 21 * 100 + 5 * 400


def test_allow_fallbacks_false_retries_only_the_chosen_deployment_then_answers_503(
    routed: tuple[Gateway, Upstreams],
) -> None:
    gateway, upstreams = routed
    east, west = upstreams.fakes["east"], upstreams.fakes["west"]
    east.fail_status, east.fail_times = 502, 99
    pinned = {"provider": {"order": ["east"], "allow_fallbacks": False}}
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gateway, "multi/gpt", extra_body=pinned)
    assert caught.value.status_code == 502 and west.served == 0
    assert len(east.received) == 3  # retry_attempts on the one deployment allowed
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gateway, "multi/gpt", extra_body=pinned)
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "no_deployment_available"  # type: ignore[index]
    assert len(east.received) == 3  # the breaker is open: east was not called again
    assert gateway.balance_micro() == 500_000_000  # failures cost nothing


def test_provider_preferences_order_ignore_allow_and_sort(routed: tuple[Gateway, Upstreams]) -> None:
    gateway, upstreams = routed
    east, west = upstreams.fakes["east"], upstreams.fakes["west"]
    assert chat(gateway, "multi/gpt").model_extra["_tollway"]["provider"] == "east"
    ordered = chat(gateway, "multi/gpt", extra_body={"provider": {"order": ["west"]}})
    assert ordered.model_extra["_tollway"]["provider"] == "west"
    ignored = chat(gateway, "multi/gpt", extra_body={"provider": {"ignore": ["east"]}})
    assert ignored.model_extra["_tollway"]["provider"] == "west"
    cheapest = chat(gateway, "multi/gpt", extra_body={"provider": {"sort": "price"}})
    assert cheapest.model_extra["_tollway"]["provider"] == "west"
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gateway, "multi/gpt", extra_body={"provider": {"allow": ["nobody"]}})
    assert caught.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as bad:
        chat(gateway, "multi/gpt", extra_body={"provider": {"sort": "vibes"}})
    assert bad.value.body["param"] == "provider"  # type: ignore[index]
    # Gateway fields never reach the upstream.
    assert all("provider" not in r.body and "models" not in r.body for r in east.received + west.received)


def test_models_list_falls_back_to_another_model_and_bills_it(routed: tuple[Gateway, Upstreams]) -> None:
    gateway, upstreams = routed
    upstreams.fakes["east"].fail_status, upstreams.fakes["east"].fail_times = 429, 99
    reply = chat(gateway, "east/only", extra_body={"models": ["west/only"]})
    meta = reply.model_extra["_tollway"]
    assert (meta["model_used"], meta["provider"]) == ("west/only", "west")
    assert upstreams.fakes["west"].received[-1].body["model"] == "w"
    (record,) = gateway.usage_records()
    assert record.model == "west/only" and record.credits_micro == 21 * 3000 + 5 * 4000
    with pytest.raises(openai.BadRequestError) as unknown:
        chat(gateway, "east/only", extra_body={"models": ["nope/nothing"]})
    assert unknown.value.body["param"] == "models"  # type: ignore[index]


def test_a_stream_falls_back_while_opening(routed: tuple[Gateway, Upstreams]) -> None:
    gateway, upstreams = routed
    upstreams.fakes["east"].fail_status, upstreams.fakes["east"].fail_times = 503, 1
    chunks = list(sdk(gateway).chat.completions.create(model="multi/gpt", messages=HI, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    assert chunks[-1].model_extra["_tollway"]["provider"] == "west"


def test_deadline_applies_to_whole_answers_and_to_streams(routed: tuple[Gateway, Upstreams]) -> None:
    gateway, upstreams = routed
    slow = upstreams.fakes["slow"]
    slow.response_delay_s = 10.0  # one attempt without the deadline alone would take 10 s
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gateway, "slow/gpt")
    assert caught.value.status_code == 504 and caught.value.body["code"] == "upstream_timeout"  # type: ignore[index]
    # One attempt of 0.4 s against at least 10 s without the deadline: the bound sits between,
    # with room for a busy two-core CI machine.
    assert time.monotonic() - started < 8.0
    # The attempt used the call's whole deadline: retry_attempts (3) do not extend it.
    assert len(slow.received) == 1

    slow.response_delay_s, slow.chunk_delay_s = 0.0, 0.3
    with pytest.raises(openai.APIError) as ended:
        list(sdk(gateway).chat.completions.create(model="slow/gpt", messages=HI, stream=True))
    assert ended.value.code == "upstream_timeout"
    streamed = [r for r in gateway.usage_records() if r.streamed]
    assert streamed[-1].error_code == "upstream_timeout" and streamed[-1].credits_micro > 0  # billed what came


def test_azure_deployment_urls_api_version_and_key_header(routed: tuple[Gateway, Upstreams]) -> None:
    gateway, upstreams = routed
    azure = upstreams.fakes["azure"]
    reply = chat(gateway, "azure/gpt-4o-mini")
    assert reply.choices[0].message.content == "Hello from the fake upstream"
    request = azure.received[-1]
    assert request.path == "/openai/deployments/prod-4o-mini/chat/completions"
    assert request.headers["api-key"] == azure.api_key and "authorization" not in request.headers
    chunks = list(sdk(gateway).chat.completions.create(model="azure/gpt-4o-mini", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake upstream"
    assert json.loads(chunks[-1].model_dump_json())["_tollway"]["credits_used"] != "0"

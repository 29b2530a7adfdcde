"""The provider registry: every kind is complete, its adapter has the capabilities it declares
(checked with the runtime Protocols), and a built handle hands out only those."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from billing.catalogue import price_list
from providers.base import (
    Capability,
    ChatAdapter,
    ChatCall,
    GetAdapter,
    JsonAdapter,
    MissingCapability,
    MultipartAdapter,
    ProviderHandle,
)
from providers.presets import OPENAI_COMPATIBLE_PRESETS
from providers.registry import KINDS, ProviderConfig, ProviderKind, UnknownProviderKind, known_kinds, provider_kind

PROTOCOLS: dict[Capability, Any] = {
    Capability.CHAT: ChatAdapter,
    Capability.JSON: JsonAdapter,
    Capability.MULTIPART: MultipartAdapter,
    Capability.GET: GetAdapter,
}
# Kinds whose upstream URL is the operator's own: there is no default to ship.
NO_DEFAULT_URL = {"openai-compatible", "azure", "demo"}


def _refuse(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503)


@pytest.mark.parametrize("kind", known_kinds())
def test_registry_entry_has_every_field(kind: str) -> None:
    entry = KINDS[kind]
    assert entry.kind == kind
    assert entry.capabilities and Capability.CHAT in entry.capabilities
    assert entry.output_cap_field in {"max_tokens", "max_completion_tokens"}
    assert bool(entry.default_base_url) == (kind not in NO_DEFAULT_URL)
    assert entry.needs_upstream == (kind != "demo")
    assert entry.vendor == "" or entry.vendor in price_list()
    headers = entry.auth_headers("secret-key")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    assert kind == "demo" or "secret-key" in " ".join(headers.values())


@pytest.mark.parametrize("kind", known_kinds())
async def test_registry_builds_adapters_with_the_declared_capabilities(kind: str) -> None:
    entry = KINDS[kind]
    config = ProviderConfig(name=f"my-{kind}", kind=kind, base_url="http://upstream.test", api_key="k")
    handle = entry.build(config, transport=httpx.MockTransport(_refuse))
    try:
        assert handle.name == f"my-{kind}"
        assert handle.capabilities == entry.capabilities
        for capability, protocol in PROTOCOLS.items():
            assert isinstance(handle.adapter, protocol) or capability not in entry.capabilities
            assert handle.offers(capability) == (capability in entry.capabilities)
    finally:
        await handle.aclose()


def test_every_preset_is_an_openai_compatible_kind() -> None:
    for kind, preset in OPENAI_COMPATIBLE_PRESETS.items():
        entry = provider_kind(kind)
        assert (entry.default_base_url, entry.api_key_env, entry.vendor) == preset
        assert entry.speaks_openai and entry.capabilities == frozenset(Capability)


def test_registry_refuses_an_unknown_kind_naming_the_known_ones() -> None:
    with pytest.raises(UnknownProviderKind) as caught:
        provider_kind("nope")
    assert "'nope'" in str(caught.value) and "anthropic" in str(caught.value) and "groq" in str(caught.value)


def test_registry_resolves_base_url_and_key_config_first() -> None:
    groq = provider_kind("groq")
    assert groq.base_url("") == "https://api.groq.com/openai/v1"
    assert groq.base_url("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1"
    env = {"GROQ_API_KEY": "gsk-env", "MY_KEY": "mine"}
    assert groq.api_key("", "", env) == "gsk-env"
    assert groq.api_key("", "MY_KEY", env) == "mine"
    assert groq.api_key("inline", "MY_KEY", env) == "inline"
    assert provider_kind("openai").api_key("", "", env) == ""


async def test_registry_sends_the_kinds_auth_headers_over_configured_ones() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}})

    config = ProviderConfig(
        name="az",
        kind="azure",
        base_url="https://res.openai.azure.com",
        api_key="az-key",
        headers={"api-key": "overridden", "x-team": "blue"},
        api_version="2025-01-01",
    )
    handle = provider_kind("azure").build(config, transport=httpx.MockTransport(answer))
    try:
        await handle.chat.complete(ChatCall(body={"messages": []}, upstream_model="my-deployment"))
    finally:
        await handle.aclose()
    (request,) = seen
    assert (request.headers["api-key"], request.headers["x-team"]) == ("az-key", "blue")
    assert str(request.url) == (
        "https://res.openai.azure.com/openai/deployments/my-deployment/chat/completions?api-version=2025-01-01"
    )
    assert msgspec.json.decode(request.content)["stream"] is False


async def test_handle_refuses_a_capability_its_provider_lacks() -> None:
    handle = provider_kind("demo").build(ProviderConfig(name="demo", kind="demo"))
    assert handle.offers(Capability.CHAT) and not handle.offers(Capability.JSON)
    result = await handle.chat.complete(
        ChatCall(body={"messages": [{"role": "user", "content": "hi"}]}, upstream_model="echo")
    )
    assert result.usage is not None and result.usage.output_tokens == 1
    with pytest.raises(MissingCapability, match="json"):
        _ = handle.json


def test_registry_entry_promising_more_than_its_adapter_fails_when_built() -> None:
    class ChatOnly:
        name = "x"

        async def complete(self, call: ChatCall) -> Any: ...

        async def open_stream(self, call: ChatCall) -> Any: ...

        async def aclose(self) -> None: ...

    entry = ProviderKind(
        kind="liar",
        adapter=lambda config, client: ChatOnly(),
        capabilities=frozenset(Capability),
        auth_headers=lambda key: {},
        needs_upstream=False,
    )
    with pytest.raises(TypeError, match="lacks"):
        entry.build(ProviderConfig(name="x", kind="liar"))


def test_handle_of_refuses_what_is_not_an_adapter() -> None:
    with pytest.raises(TypeError, match="not a provider adapter"):
        ProviderHandle.of(object())

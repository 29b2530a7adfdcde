"""Every provider kind the gateway knows, one entry each: the only place that does.

An entry says how to build the kind's adapter from a :class:`ProviderConfig`, where its API
lives by default, how it authenticates, which vendor's list prices it charges, which chat
field caps output tokens, and which capabilities (``providers.base.Capability``) its adapter
has. The gateway's settings, catalogue, price list and pipeline ask :func:`provider_kind`.

    a new OpenAI-compatible service   one line in providers/presets.py (nothing else)
    a new wire format                 a package providers/<vendor>/ with types.py, convert.py,
                                      adapter.py and errors.py, and one entry in KINDS below

Capabilities are checked when an adapter is built (:meth:`ProviderKind.build`): an entry that
promises a capability its adapter lacks fails at startup, not on the first request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import msgspec

from providers.anthropic.adapter import AnthropicAdapter
from providers.anthropic.adapter import auth_headers as anthropic_auth
from providers.azure.adapter import auth_headers as azure_auth
from providers.azure.adapter import azure_adapter
from providers.base import Adapter, Capability, ProviderHandle
from providers.demo.adapter import DemoAdapter
from providers.gemini.adapter import GeminiAdapter
from providers.gemini.adapter import auth_headers as gemini_auth
from providers.http import build_client
from providers.openai.adapter import OpenAIAdapter
from providers.presets import OPENAI_COMPATIBLE_PRESETS, Preset


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One configured provider, resolved: what an adapter is built from. ``base_url`` and
    ``api_key`` are final here (the kind's defaults and the environment already applied)."""

    name: str
    kind: str
    base_url: str = ""
    api_key: str = ""
    headers: dict[str, str] = {}
    api_version: str = ""  # azure: the api-version query parameter
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    max_connections: int = 200
    proxy: str = ""  # the egress HTTP proxy's URL (credentials included), "" to connect directly


ClientFactory = Callable[[], httpx.AsyncClient]
"""The provider's one httpx client (base URL, auth and configured headers, timeouts), built
when called so a kind without an upstream (the demo) opens none."""

AdapterFactory = Callable[[ProviderConfig, ClientFactory], Adapter]


class UnknownProviderKind(ValueError):
    """A kind no entry of the registry has; the message lists the known ones."""


def bearer_auth(api_key: str) -> dict[str, str]:
    # Local servers (Ollama, vLLM) often run without a key: send no header rather than "Bearer ".
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def no_auth(api_key: str) -> dict[str, str]:
    return {}


CHAT_ONLY = frozenset({Capability.CHAT})
OPENAI_SURFACE = frozenset(Capability)


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """The registry entry for one kind of provider."""

    kind: str
    adapter: AdapterFactory
    capabilities: frozenset[Capability]
    auth_headers: Callable[[str], dict[str, str]]
    default_base_url: str = ""
    # The environment variable the key is read from when the config names none.
    api_key_env: str = ""
    # Whose list prices apply (a table of billing/catalogue/prices.toml); "" for none.
    vendor: str = ""
    # OpenAI's own API (and Azure) want max_completion_tokens; other servers and our
    # translating adapters read max_tokens.
    output_cap_field: str = "max_tokens"
    # False for a provider that answers in-process (the demo): no base URL, no client.
    needs_upstream: bool = True
    # The upstream speaks OpenAI's REST surface at OpenAI's paths (every /v1 route passes through).
    speaks_openai: bool = False

    def base_url(self, configured: str) -> str:
        return configured or self.default_base_url

    def api_key(self, configured: str, configured_env: str, env: Mapping[str, str]) -> str:
        """The upstream key: the config's own, else the variable it (or this kind) names."""
        if configured:
            return configured
        variable = configured_env or self.api_key_env
        return env.get(variable, "") if variable else ""

    def build(self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> ProviderHandle:
        """The adapter for ``config``, its capabilities checked against this entry once.
        ``transport`` replaces the network (tests point it at a fake upstream)."""

        def client() -> httpx.AsyncClient:
            return build_client(
                config.base_url,
                # The kind's auth headers win over the operator's extra headers.
                headers={**config.headers, **self.auth_headers(config.api_key)},
                connect_timeout_s=config.connect_timeout_s,
                read_timeout_s=config.read_timeout_s,
                max_connections=config.max_connections,
                transport=transport,
                proxy=config.proxy,
            )

        handle = ProviderHandle.of(self.adapter(config, client))
        if not self.capabilities <= handle.capabilities:
            missing = ", ".join(sorted(self.capabilities - handle.capabilities))
            raise TypeError(f"provider kind {self.kind!r}: its adapter lacks the {missing} capability")
        # Offer what the entry declares, even when an adapter class could do more.
        return ProviderHandle(handle.adapter, self.capabilities)


def _openai(config: ProviderConfig, client: ClientFactory) -> Adapter:
    return OpenAIAdapter(config.name, client())


def _azure(config: ProviderConfig, client: ClientFactory) -> Adapter:
    return azure_adapter(config.name, client(), api_version=config.api_version)


def _anthropic(config: ProviderConfig, client: ClientFactory) -> Adapter:
    return AnthropicAdapter(config.name, client())


def _gemini(config: ProviderConfig, client: ClientFactory) -> Adapter:
    return GeminiAdapter(config.name, client())


def _demo(config: ProviderConfig, client: ClientFactory) -> Adapter:
    return DemoAdapter(config.name)


def openai_compatible(kind: str, preset: Preset) -> ProviderKind:
    """An OpenAI-compatible service as a kind: the OpenAI adapter, configured by data."""
    return ProviderKind(
        kind=kind,
        adapter=_openai,
        capabilities=OPENAI_SURFACE,
        auth_headers=bearer_auth,
        default_base_url=preset.base_url,
        api_key_env=preset.api_key_env,
        vendor=preset.vendor,
        speaks_openai=True,
    )


KINDS: dict[str, ProviderKind] = {
    entry.kind: entry
    for entry in (
        ProviderKind(
            kind="openai",
            adapter=_openai,
            capabilities=OPENAI_SURFACE,
            auth_headers=bearer_auth,
            default_base_url="https://api.openai.com/v1",
            vendor="openai",
            output_cap_field="max_completion_tokens",
            speaks_openai=True,
        ),
        # Any other server speaking OpenAI's dialect; its base_url must be configured.
        ProviderKind(
            kind="openai-compatible",
            adapter=_openai,
            capabilities=OPENAI_SURFACE,
            auth_headers=bearer_auth,
            speaks_openai=True,
        ),
        # A resource's URL is the operator's own (https://<resource>.openai.azure.com).
        ProviderKind(
            kind="azure",
            adapter=_azure,
            capabilities=OPENAI_SURFACE,
            auth_headers=azure_auth,
            vendor="openai",
            output_cap_field="max_completion_tokens",
        ),
        ProviderKind(
            kind="anthropic",
            adapter=_anthropic,
            capabilities=CHAT_ONLY,
            auth_headers=anthropic_auth,
            default_base_url="https://api.anthropic.com",
            vendor="anthropic",
        ),
        ProviderKind(
            kind="gemini",
            adapter=_gemini,
            capabilities=CHAT_ONLY,
            auth_headers=gemini_auth,
            default_base_url="https://generativelanguage.googleapis.com",
            vendor="google",
        ),
        ProviderKind(kind="demo", adapter=_demo, capabilities=CHAT_ONLY, auth_headers=no_auth, needs_upstream=False),
        *(openai_compatible(kind, preset) for kind, preset in OPENAI_COMPATIBLE_PRESETS.items()),
    )
}


def known_kinds() -> list[str]:
    return sorted(KINDS)


def provider_kind(kind: str) -> ProviderKind:
    entry = KINDS.get(kind)
    if entry is None:
        raise UnknownProviderKind(f"unknown provider kind {kind!r}; known kinds: {', '.join(known_kinds())}")
    return entry


def vendor_of(kind: str) -> str:
    """The price-list vendor of ``kind``; "" when it has none or the kind is unknown."""
    entry = KINDS.get(kind)
    return entry.vendor if entry is not None else ""


def output_cap_field(kind: str) -> str:
    """The chat body field that caps output tokens for ``kind`` (``max_tokens`` if unknown)."""
    entry = KINDS.get(kind)
    return entry.output_cap_field if entry is not None else "max_tokens"

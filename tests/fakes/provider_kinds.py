"""A gateway serving every provider kind at once: the OpenAI-compatible fake (the session's),
an Anthropic fake and a Gemini fake, each with cache usage to bill and a priced model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from gateway.settings import ModelSettings, ProviderSettings
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gateway_fixtures import Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

CLAUDE = "anthropic/claude-sonnet-4-5"
GEMINI = "google/gemini-2.5-flash"


@contextmanager
def gateway_with_every_kind(
    backend: Backend, fake_openai: FakeOpenAI
) -> Iterator[tuple[Gateway, FakeAnthropic, FakeGemini]]:
    """The Anthropic fake reports 4 cache reads and 2 cache writes, the Gemini fake 5 cached
    tokens, so every kind's cache pricing is exercised."""
    anthropic, gemini = FakeAnthropic(cache_read_tokens=4, cache_creation_tokens=2), FakeGemini(cached_tokens=5)
    servers = [ThreadedServer(anthropic).start(), ThreadedServer(gemini).start()]
    try:
        base = gateway_settings(backend, fake_openai)
        settings = gateway_settings(
            backend,
            fake_openai,
            providers={
                **base.providers,
                "anthropic": ProviderSettings(kind="anthropic", base_url=servers[0].url, api_key=anthropic.api_key),
                "google": ProviderSettings(kind="gemini", base_url=servers[1].url, api_key=gemini.api_key),
            },
            models={
                **base.models,
                CLAUDE: ModelSettings(
                    provider="anthropic",
                    upstream_model="claude-sonnet-4-5",
                    input_per_mtok=Decimal("3"),
                    output_per_mtok=Decimal("15"),
                    cached_input_per_mtok=Decimal("0.30"),
                    cache_write_per_mtok=Decimal("3.75"),
                    max_output_tokens=8192,
                ),
                GEMINI: ModelSettings(
                    provider="google",
                    upstream_model="gemini-2.5-flash",
                    input_per_mtok=Decimal("0.30"),
                    output_per_mtok=Decimal("2.50"),
                    cached_input_per_mtok=Decimal("0.075"),
                ),
            },
        )
        gateway, server = start_gateway(settings, fake_openai)
        try:
            yield gateway, anthropic, gemini
        finally:
            server.stop()
    finally:
        for upstream in servers:
            upstream.stop()

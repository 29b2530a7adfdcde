"""The model catalogue: which slugs exist, who serves them, and what they cost.

Built once from settings at startup. The demo models are priced like a small real model so
a newcomer sees credits move exactly as they will with a real provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from billing.pricing import ModelPrice
from gateway.settings import DEMO_PROVIDER, ModelSettings, ProviderSettings, Settings, SettingsError
from providers.base import ChatAdapter
from providers.demo.adapter import DemoAdapter
from providers.http import build_client
from providers.openai.adapter import OpenAIAdapter

DEMO_MODELS: dict[str, ModelSettings] = {
    "demo/echo": ModelSettings(
        provider=DEMO_PROVIDER,
        upstream_model="echo",
        input_per_mtok="0.15",
        output_per_mtok="0.60",
        max_output_tokens=4096,
        context_length=128000,
    ),
    "demo/lorem": ModelSettings(
        provider=DEMO_PROVIDER,
        upstream_model="lorem",
        input_per_mtok="0.15",
        output_per_mtok="0.60",
        max_output_tokens=4096,
        context_length=128000,
    ),
}


class CatalogModel(msgspec.Struct, frozen=True):
    slug: str
    provider: str
    upstream_model: str
    category: str
    price: ModelPrice | None
    max_output_tokens: int
    context_length: int


def model_settings(settings: Settings) -> dict[str, ModelSettings]:
    models = dict(DEMO_MODELS) if settings.demo_provider else {}
    models.update(settings.models)
    return models


def build_catalog(settings: Settings) -> dict[str, CatalogModel]:
    catalog: dict[str, CatalogModel] = {}
    for slug, model in model_settings(settings).items():
        price = None
        if model.input_per_mtok and model.output_per_mtok:
            price = ModelPrice.from_usd_per_mtok(
                input_usd=model.input_per_mtok,
                output_usd=model.output_per_mtok,
                cached_input_usd=model.cached_input_per_mtok,
                cache_write_usd=model.cache_write_per_mtok,
                credits_per_usd=settings.credits_per_usd,
                markup_percent=settings.markup_percent,
            )
        catalog[slug] = CatalogModel(
            slug=slug,
            provider=model.provider,
            upstream_model=model.upstream_model,
            category=model.category,
            price=price,
            max_output_tokens=model.max_output_tokens,
            context_length=model.context_length,
        )
    return catalog


def build_adapter(name: str, provider: ProviderSettings, env: Mapping[str, str]) -> ChatAdapter:
    if provider.kind == "demo":
        return DemoAdapter(name)
    if provider.kind in ("openai", "openai-compatible"):
        headers = dict(provider.headers)
        api_key = provider.resolved_api_key(env)
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        client = build_client(
            provider.base_url,
            headers=headers,
            connect_timeout_s=provider.connect_timeout_s,
            read_timeout_s=provider.read_timeout_s,
            max_connections=provider.max_connections,
        )
        return OpenAIAdapter(name, client)
    raise SettingsError(f"providers.{name}: kind {provider.kind!r} is not supported by this version yet")


def build_adapters(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, ChatAdapter]:
    env = os.environ if env is None else env
    adapters: dict[str, ChatAdapter] = {}
    if settings.demo_provider:
        adapters[DEMO_PROVIDER] = DemoAdapter(DEMO_PROVIDER)
    for name, provider in settings.providers.items():
        adapters[name] = build_adapter(name, provider, env)
    return adapters

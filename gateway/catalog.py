"""The model catalogue: which slugs exist, who serves them, and what they cost.

Built once from settings at startup. The demo models are priced like a small real model so
a newcomer sees credits move exactly as they will with a real provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal

import msgspec

from billing.catalogue import list_price, vendor_models
from billing.pricing import ModelPrice, UsdPrices
from gateway.settings import (
    DEMO_PROVIDER,
    DeploymentSettings,
    ModelSettings,
    ProviderSettings,
    Settings,
    SettingsError,
)
from providers.base import ProviderHandle
from providers.registry import ProviderConfig, UnknownProviderKind, provider_kind

DEFAULT_MAX_OUTPUT = 4096
DEFAULT_CONTEXT = 128000

DEMO_MODELS: dict[str, ModelSettings] = {
    "demo/echo": ModelSettings(
        provider=DEMO_PROVIDER,
        upstream_model="echo",
        input_per_mtok=Decimal("0.15"),
        output_per_mtok=Decimal("0.60"),
        max_output_tokens=4096,
        context_length=128000,
    ),
    "demo/lorem": ModelSettings(
        provider=DEMO_PROVIDER,
        upstream_model="lorem",
        input_per_mtok=Decimal("0.15"),
        output_per_mtok=Decimal("0.60"),
        max_output_tokens=4096,
        context_length=128000,
    ),
}


class Deployment(msgspec.Struct, frozen=True):
    provider: str
    upstream_model: str
    price: ModelPrice | None


class CatalogModel(msgspec.Struct, frozen=True):
    """A callable slug. ``provider``/``upstream_model``/``price`` describe one deployment: the
    first by default, the one that served once routing has picked (see :meth:`served_by`)."""

    slug: str
    provider: str
    upstream_model: str
    category: str
    price: ModelPrice | None
    max_output_tokens: int
    context_length: int
    deployments: tuple[Deployment, ...] = ()
    # An embedding model: its category is "text" (docs/product-rules.md: embeddings count as text), but it
    # is priced by input alone, so it serves /v1/embeddings and never generates (unpriced output).
    embeds_only: bool = False

    def served_by(self, deployment: Deployment) -> CatalogModel:
        return msgspec.structs.replace(
            self, provider=deployment.provider, upstream_model=deployment.upstream_model, price=deployment.price
        )


def model_settings(settings: Settings) -> dict[str, ModelSettings]:
    """The demo models, every listed model of providers with ``catalogue_models``, then the
    config's own models (which win)."""
    models = dict(DEMO_MODELS) if settings.demo_provider else {}
    for name, provider in settings.providers.items():
        if provider.catalogue_models:
            for upstream, entry in vendor_models(provider.kind).items():
                models[f"{name}/{upstream}"] = ModelSettings(
                    provider=name, upstream_model=upstream, category=entry.category
                )
    models.update(settings.models)
    return models


def kind_of(settings: Settings, provider: str) -> str:
    """The registry kind of a configured provider (the built-in demo provider is its own kind)."""
    configured = settings.providers.get(provider)
    return configured.kind if configured is not None else provider


def _price(
    settings: Settings,
    model: ModelSettings,
    category: str,
    deployment: DeploymentSettings,
    override: UsdPrices | None,
) -> ModelPrice | None:
    """First priced source of: the operator's override, the deployment's prices, the model's,
    the vendor's list price for the deployment's upstream model."""
    listed = list_price(kind_of(settings, deployment.provider), deployment.upstream_model)
    sources: list[UsdPrices | None] = [override, deployment, model, listed]
    source = next((s for s in sources if s is not None and s.covers(category)), None)
    if source is None:
        return None
    return ModelPrice.from_usd(source, credits_per_usd=settings.credits_per_usd, markup_percent=settings.markup_percent)


def build_catalog(settings: Settings, overrides: Mapping[str, UsdPrices] | None = None) -> dict[str, CatalogModel]:
    catalog: dict[str, CatalogModel] = {}
    for slug, model in model_settings(settings).items():
        override = (overrides or {}).get(slug)
        own = model.all_deployments()[0]
        listed = list_price(kind_of(settings, own.provider), own.upstream_model)
        category = model.category or (listed.category if listed else "text")
        deployments = tuple(
            Deployment(d.provider, d.upstream_model, _price(settings, model, category, d, override))
            for d in model.all_deployments()
        )
        first = deployments[0]
        catalog[slug] = CatalogModel(
            slug=slug,
            provider=first.provider,
            upstream_model=first.upstream_model,
            category="text" if category == "embedding" else category,
            embeds_only=category == "embedding",
            price=first.price,
            max_output_tokens=model.max_output_tokens or (listed.max_output if listed else DEFAULT_MAX_OUTPUT),
            context_length=model.context_length or (listed.context if listed else DEFAULT_CONTEXT),
            deployments=deployments,
        )
    return catalog


def provider_config(
    name: str, provider: ProviderSettings, env: Mapping[str, str], *, egress_proxy: str = ""
) -> ProviderConfig:
    """What the registry builds ``name``'s adapter from: the settings with defaults and key resolved."""
    return ProviderConfig(
        name=name,
        kind=provider.kind,
        base_url=provider.effective_base_url,
        api_key=provider.resolved_api_key(env),
        headers=dict(provider.headers),
        api_version=provider.api_version,
        connect_timeout_s=provider.connect_timeout_s,
        read_timeout_s=provider.read_timeout_s,
        max_connections=provider.max_connections,
        proxy=egress_proxy,
    )


def build_adapter(
    name: str, provider: ProviderSettings, env: Mapping[str, str], *, egress_proxy: str = ""
) -> ProviderHandle:
    try:
        kind = provider_kind(provider.kind)
    except UnknownProviderKind as error:
        raise SettingsError(f"providers.{name}: {error}") from error
    return kind.build(provider_config(name, provider, env, egress_proxy=egress_proxy))


def build_adapters(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, ProviderHandle]:
    """Every provider's adapter, built and capability-checked once, at startup."""
    env = os.environ if env is None else env
    adapters: dict[str, ProviderHandle] = {}
    if settings.demo_provider:
        adapters[DEMO_PROVIDER] = provider_kind("demo").build(ProviderConfig(name=DEMO_PROVIDER, kind="demo"))
    for name, provider in settings.providers.items():
        adapters[name] = build_adapter(name, provider, env, egress_proxy=settings.egress_proxy)
    return adapters

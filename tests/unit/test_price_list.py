"""The shipped price list: it loads, every entry is usable, and known prices are right."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.catalogue import VENDOR_OF_KIND, list_price, price_list, vendor_models
from gateway.catalog import build_catalog
from gateway.settings import load_settings


def test_every_listed_model_is_priced_for_its_category() -> None:
    entries = [(vendor, model, entry) for vendor, models in price_list().items() for model, entry in models.items()]
    assert len(entries) > 50
    assert {vendor for vendor, _, _ in entries} == set(VENDOR_OF_KIND.values())
    for vendor, model, entry in entries:
        assert entry.covers(entry.category), f"{vendor}/{model}"
        for value in (
            entry.input_per_mtok,
            entry.output_per_mtok,
            entry.cached_input_per_mtok,
            entry.cache_write_per_mtok,
            entry.per_unit_usd,
        ):
            assert value is None or value >= 0, f"{vendor}/{model}"
        assert entry.max_output <= entry.context or entry.category != "text", f"{vendor}/{model}"


@pytest.mark.parametrize(
    ("kind", "model", "input_usd", "output_usd"),
    [
        ("openai", "gpt-4o-mini", "0.15", "0.60"),
        ("azure", "gpt-4o", "2.50", "10.00"),
        ("anthropic", "claude-sonnet-4-5", "3.00", "15.00"),
        ("gemini", "gemini-2.5-flash", "0.30", "2.50"),
        ("groq", "llama-3.3-70b-versatile", "0.59", "0.79"),
    ],
)
def test_known_list_prices(kind: str, model: str, input_usd: str, output_usd: str) -> None:
    entry = list_price(kind, model)
    assert entry is not None and (entry.input_per_mtok, entry.output_per_mtok) == (
        Decimal(input_usd),
        Decimal(output_usd),
    )


def test_unknown_kinds_and_models_have_no_list_price() -> None:
    assert list_price("openai-compatible", "gpt-4o-mini") is None
    assert list_price("openai", "gpt-17") is None
    assert vendor_models("vllm") == {}


def test_configured_models_take_list_prices_limits_and_category_when_unset() -> None:
    settings = load_settings(
        env={},
        demo_provider=False,
        markup_percent="10",
        providers={"openai": {"kind": "openai"}, "claude": {"kind": "anthropic", "catalogue_models": True}},
        models={
            "openai/gpt-4o-mini": {"provider": "openai", "upstream_model": "gpt-4o-mini"},
            "openai/embed": {"provider": "openai", "upstream_model": "text-embedding-3-small"},
            "openai/custom": {
                "provider": "openai",
                "upstream_model": "gpt-4o-mini",
                "input_per_mtok": "1",
                "output_per_mtok": "2",
                "max_output_tokens": 100,
            },
            "openai/mystery": {"provider": "openai", "upstream_model": "not-listed"},
        },
    )
    catalog = build_catalog(settings)
    mini = catalog["openai/gpt-4o-mini"]
    assert mini.price is not None and mini.price.input == Decimal("165")  # 0.15 USD/Mtok + 10 % markup
    assert (mini.max_output_tokens, mini.context_length, mini.category) == (16384, 128000, "text")
    embed = catalog["openai/embed"]  # embeddings are text (docs/product-rules.md), priced by input alone
    assert (embed.category, embed.embeds_only) == ("text", True) and embed.price is not None
    custom = catalog["openai/custom"]
    assert custom.price is not None and custom.price.input == Decimal("1100") and custom.max_output_tokens == 100
    assert catalog["openai/mystery"].price is None  # unpriced: refused, never free
    claude = catalog["claude/claude-sonnet-4-5"]
    assert claude.price is not None and claude.price.cache_write == Decimal("4125")
    assert "claude/gpt-4o-mini" not in catalog

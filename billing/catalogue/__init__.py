"""The shipped price list (``prices.toml``): vendors' list prices, categories and limits.

A configured model without prices of its own takes its vendor's list price for its upstream
model, so ``openai/gpt-4o-mini`` needs no numbers in the config; a provider with
``catalogue_models = true`` offers every listed model of its vendor as ``<provider>/<model>``.
The config's own prices, then the admin API's overrides, win over this list.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from billing.pricing import UsdPrices
from providers.registry import KINDS, vendor_of

PRICES_FILE = Path(__file__).with_name("prices.toml")

# Which vendor's list prices a provider kind charges: each kind says so in providers/registry.py.
VENDOR_OF_KIND: dict[str, str] = {kind: entry.vendor for kind, entry in KINDS.items() if entry.vendor}


class ListPrice(UsdPrices, forbid_unknown_fields=True, frozen=True):
    """A vendor's list price for one model, with its category and limits."""

    category: Literal["text", "embedding", "image", "video", "stt", "tts"] = "text"
    context: int = 128000
    max_output: int = 4096


@functools.cache
def price_list() -> dict[str, dict[str, ListPrice]]:
    raw = tomllib.loads(PRICES_FILE.read_text(encoding="utf-8"))
    return msgspec.convert(raw, dict[str, dict[str, ListPrice]])


def list_price(kind: str, upstream_model: str) -> ListPrice | None:
    vendor = vendor_of(kind)
    if not vendor:
        return None
    return price_list().get(vendor, {}).get(upstream_model)


def vendor_models(kind: str) -> dict[str, ListPrice]:
    vendor = vendor_of(kind)
    return dict(price_list().get(vendor, {})) if vendor else {}

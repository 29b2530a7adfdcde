"""Prices of models in micro-credits per token, and the cost of a request's usage.

Config gives USD per million tokens as decimal strings. One USD buys ``credits_per_usd``
credits, so USD/Mtok × credits_per_usd is exactly micro-credits per token; the markup is
applied once here. Rates stay ``Decimal`` (sub-micro prices exist) and only a request's total
is rounded, upwards.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from billing.money import ceil_micro
from providers.base import Usage

__all__ = ["MAX_USD", "ModelPrice", "Usage", "UsdPrices"]

# No price of any model, per million tokens or per unit, comes near this; a bigger one is a typo
# (or "1e999999") that would make every cost computed from it absurd.
MAX_USD = Decimal(1_000_000)


class UsdPrices(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A model's list prices in USD, the one shape every source uses: the config's models and
    deployments, the operator's overrides (admin API) and the shipped price list. ``None`` is
    "not priced here" (the next source is asked); decimal strings or numbers are accepted, and
    each must be finite, non-negative and below :data:`MAX_USD`."""

    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    # USD per billing unit for non-token models: per image (variants by size, "1024x1024" or
    # "1024x1024/hd"), per input character (tts), per audio second (stt), per video second.
    per_unit_usd: Decimal | None = None
    per_unit_usd_variants: dict[str, Decimal] = {}

    def __post_init__(self) -> None:
        named = [
            ("input_per_mtok", self.input_per_mtok),
            ("output_per_mtok", self.output_per_mtok),
            ("cached_input_per_mtok", self.cached_input_per_mtok),
            ("cache_write_per_mtok", self.cache_write_per_mtok),
            ("per_unit_usd", self.per_unit_usd),
            *((f"per_unit_usd_variants` `{k}", v) for k, v in self.per_unit_usd_variants.items()),
        ]
        for name, value in named:
            if value is not None and (not value.is_finite() or value < 0 or value > MAX_USD):
                # "field `name`" is how the API's error names its param (gateway.errors).
                raise ValueError(f"field `{name}` must be a decimal from 0 to {MAX_USD} USD, got {value:.6g}")

    def prices(self) -> UsdPrices:
        """Only the price fields (a model's or deployment's settings carry more)."""
        return UsdPrices(
            input_per_mtok=self.input_per_mtok,
            output_per_mtok=self.output_per_mtok,
            cached_input_per_mtok=self.cached_input_per_mtok,
            cache_write_per_mtok=self.cache_write_per_mtok,
            per_unit_usd=self.per_unit_usd,
            per_unit_usd_variants=dict(self.per_unit_usd_variants),
        )

    def covers(self, category: str) -> bool:
        """Whether these prices cover every way a model of ``category`` is billed: an unpriced
        model cannot be called (never silently free). ``"embedding"`` is a text model priced by
        its input alone."""
        tokens = self.input_per_mtok is not None and self.output_per_mtok is not None
        units = self.per_unit_usd is not None or bool(self.per_unit_usd_variants)
        if category == "text":
            return tokens
        if category == "embedding":
            return self.input_per_mtok is not None
        if category == "stt":
            return units or self.input_per_mtok is not None
        return units or tokens


class ModelPrice(msgspec.Struct, frozen=True):
    """Micro-credits per token, and per billing unit for non-token models (markup included)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    per_unit: Decimal = Decimal(0)
    per_unit_variants: dict[str, Decimal] = {}

    def unit_rate(self, variant: str) -> Decimal:
        """The price of one unit of ``variant``, else the plain unit price."""
        return self.per_unit_variants.get(variant, self.per_unit)

    @classmethod
    def from_usd(cls, usd: UsdPrices, *, credits_per_usd: int, markup_percent: str = "0") -> ModelPrice:
        """Token prices are USD per million tokens; unit prices are USD per unit (image, character,
        second), converted to micro-credits per unit (× 10⁶ more than a per-token rate)."""
        factor = Decimal(credits_per_usd) * (Decimal(1) + Decimal(markup_percent) / Decimal(100))
        per_unit_factor = factor * Decimal(1_000_000)
        input_rate = (usd.input_per_mtok or Decimal(0)) * factor
        return cls(
            input=input_rate,
            output=(usd.output_per_mtok or Decimal(0)) * factor,
            # Providers without a cache discount bill cached tokens as plain input.
            cached_input=usd.cached_input_per_mtok * factor if usd.cached_input_per_mtok is not None else input_rate,
            cache_write=usd.cache_write_per_mtok * factor if usd.cache_write_per_mtok is not None else input_rate,
            per_unit=(usd.per_unit_usd or Decimal(0)) * per_unit_factor,
            per_unit_variants={k: v * per_unit_factor for k, v in usd.per_unit_usd_variants.items()},
        )

    def cost_micro(self, usage: Usage) -> int:
        """What ``usage`` costs, rounded up to a whole micro-credit.

        ``input_tokens`` is the whole prompt, cache reads and cache writes included (OpenAI's
        convention, which the Anthropic adapter follows), so those parts are billed at their
        own rates instead of the input rate.
        """
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        uncached = usage.input_tokens - cached - written
        total = (
            uncached * self.input
            + cached * self.cached_input
            + written * self.cache_write
            + usage.output_tokens * self.output
            + usage.units * self.unit_rate(usage.unit_variant)
        )
        return ceil_micro(total)

    def worst_case_units_micro(self, units: int, variant: str = "", input_tokens: int = 0) -> int:
        """The most a unit-priced call can cost (plus its prompt, for models billing both)."""
        return ceil_micro(units * self.unit_rate(variant) + input_tokens * max(self.input, self.cache_write))

    def worst_case_micro(self, input_tokens: int, max_output_tokens: int) -> int:
        """The most a request can cost: every input token at the dearer of the input and cache-write
        rates (a prompt may be written to the cache), every output token used."""
        return ceil_micro(input_tokens * max(self.input, self.cache_write) + max_output_tokens * self.output)

    def affordable_output_tokens(self, input_tokens: int, available_micro: int) -> int:
        """The largest ``max_tokens`` whose worst case fits in ``available_micro``."""
        left = Decimal(available_micro) - input_tokens * max(self.input, self.cache_write)
        if left < 0:
            return 0
        if self.output == 0:
            return 2**31 - 1
        return int(left // self.output)

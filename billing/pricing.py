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

__all__ = ["ModelPrice", "Usage"]


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
    def from_usd_per_mtok(
        cls,
        *,
        input_usd: str,
        output_usd: str,
        cached_input_usd: str = "",
        cache_write_usd: str = "",
        per_unit_usd: str = "",
        per_unit_usd_variants: dict[str, str] | None = None,
        credits_per_usd: int,
        markup_percent: str = "0",
    ) -> ModelPrice:
        """Token prices are USD per million tokens; unit prices are USD per unit (image, character,
        second), converted to micro-credits per unit (× 10⁶ more than a per-token rate)."""
        factor = Decimal(credits_per_usd) * (Decimal(1) + Decimal(markup_percent) / Decimal(100))
        per_unit_factor = factor * Decimal(1_000_000)
        input_rate = Decimal(input_usd or "0") * factor
        return cls(
            input=input_rate,
            output=Decimal(output_usd or "0") * factor,
            # Providers without a cache discount bill cached tokens as plain input.
            cached_input=Decimal(cached_input_usd) * factor if cached_input_usd else input_rate,
            cache_write=Decimal(cache_write_usd) * factor if cache_write_usd else input_rate,
            per_unit=Decimal(per_unit_usd or "0") * per_unit_factor,
            per_unit_variants={k: Decimal(v) * per_unit_factor for k, v in (per_unit_usd_variants or {}).items()},
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

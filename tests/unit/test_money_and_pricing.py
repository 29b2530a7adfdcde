from __future__ import annotations

from decimal import Decimal

import pytest

from billing.money import MoneyError, credits_to_micro, format_credits, micro_to_usd
from billing.pricing import ModelPrice, Usage, UsdPrices


@pytest.mark.parametrize(
    ("text", "micro"),
    [("500", 500_000_000), ("0.000001", 1), ("12.345678", 12_345_678), ("-3.5", -3_500_000), ("0", 0)],
)
def test_money_credits_round_trip(text: str, micro: int) -> None:
    assert credits_to_micro(text) == micro
    assert format_credits(micro) == text


@pytest.mark.parametrize("bad", ["0.0000001", "abc", "NaN", "Infinity", ""])
def test_money_rejects_inexact_or_non_numbers(bad: str) -> None:
    with pytest.raises(MoneyError):
        credits_to_micro(bad)


def test_money_format_trims_trailing_zeros() -> None:
    assert format_credits(6_150) == "0.00615"
    assert format_credits(1_000_000) == "1"


def test_money_usd_from_micro() -> None:
    # 1 credit = 0.001 USD at the default 1000 credits per USD.
    assert micro_to_usd(1_000_000, 1000) == "0.001"
    assert micro_to_usd(6_150, 1000) == "0.00000615"


def price(markup: str = "0") -> ModelPrice:
    usd = UsdPrices(
        input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"), cached_input_per_mtok=Decimal("0.075")
    )
    return ModelPrice.from_usd(usd, credits_per_usd=1000, markup_percent=markup)


def test_pricing_rates_are_micro_credits_per_token() -> None:
    p = price()
    assert (p.input, p.output, p.cached_input) == (Decimal("150"), Decimal("600"), Decimal("75"))
    assert p.cache_write == p.input  # no cache-write price: billed as input


def test_pricing_cost_uses_cached_rate_for_cached_part() -> None:
    usage = Usage(input_tokens=21, output_tokens=5, cached_input_tokens=16)
    assert price().cost_micro(usage) == 5 * 150 + 16 * 75 + 5 * 600


def test_pricing_rounds_fractions_up() -> None:
    usd = UsdPrices(input_per_mtok=Decimal("0.0000001"), output_per_mtok=Decimal("0"))
    tiny = ModelPrice.from_usd(usd, credits_per_usd=1000)
    assert tiny.cost_micro(Usage(input_tokens=1)) == 1


def test_pricing_markup_applies_once() -> None:
    assert price("10").cost_micro(Usage(input_tokens=10)) == 1650


def test_pricing_worst_case_and_affordable_output() -> None:
    p = price()
    assert p.worst_case_micro(100, 1000) == 100 * 150 + 1000 * 600
    assert p.affordable_output_tokens(100, 100 * 150 + 999 * 600 + 599) == 999
    assert p.affordable_output_tokens(100, 10) == 0


def test_pricing_cache_writes_are_part_of_the_prompt_and_bound_the_worst_case() -> None:
    usd = UsdPrices(
        input_per_mtok=Decimal("3"),
        output_per_mtok=Decimal("15"),
        cached_input_per_mtok=Decimal("0.30"),
        cache_write_per_mtok=Decimal("3.75"),
    )
    p = ModelPrice.from_usd(usd, credits_per_usd=1000)
    usage = Usage(input_tokens=27, output_tokens=5, cached_input_tokens=4, cache_write_tokens=2)
    assert p.cost_micro(usage) == 21 * 3000 + 4 * 300 + 2 * 3750 + 5 * 15000
    # The reservation covers a prompt that is entirely written to the cache.
    all_written = Usage(input_tokens=100, output_tokens=10, cache_write_tokens=100)
    assert p.cost_micro(all_written) <= p.worst_case_micro(100, 10) == 100 * 3750 + 10 * 15000
    assert p.affordable_output_tokens(100, 100 * 3750 + 10 * 15000) == 10

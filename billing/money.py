"""Money is integer micro-credits; this module is the only place that converts it.

1 credit = 1,000,000 micro-credits. APIs show credits as decimal strings with up to six
places, never floats, so a balance survives a JSON round trip to the last micro-credit.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICRO_PER_CREDIT = 1_000_000
_MICRO = Decimal(MICRO_PER_CREDIT)
# The largest amount any one API call may name: 10**18 micro-credits still fits a BIGINT
# (2**63-1 ≈ 9.2 * 10**18) with room for a balance to grow, and refusing it before the
# multiplication below keeps "1e999999999" from costing a gigantic int (or a decimal Overflow).
MAX_CREDITS = 10**12


class MoneyError(ValueError):
    """A credits amount that cannot be represented exactly."""


def credits_to_micro(amount: str | int | Decimal) -> int:
    """Parse a credits amount (``"12.5"``) to micro-credits; more than six places is an error."""
    try:
        value = Decimal(amount) if not isinstance(amount, Decimal) else amount
    except InvalidOperation as error:
        raise MoneyError(f"not a number of credits: {amount!r}") from error
    if not value.is_finite():
        raise MoneyError(f"not a number of credits: {amount!r}")
    if value.copy_abs() > MAX_CREDITS:  # copy_abs, unlike abs(), never rounds (nor overflows)
        raise MoneyError(f"at most {MAX_CREDITS} credits at a time: {amount!r}")
    if value and value.adjusted() < -6:  # "1e-999999999" would underflow to 0 below, not fail
        raise MoneyError(f"credits have at most 6 decimal places: {amount!r}")
    micro = value * _MICRO
    if micro != micro.to_integral_value():
        raise MoneyError(f"credits have at most 6 decimal places: {amount!r}")
    return int(micro)


def format_credits(micro: int) -> str:
    """``12345678`` → ``"12.345678"``; trailing zeros trimmed, never exponent notation."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO_PER_CREDIT)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def micro_to_usd(micro: int, credits_per_usd: int) -> str:
    """The USD list price behind an amount of micro-credits, as a decimal string."""
    usd = Decimal(micro) / _MICRO / Decimal(credits_per_usd)
    return format(usd.quantize(Decimal("0.000000001")).normalize(), "f")


def ceil_micro(value: Decimal) -> int:
    """Round a fractional micro-credit amount up: we never charge less than the price."""
    return int(value.to_integral_value(rounding=ROUND_CEILING))

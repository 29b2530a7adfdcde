"""The pieces of receipts, the revenue report and billing links that need no database: money in minor units
shown as the checkout showed it, months parsed strictly, refunds stored as increments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.payments.credits import refunded_money
from billing.payments.packages import format_minor, price_to_minor
from billing.reports import month_start
from gateway.settings import Settings, SettingsError, validate_settings


def test_format_minor_speaks_the_currencys_minor_unit() -> None:
    assert format_minor(900, "USD") == "9.00"
    assert format_minor(5, "usd") == "0.05"
    assert format_minor(-450, "EUR") == "-4.50"
    assert format_minor(0, "USD") == "0.00"
    assert format_minor(1200, "JPY") == "1200"
    assert format_minor(-1200, "JPY") == "-1200"
    assert format_minor(2**63 - 1, "USD") == "92233720368547758.07"
    for price, currency in (("9.00", "USD"), ("29.99", "EUR"), ("1200", "JPY"), ("0.01", "USD")):
        assert price_to_minor(format_minor(price_to_minor(price, currency), currency), currency) == price_to_minor(
            price, currency
        )


def test_month_start_takes_yyyy_mm_only() -> None:
    assert month_start("2026-11") == datetime(2026, 11, 1, tzinfo=UTC)
    assert month_start("2026-01") == datetime(2026, 1, 1, tzinfo=UTC)
    for bad in ("2026-13", "2026-00", "2026-1", "26-01", "2026/01", "2026-1a", "", "0000-01", "9999-12", "२०२६-०१"):
        with pytest.raises(ValueError):
            month_start(bad)


def test_refunded_money_is_the_increment_of_a_running_total() -> None:
    assert refunded_money(900, 300, 0) == 300
    assert refunded_money(900, 300, 300) == 0  # the same running total again
    assert refunded_money(900, 700, 300) == 400
    assert refunded_money(900, None, 700) == 200  # a lost chargeback: the rest
    assert refunded_money(900, 5000, 0) == 900  # never more than was paid
    assert refunded_money(900, -5, 0) == 0
    assert refunded_money(0, None, 0) == 0  # a free package


def test_public_url_must_be_an_absolute_http_url() -> None:
    validate_settings(Settings(public_url="https://ai.example.com/tollway"))
    for bad in ("ai.example.com", "ftp://ai.example.com", "https://", "https://ai.example.com/?a=1", "/billing"):
        with pytest.raises(SettingsError, match="public_url"):
            validate_settings(Settings(public_url=bad))

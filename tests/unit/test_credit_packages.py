"""Credit packages: prices in minor units, checked when settings load, reversal arithmetic."""

from __future__ import annotations

import pytest

from billing.payments.credits import reversal_target
from billing.payments.packages import CreditPackage, PackageError, find_package, price_to_minor
from gateway.settings import Settings, SettingsError, validate_settings


def test_price_to_minor_speaks_the_currencys_minor_unit() -> None:
    assert price_to_minor("9", "USD") == 900
    assert price_to_minor("29.99", "eur") == 2999
    assert price_to_minor("1200", "JPY") == 1200
    for bad in ("9.001", "abc", "NaN", "Infinity", "1e400"):
        with pytest.raises(PackageError):
            price_to_minor(bad, "USD")
    with pytest.raises(PackageError):
        price_to_minor("12.5", "JPY")


def test_credit_package_check_names_what_is_wrong() -> None:
    CreditPackage(id="starter", name="Starter", credits="12000", price="9.00").check()
    cases = {
        "credits must be positive": CreditPackage(id="a", name="A", credits="0", price="1"),
        "6 decimal places": CreditPackage(id="a", name="A", credits="1.0000001", price="1"),
        "3-letter": CreditPackage(id="a", name="A", credits="1", price="1", currency="dollars"),
        "name is empty": CreditPackage(id="a", name=" ", credits="1", price="1"),
        "must not be negative": CreditPackage(id="a", name="A", credits="1", price="-1"),
    }
    for message, package in cases.items():
        with pytest.raises(PackageError, match=message):
            package.check()


def test_settings_refuse_duplicate_or_broken_packages() -> None:
    starter = CreditPackage(id="starter", name="Starter", credits="12000", price="9.00")
    validate_settings(Settings(credit_packages=[starter], signup_credits="500"))
    with pytest.raises(SettingsError, match="appears twice"):
        validate_settings(Settings(credit_packages=[starter, starter]))
    with pytest.raises(SettingsError, match="credit_packages"):
        validate_settings(Settings(credit_packages=[CreditPackage(id="x", name="X", credits="-5", price="1")]))
    with pytest.raises(SettingsError, match="signup_credits"):
        validate_settings(Settings(signup_credits="lots"))
    with pytest.raises(SettingsError, match="signup_credits"):
        validate_settings(Settings(signup_credits="-1"))
    assert find_package([starter], "starter") is starter
    assert find_package([starter], "pro") is None


def test_reversal_target_is_proportional_and_rounds_down() -> None:
    credits = 12_000_000_000
    assert reversal_target(credits, 900, None) == credits
    assert reversal_target(credits, 900, 900) == credits
    assert reversal_target(credits, 900, 5_000) == credits
    assert reversal_target(credits, 900, 300) == 4_000_000_000
    assert reversal_target(credits, 900, 1) == 13_333_333
    assert reversal_target(credits, 900, 0) == 0
    assert reversal_target(credits, 900, -50) == 0
    assert reversal_target(credits, 0, 0) == credits  # a free package reversed: all of it

"""What an operator sells: packages of credits at a price, stacking and never expiring."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

import msgspec

from billing.money import MoneyError, credits_to_micro

__all__ = ["CreditPackage", "PackageError", "find_package", "format_minor", "price_to_minor"]

# ISO 4217 codes; every currency the providers sell in has two decimals except these.
_ZERO_DECIMAL = frozenset({"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV"})
_CURRENCY = re.compile(r"^[A-Z]{3}$")
PackageId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class PackageError(ValueError):
    """A package in the configuration that cannot be sold as written."""


class CreditPackage(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One package: ``credits`` and ``price`` are decimal strings (``"12000"``, ``"9.00"``), never
    floats; ``provider_price_ids`` names the package at each payment provider (a Stripe price id,
    a LemonSqueezy variant id), keyed by the provider's name."""

    id: PackageId
    name: str
    credits: str
    price: str
    currency: str = "USD"
    provider_price_ids: dict[str, str] = {}

    @property
    def credits_micro(self) -> int:
        return credits_to_micro(self.credits)

    @property
    def price_minor(self) -> int:
        return price_to_minor(self.price, self.currency)

    def check(self) -> None:
        """Raise :class:`PackageError` naming what is wrong; settings call it at load time."""
        if not self.name.strip():
            raise PackageError(f"package {self.id!r}: name is empty")
        try:
            if self.credits_micro <= 0:
                raise PackageError(f"package {self.id!r}: credits must be positive")
        except MoneyError as error:
            raise PackageError(f"package {self.id!r}: credits: {error}") from error
        if not _CURRENCY.match(self.currency):
            raise PackageError(f"package {self.id!r}: currency must be a 3-letter ISO code like USD")
        if self.price_minor < 0:
            raise PackageError(f"package {self.id!r}: price must not be negative")


def price_to_minor(price: str, currency: str) -> int:
    """``"9.00"`` USD → ``900``; the providers speak minor units, and so do the receipts."""
    try:
        value = Decimal(price)
    except InvalidOperation as error:
        raise PackageError(f"not a price: {price!r}") from error
    if not value.is_finite() or value.copy_abs() > Decimal(10**12):
        raise PackageError(f"not a price: {price!r}")
    exponent = 0 if currency.upper() in _ZERO_DECIMAL else 2
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise PackageError(f"{currency} prices have at most {exponent} decimal places: {price!r}")
    return int(minor)


def find_package(packages: list[CreditPackage], package_id: str) -> CreditPackage | None:
    for package in packages:
        if package.id == package_id:
            return package
    return None


def format_minor(amount_minor: int, currency: str) -> str:
    """``900`` USD → ``"9.00"``, ``-300`` → ``"-3.00"``, ``900`` JPY → ``"900"``: receipts and
    reports show money as the provider's checkout did, from the integer they store."""
    places = 0 if currency.upper() in _ZERO_DECIMAL else 2
    sign = "-" if amount_minor < 0 else ""
    if not places:
        return f"{sign}{abs(amount_minor)}"
    whole, cents = divmod(abs(amount_minor), 10**places)
    return f"{sign}{whole}.{cents:0{places}d}"

"""What the checkout and webhook routes do, for any provider: the controllers stay thin.

    open_checkout    a package id and an account → the configured provider's hosted checkout
    receive_webhook  a provider's raw request → verified notice → credits moved once

Errors beyond the provider's (:mod:`billing.payments.provider`):

    PackageNotFound        404  no such package, or it is not sold through the checkout provider
    CheckoutUnavailable    503  no checkout provider is configured (or it has no API key)
    ProviderNotConfigured  404  a webhook for a provider Tollway does not talk to
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.counters import CounterStore
from billing.payments.credits import apply_paid, apply_reversed
from billing.payments.packages import CreditPackage, find_package
from billing.payments.provider import (
    CheckoutRequest,
    CheckoutSession,
    Ignored,
    Paid,
    PaymentError,
    PaymentProvider,
    Reversed,
)

__all__ = [
    "CheckoutUnavailable",
    "PackageNotFound",
    "ProviderNotConfigured",
    "WebhookResult",
    "checkout_provider",
    "open_checkout",
    "receive_webhook",
]

log = logging.getLogger("tollway.billing.payments")


class PackageNotFound(PaymentError):
    status_code = 404
    type = "not_found_error"
    code = "package_not_found"


class CheckoutUnavailable(PaymentError):
    status_code = 503
    type = "api_error"
    code = "payments_not_configured"


class ProviderNotConfigured(PaymentError):
    status_code = 404
    type = "not_found_error"
    code = "payment_provider_not_found"


class WebhookResult(msgspec.Struct):
    """The webhook's 200 answer. ``outcome``: granted, reversed, duplicate or ignored."""

    received: bool
    outcome: str
    event_id: str


def checkout_provider(providers: Mapping[str, PaymentProvider], name: str) -> PaymentProvider | None:
    """The provider that opens checkouts, if one is configured and holds an API key."""
    provider = providers.get(name) if name else None
    if provider is None or not getattr(provider, "can_checkout", True):
        return None
    return provider


async def open_checkout(
    provider: PaymentProvider | None,
    packages: list[CreditPackage],
    package_id: str,
    *,
    account_id: int,
    customer_email: str,
    success_url: str,
    cancel_url: str,
) -> CheckoutSession:
    package = find_package(packages, package_id)
    if package is None:
        raise PackageNotFound(f"no credit package {package_id!r}")
    if provider is None:
        raise CheckoutUnavailable("buying credits is not configured on this gateway")
    if not package.provider_price_ids.get(provider.name):
        raise PackageNotFound(f"package {package_id!r} is not on sale through {provider.name}")
    request = CheckoutRequest(
        package=package,
        account_id=account_id,
        customer_email=customer_email,
        success_url=success_url,
        cancel_url=cancel_url,
    )
    return await provider.create_checkout(request)


async def receive_webhook(
    providers: Mapping[str, PaymentProvider],
    name: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    counters: CounterStore | None,
    prefix: str,
    packages: list[CreditPackage],
) -> WebhookResult:
    """Verify, then move credits once; raises :class:`PaymentError` subclasses (their status is
    the answer: 400 refuses for good, 409 asks the provider to retry)."""
    provider = providers.get(name)
    if provider is None:
        raise ProviderNotConfigured(f"no payment provider {name[:40]!r} is configured")
    notice = provider.parse_webhook(headers, body, now)
    match notice:
        case Paid():
            outcome = await apply_paid(sessionmaker, counters, prefix, name, notice, packages)
            if not outcome.duplicate:
                log.info("%s purchase %s granted account %d", name, notice.event_id, outcome.account_id)
            return WebhookResult(True, "duplicate" if outcome.duplicate else "granted", notice.event_id)
        case Reversed():
            outcome = await apply_reversed(sessionmaker, counters, prefix, name, notice)
            return WebhookResult(True, "duplicate" if outcome.duplicate else "reversed", notice.event_id)
        case Ignored():
            return WebhookResult(True, "ignored", notice.event_id)

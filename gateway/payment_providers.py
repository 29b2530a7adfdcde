"""The payment providers a gateway talks to, built from ``settings.payments`` in the lifespan.

Each adapter's module is imported only when its provider is configured: the Stripe library is
megabytes a gateway that sells nothing never loads (tests/unit/test_lazy_imports.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from billing.payments.provider import PaymentProvider
from gateway.settings import Settings

__all__ = ["build_payment_providers"]


def build_payment_providers(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, PaymentProvider]:
    env = os.environ if env is None else env
    payments = settings.payments
    proxy = settings.egress_proxy or None
    providers: dict[str, PaymentProvider] = {}
    for name in payments.configured():
        if name == "stripe":
            from billing.payments.stripe import StripeProvider

            api_key, secret = payments.stripe.resolved(env)
            providers[name] = StripeProvider(
                api_key=api_key,
                webhook_secret=secret,
                api_base=payments.stripe.api_base,
                tolerance_s=payments.webhook_tolerance_s,
                timeout_s=payments.timeout_s,
                proxy=proxy,
            )
        else:
            from billing.payments.lemonsqueezy import LemonSqueezyProvider

            api_key, secret = payments.lemonsqueezy.resolved(env)
            providers[name] = LemonSqueezyProvider(
                api_key=api_key,
                store_id=payments.lemonsqueezy.store_id,
                webhook_secret=secret,
                api_base=payments.lemonsqueezy.api_base,
                timeout_s=payments.timeout_s,
                proxy=proxy,
            )
    return providers

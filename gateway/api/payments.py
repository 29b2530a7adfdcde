"""Buying credits: ``/api/billing`` lists the packages and opens a checkout at the configured
payment provider; ``/webhooks/payments/{provider}`` takes the provider's signed notices.

The webhook route has no auth but the provider's signature (billing/payments/service.py does
the work): 200 for a grant, a reversal, a duplicate or an ignored event; 400 for a bad
signature, a stale timestamp or a malformed event (never retried usefully); 409 when a
reversal arrived before its purchase (the provider retries); 404 for a provider Tollway does
not talk to. Its body is capped at :data:`WEBHOOK_MAX_BODY_BYTES`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter

from billing.money import format_credits
from billing.payments.packages import PackageId
from billing.payments.service import WebhookResult, checkout_provider, open_checkout, receive_webhook
from gateway.api.deps import Caller, Injected, requires
from gateway.api.openapi import MEMBER_AUTH, PUBLIC, errors
from gateway.state import GatewayState
from keys.roles import Permission

__all__ = ["BILLING_PAGE", "WEBHOOK_MAX_BODY_BYTES", "PaymentsController", "receive_payment_webhook"]

# Where a buyer returns when payments.success_url / cancel_url are unset: the dashboard's
# Billing page on the host the request came to.
BILLING_PAGE = "/billing"
# Stripe's and LemonSqueezy's events are a few kilobytes; a megabyte is room for any of them.
WEBHOOK_MAX_BODY_BYTES = 1024 * 1024


class PackageRead(msgspec.Struct):
    id: str
    name: str
    credits: str  # decimal strings, as configured
    price: str
    currency: str
    purchasable: bool  # sold through the configured checkout provider


class PackageList(msgspec.Struct):
    data: list[PackageRead]
    checkout_provider: str  # "" when buying is not configured


class CheckoutCreate(msgspec.Struct, forbid_unknown_fields=True):
    package: PackageId


class CheckoutCreated(msgspec.Struct):
    url: str
    session_id: str
    provider: str


class PaymentsController(Controller):
    path = "/api/billing"
    tags = ["billing"]
    security = MEMBER_AUTH

    @get(
        "/packages/",
        guards=[requires(Permission.VIEW)],
        operation_id="list_credit_packages",
        responses=errors(401, 403),
    )
    async def packages(self, gateway: Injected[GatewayState]) -> PackageList:
        """The credit packages on sale; ``purchasable`` when the checkout provider sells it."""
        name = gateway.settings.payments.checkout_provider
        provider = checkout_provider(gateway.payments, name)
        return PackageList(
            data=[
                PackageRead(
                    id=package.id,
                    name=package.name,
                    credits=format_credits(package.credits_micro),
                    price=package.price,
                    currency=package.currency,
                    purchasable=provider is not None and bool(package.provider_price_ids.get(name)),
                )
                for package in gateway.settings.credit_packages
            ],
            checkout_provider=name if provider is not None else "",
        )

    @post(
        "/checkout/",
        status_code=201,
        guards=[requires(Permission.BILLING)],
        operation_id="create_checkout",
        responses=errors(400, 401, 403, 404, 413, 502, 503),
    )
    async def checkout(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        data: JSONBody[CheckoutCreate],
    ) -> CheckoutCreated:
        """Open a checkout for a package at the payment provider (owners only); send the buyer to
        ``url``. The credits arrive with the provider's webhook."""
        payments = gateway.settings.payments
        page = str(request.base_url).rstrip("/") + BILLING_PAGE
        provider = checkout_provider(gateway.payments, payments.checkout_provider)
        session = await open_checkout(
            provider,
            gateway.settings.credit_packages,
            data.package,
            account_id=caller.account_id,
            customer_email=caller.principal.email if caller.principal is not None else "",
            success_url=payments.success_url or f"{page}?checkout=success",
            cancel_url=payments.cancel_url or f"{page}?checkout=cancelled",
        )
        assert provider is not None  # open_checkout refused otherwise
        return CheckoutCreated(url=session.url, session_id=session.id, provider=provider.name)


@post(
    "/webhooks/payments/{provider:str}",
    status_code=200,
    request_max_body_size=WEBHOOK_MAX_BODY_BYTES,
    operation_id="receive_payment_webhook",
    tags=["billing"],
    security=PUBLIC,
    responses=errors(400, 404, 409, 413),
)
async def receive_payment_webhook(
    request: Request[Any, Any, Any], provider: Annotated[str, Parameter(max_length=40)]
) -> WebhookResult:
    """A payment provider's signed event (register this URL at the provider)."""
    gateway: GatewayState = request.app.state.gateway
    body = await request.body()
    return await receive_webhook(
        gateway.payments,
        provider,
        {name.lower(): value for name, value in request.headers.items()},
        body,
        gateway.now().timestamp(),
        sessionmaker=gateway.sessionmaker,
        counters=gateway.counters,
        prefix=gateway.settings.redis_prefix,
        packages=gateway.settings.credit_packages,
    )

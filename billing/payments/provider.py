"""The small interface a payment provider implements, and what its webhooks become.

A provider does two things: open a checkout for a package (its hosted page's URL), and turn a
webhook request into a :data:`Notice` after checking the signature and the timestamp. It never
touches the ledger: :mod:`billing.payments.credits` does, the same way for every provider, so
a third provider fits without touching billing.

Errors (all ``PaymentError``, each with its HTTP status for the webhook route):

    BadSignature       400  signature missing or wrong (a body changed after signing included)
    StaleEvent         400  signed timestamp outside the tolerance (a replay of an old event)
    MalformedEvent     400  signed but not the shape the provider documents
    UnknownPackage     400  a paid event names no configured package (or a price it is not sold at)
    PurchaseNotFound   409  a reversal arrived before its purchase: the provider retries later
    CheckoutFailed     502  the provider refused or could not be reached when opening a checkout
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import msgspec

from billing.payments.packages import CreditPackage

__all__ = [
    "BadSignature",
    "CheckoutFailed",
    "CheckoutRequest",
    "CheckoutSession",
    "Ignored",
    "MalformedEvent",
    "Notice",
    "Paid",
    "PaymentError",
    "PaymentProvider",
    "PurchaseNotFound",
    "Reversed",
    "StaleEvent",
    "UnknownPackage",
]


class PaymentError(Exception):
    status_code = 400
    type = "invalid_request_error"
    code = "payment_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadSignature(PaymentError):
    code = "invalid_signature"


class StaleEvent(PaymentError):
    code = "stale_event"


class MalformedEvent(PaymentError):
    code = "malformed_event"


class UnknownPackage(PaymentError):
    code = "unknown_package"


class PurchaseNotFound(PaymentError):
    status_code = 409
    code = "purchase_not_found"


class CheckoutFailed(PaymentError):
    status_code = 502
    type = "api_error"
    code = "checkout_failed"


class CheckoutRequest(msgspec.Struct, frozen=True):
    """What Tollway asks a provider for. The provider must carry ``account_id`` and
    ``package.id`` in the session's metadata (custom data) so its paid event names them."""

    package: CreditPackage
    account_id: int
    customer_email: str = ""
    success_url: str = ""
    cancel_url: str = ""


class CheckoutSession(msgspec.Struct, frozen=True):
    id: str
    url: str


class Paid(msgspec.Struct, frozen=True):
    """A completed, paid purchase. ``reference`` is the provider's id a later reversal names
    (Stripe: the payment intent; LemonSqueezy: the order); ``price_id`` is the price or variant
    actually bought, checked against the package so custom data cannot upgrade a purchase."""

    event_id: str
    reference: str
    account_id: int
    package_id: str
    price_id: str
    amount_minor: int
    currency: str


class Reversed(msgspec.Struct, frozen=True):
    """Money given back for the purchase ``reference``. ``refunded_total_minor`` is the running
    total refunded so far (what Stripe and LemonSqueezy report), so partial refunds and repeated
    events take back credits in proportion, never twice; ``None`` means all of it (a lost
    chargeback)."""

    event_id: str
    reference: str
    refunded_total_minor: int | None
    reason: str = "refund"


class Ignored(msgspec.Struct, frozen=True):
    """A verified event Tollway does not act on; the webhook still answers 200."""

    event_id: str
    event_type: str


Notice = Paid | Reversed | Ignored


@runtime_checkable
class PaymentProvider(Protocol):
    """One payment provider; ``name`` is its route segment (``/webhooks/payments/{name}``)."""

    name: str

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> Notice:
        """Verify the signature (and timestamp, ``now`` in Unix seconds) and read the event;
        raises :class:`PaymentError` subclasses, never anything else for any input."""
        ...

    async def aclose(self) -> None: ...

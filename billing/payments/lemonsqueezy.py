"""LemonSqueezy: its checkout API by plain HTTP, its webhooks verified by their HMAC.

Checkout: ``POST /v1/checkouts`` (JSON:API) with the store and the package's variant as
relationships, ``checkout_data.custom`` {account_id, package_id} and the variant as the only one
the page offers; the answer's ``data.attributes.url`` is the hosted checkout.

Webhooks: ``X-Signature`` is the hex HMAC-SHA256 of the raw body under the webhook's signing
secret, compared in constant time. Then, by ``meta.event_name``:

    order_created with status paid → Paid (variant from first_order_item, total, currency,
                                     account and package from meta.custom_data)
    order_refunded                 → Reversed (the order's running refunded_amount)
    anything else                  → Ignored

LemonSqueezy signs no timestamp and sends no event id. What stands in for both: each notice's
event id is derived from what it does — ``order_created:<order>`` and
``order_refunded:<order>:<refunded_amount>`` — and stored once, so a replayed delivery (a
captured body sent again, a retry, a resend from LemonSqueezy's dashboard) finds its row and
moves nothing; a reversal's running total can never take back more than it covers. The order's
``created_at`` is deliberately not held to a window: an operator resending a failed delivery
hours later must still get the purchase granted, and a replay of an old body is harmless.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Annotated

import httpx
import msgspec

from billing.payments.provider import (
    BadSignature,
    CheckoutFailed,
    CheckoutRequest,
    CheckoutSession,
    Ignored,
    MalformedEvent,
    Notice,
    Paid,
    Reversed,
)

__all__ = ["LemonSqueezyProvider"]

log = logging.getLogger("tollway.billing.payments")
SIGNATURE_HEADER = "x-signature"
JSON_API = "application/vnd.api+json"

Id = Annotated[str, msgspec.Meta(pattern=r"^[\x21-\x7e]{1,120}$")]
Minor = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{3}$")]
Number = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class _OrderItem(msgspec.Struct):
    variant_id: Number


class _OrderAttributes(msgspec.Struct):
    """The view of an order we read (lemonsqueezy.js ``orders/types.ts``)."""

    status: str
    currency: Currency
    total: Minor
    first_order_item: _OrderItem | None = None
    refunded: bool = False
    refunded_amount: Minor | None = None


class _Order(msgspec.Struct):
    id: Id
    attributes: _OrderAttributes


class _Meta(msgspec.Struct):
    event_name: str
    custom_data: dict[str, str | int] | None = None


class _Envelope(msgspec.Struct):
    meta: _Meta
    data: msgspec.Raw


class _Resource(msgspec.Struct):
    id: Id


class _CheckoutAttributes(msgspec.Struct):
    url: str


class _Checkout(msgspec.Struct):
    id: Id
    attributes: _CheckoutAttributes


class _CheckoutAnswer(msgspec.Struct):
    data: _Checkout


_envelope = msgspec.json.Decoder(_Envelope)
_order = msgspec.json.Decoder(_Order)
_resource = msgspec.json.Decoder(_Resource)
_checkout_answer = msgspec.json.Decoder(_CheckoutAnswer)


class LemonSqueezyProvider:
    name = "lemonsqueezy"

    def __init__(
        self,
        *,
        api_key: str,
        store_id: str,
        webhook_secret: str,
        api_base: str = "https://api.lemonsqueezy.com",
        timeout_s: float = 20.0,
        proxy: str | None = None,
    ) -> None:
        self._api_key = api_key
        self._store_id = store_id
        self._webhook_secret = webhook_secret
        # One client for every checkout; trust_env off as for every upstream (egress_proxy alone routes).
        self._client = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=20),
            trust_env=False,
            proxy=proxy,
        )

    @property
    def can_checkout(self) -> bool:
        return bool(self._api_key and self._store_id)

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        variant = request.package.provider_price_ids.get(self.name, "")
        response = await self._post_checkout(_checkout_body(request, self._store_id, variant))
        if response.status_code != 201:
            log.warning("lemonsqueezy refused a checkout: HTTP %d", response.status_code)
            raise CheckoutFailed("the payment provider could not open a checkout; try again later")
        try:
            answer = _checkout_answer.decode(response.content)
        except (msgspec.DecodeError, RecursionError):
            raise CheckoutFailed("the payment provider answered without a checkout URL") from None
        if not answer.data.attributes.url.startswith(("https://", "http://")):
            raise CheckoutFailed("the payment provider answered without a checkout URL")
        return CheckoutSession(id=answer.data.id, url=answer.data.attributes.url)

    async def _post_checkout(self, body: bytes) -> httpx.Response:
        headers = {"Accept": JSON_API, "Content-Type": JSON_API, "Authorization": f"Bearer {self._api_key}"}
        try:
            return await self._client.post("/v1/checkouts", content=body, headers=headers)
        except httpx.HTTPError as error:
            log.warning("lemonsqueezy could not be reached for a checkout: %s", type(error).__name__)
            raise CheckoutFailed("the payment provider could not be reached; try again later") from None

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> Notice:
        self._verify(headers.get(SIGNATURE_HEADER, ""), body)
        try:
            envelope = _envelope.decode(body)
            return _notice(envelope)
        except (msgspec.DecodeError, RecursionError) as error:  # ValidationError is a DecodeError
            raise MalformedEvent(f"the signed event is not the shape LemonSqueezy documents: {error}") from None

    async def aclose(self) -> None:
        await self._client.aclose()

    def _verify(self, signature: str, body: bytes) -> None:
        if not self._webhook_secret:
            raise BadSignature("no LemonSqueezy signing secret is configured")
        expected = hmac.new(self._webhook_secret.encode(), body, hashlib.sha256).hexdigest().encode()
        if not signature or not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            raise BadSignature("the X-Signature does not match the body")


def _checkout_body(request: CheckoutRequest, store_id: str, variant: str) -> bytes:
    custom = {"account_id": str(request.account_id), "package_id": request.package.id}
    checkout_data: dict[str, object] = {"custom": custom}
    if request.customer_email:
        checkout_data["email"] = request.customer_email
    # Only this variant on the page: the buyer cannot switch to another of the product's variants.
    product_options: dict[str, object] = {"enabled_variants": [int(variant)] if variant.isdigit() else []}
    if request.success_url:
        product_options["redirect_url"] = request.success_url
    return msgspec.json.encode(
        {
            "data": {
                "type": "checkouts",
                "attributes": {"checkout_data": checkout_data, "product_options": product_options},
                "relationships": {
                    "store": {"data": {"type": "stores", "id": store_id}},
                    "variant": {"data": {"type": "variants", "id": variant}},
                },
            }
        }
    )


def _notice(envelope: _Envelope) -> Notice:
    event = envelope.meta.event_name[:60]
    custom = envelope.meta.custom_data or {}
    if event not in ("order_created", "order_refunded") or "package_id" not in custom:
        # Not an order event, or an order some other product of the store sold.
        return Ignored(f"{event}:{_resource.decode(envelope.data).id}", event)
    order = _order.decode(envelope.data)
    attributes = order.attributes
    if event == "order_created":
        if attributes.status != "paid":
            return Ignored(f"{event}:{order.id}", event)
        if attributes.first_order_item is None:
            raise MalformedEvent(f"order {order.id} has no first_order_item")
        return Paid(
            event_id=f"{event}:{order.id}",
            reference=order.id,
            account_id=_account_id(custom.get("account_id")),
            package_id=str(custom["package_id"])[:64],
            price_id=str(attributes.first_order_item.variant_id),
            amount_minor=attributes.total,
            currency=attributes.currency.upper(),
        )
    refunded = attributes.refunded_amount
    if refunded is None and not attributes.refunded:
        return Ignored(f"{event}:{order.id}", event)
    return Reversed(
        event_id=f"{event}:{order.id}:{refunded if refunded is not None else 'all'}",
        reference=order.id,
        refunded_total_minor=refunded,
    )


def _account_id(value: object) -> int:
    text = str(value) if isinstance(value, int | str) else ""
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**63:
        raise MalformedEvent("the order's custom data names no account (account_id)")
    return int(text)

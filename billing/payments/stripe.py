"""Stripe: Checkout Sessions through the official library, webhooks verified by it.

Checkout: one Checkout Session in ``payment`` mode for the package's price, with
``client_reference_id`` and ``metadata`` {account_id, package_id, price_id} on the session and
on its PaymentIntent (Stripe copies a PaymentIntent's metadata to its Charge, so a refund's
charge says whether it is a Tollway purchase). The library is pointed at ``api_base``
(``base_addresses``) and speaks through one async httpx client of ours.

Webhooks (``Stripe-Signature: t=…,v1=…``): the library checks the HMAC; the timestamp is
checked here against the injected ``now``, since the library reads the wall clock. Then:

    checkout.session.completed (payment_status paid),
    checkout.session.async_payment_succeeded        → Paid (sessions carrying our metadata)
    charge.refunded (a charge carrying our metadata) → Reversed (running amount_refunded)
    charge.dispute.closed with status lost           → Reversed (all of it)
    anything else                                    → Ignored

Which price was bought comes from the session's metadata: only our secret key writes it (a buyer
cannot), and the event's session carries no line items without another API call. A purchase is
keyed by its Checkout Session id rather than the event id, so the two events that can announce
one paid session grant it once between them; reversals are keyed by their event id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

import httpx
import msgspec
import stripe

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
    StaleEvent,
)

__all__ = ["StripeProvider"]

log = logging.getLogger("tollway.billing.payments")
SIGNATURE_HEADER = "stripe-signature"
_MAX_HEADER = 4096


# What we store must fit the payments table whatever a signed body says: ids are printable
# ASCII that fits its columns, money fits a bigint, a currency is three letters.
Id = Annotated[str, msgspec.Meta(pattern=r"^[\x21-\x7e]{1,200}$")]
Minor = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{3}$")]


class _Session(msgspec.Struct):
    """The view of a Checkout Session we read (stripe's ``checkout.Session``)."""

    id: Id
    payment_status: str = ""
    payment_intent: Id | None = None
    amount_total: Minor | None = None
    currency: Currency | None = None
    metadata: dict[str, str] = {}


class _Charge(msgspec.Struct):
    id: Id
    amount_refunded: Minor
    payment_intent: Id | None = None
    metadata: dict[str, str] = {}


class _Dispute(msgspec.Struct):
    id: Id
    status: str
    charge: Id
    payment_intent: Id | None = None


class _Data(msgspec.Struct):
    object: msgspec.Raw


class _Event(msgspec.Struct):
    id: Id
    type: str
    data: _Data


_event = msgspec.json.Decoder(_Event)
_session = msgspec.json.Decoder(_Session)
_charge = msgspec.json.Decoder(_Charge)
_dispute = msgspec.json.Decoder(_Dispute)
_PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})


class _Client(httpx.AsyncClient):
    """The library hands its form-encoded body over as ``data=<str>``, which httpx deprecates
    for raw content; sent as ``content=``, byte for byte the same request."""

    async def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        if isinstance(kwargs.get("data"), str | bytes):
            kwargs["content"] = kwargs.pop("data")
        return await super().request(method, url, **kwargs)


class StripeProvider:
    name = "stripe"

    def __init__(
        self,
        *,
        api_key: str,
        webhook_secret: str,
        api_base: str = "https://api.stripe.com",
        tolerance_s: int = 300,
        timeout_s: float = 20.0,
        proxy: str | None = None,
    ) -> None:
        self._webhook_secret = webhook_secret
        self._tolerance_s = tolerance_s
        self._has_key = bool(api_key)
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._http = stripe.HTTPXClient(timeout=timeout)
        # Our own client instead of the one HTTPXClient made: it would trust HTTP(S)_PROXY from
        # the environment, which Tollway ignores for every upstream (egress_proxy alone routes).
        self._http._client_async = _Client(trust_env=False, proxy=proxy, timeout=timeout)
        self._client = stripe.StripeClient(
            api_key or "unset",
            base_addresses={"api": api_base.rstrip("/")},
            http_client=self._http,
            max_network_retries=1,
        )

    @property
    def can_checkout(self) -> bool:
        return self._has_key

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        price = request.package.provider_price_ids.get(self.name, "")
        metadata = {"account_id": str(request.account_id), "package_id": request.package.id, "price_id": price}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [{"price": price, "quantity": 1}],
            "client_reference_id": str(request.account_id),
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
        }
        if request.customer_email:
            params["customer_email"] = request.customer_email
        try:
            session = await self._client.v1.checkout.sessions.create_async(params)  # type: ignore[arg-type]
        except stripe.StripeError as error:
            # Stripe's own words may quote the key's tail or the price: for the log, never the caller.
            log.warning(
                "stripe refused a checkout: %s (HTTP %s, code %s)", type(error).__name__, error.http_status, error.code
            )
            raise CheckoutFailed("the payment provider could not open a checkout; try again later") from None
        if not session.url or not session.id:
            raise CheckoutFailed("the payment provider answered without a checkout URL")
        return CheckoutSession(id=session.id, url=session.url)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> Notice:
        self._verify(headers.get(SIGNATURE_HEADER, ""), body, now)
        try:
            event = _event.decode(body)
            return self._notice(event)
        except (msgspec.DecodeError, RecursionError) as error:  # ValidationError is a DecodeError
            raise MalformedEvent(f"the signed event is not the shape Stripe documents: {error}") from None

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    def _verify(self, header: str, body: bytes, now: float) -> None:
        if not self._webhook_secret:
            raise BadSignature("no Stripe webhook secret is configured")
        if not header or len(header) > _MAX_HEADER or not header.isascii():
            raise BadSignature("missing or unreadable Stripe-Signature header")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadSignature("the body is not what Stripe signs (not UTF-8)") from None
        try:
            # tolerance=None: the library would compare with time.time(); the clock is ours.
            stripe.WebhookSignature.verify_header(payload, header, self._webhook_secret, tolerance=None)
        except stripe.SignatureVerificationError:
            raise BadSignature("the Stripe-Signature does not match the body") from None
        signed_at = _signed_timestamp(header)
        if signed_at < now - self._tolerance_s:
            raise StaleEvent(f"the event was signed more than {self._tolerance_s} s ago")

    def _notice(self, event: _Event) -> Notice:
        if event.type in _PAID_EVENTS:
            session = _session.decode(event.data.object)
            # Unpaid (a delayed method: its async_payment_succeeded follows), or a session some
            # other product of the Stripe account opened (no package in its metadata).
            if session.payment_status != "paid" or "package_id" not in session.metadata:
                return Ignored(event.id, event.type)
            return _paid(session)
        if event.type == "charge.refunded":
            charge = _charge.decode(event.data.object)
            if "package_id" not in charge.metadata:
                return Ignored(event.id, event.type)  # a charge some other product of the account made
            return Reversed(
                event_id=event.id,
                reference=charge.payment_intent or charge.id,
                refunded_total_minor=charge.amount_refunded,
            )
        if event.type == "charge.dispute.closed":
            dispute = _dispute.decode(event.data.object)
            if dispute.status != "lost":
                return Ignored(event.id, event.type)
            return Reversed(
                event_id=event.id,
                reference=dispute.payment_intent or dispute.charge,
                refunded_total_minor=None,
                reason="chargeback",
            )
        return Ignored(event.id, event.type)


def _paid(session: _Session) -> Paid:
    metadata = session.metadata
    if session.amount_total is None or not session.currency:
        raise MalformedEvent(f"paid session {session.id} has no amount_total or currency")
    return Paid(
        event_id=session.id,
        reference=session.payment_intent or session.id,
        account_id=_account_id(metadata.get("account_id", "")),
        package_id=metadata.get("package_id", ""),
        price_id=metadata.get("price_id", ""),
        amount_minor=session.amount_total,
        currency=session.currency.upper(),
    )


def _account_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**63:
        raise MalformedEvent("the session's metadata names no account (account_id)")
    return int(text)


def _signed_timestamp(header: str) -> int:
    """The ``t=`` the library verified: the first one, as it reads it."""
    for item in header.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t":
            return int(parts[1])
    raise BadSignature("the Stripe-Signature has no timestamp")

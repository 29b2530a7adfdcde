"""A fake Stripe API on 127.0.0.1 speaking the wire format the ``stripe`` library uses.

``POST /v1/checkout/sessions`` takes the library's form encoding (``line_items[0][price]=…``,
``metadata[account_id]=…``) behind ``Authorization: Bearer <secret key>`` and answers a
``checkout.session`` object whose ``url`` is a page on this fake (``GET /c/pay/<id>``). Errors are
Stripe's ``{"error": {type, message, code}}`` bodies.

The test plays Stripe's side of a purchase with :meth:`FakeStripe.completed_event` (the
``checkout.session.completed`` event for a session the gateway opened), :meth:`refund_event`
(``charge.refunded`` with the running ``amount_refunded``) and :meth:`dispute_lost_event`, and
signs each body with :func:`sign` exactly as Stripe does (``Stripe-Signature: t=…,v1=…``: the hex
HMAC-SHA256 of ``"<t>.<body>"`` under the endpoint's secret).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.asgi import read_request, serve_lifespan

API_KEY = "sk_test_fake_stripe_key_0123456789"
WEBHOOK_SECRET = "whsec_fake_stripe_endpoint_secret"
PRICES = {"price_starter": (900, "usd"), "price_pro": (2900, "usd")}


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``body`` (independent of the library)."""
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node: Any = root
        for part, following in itertools.pairwise(parts):
            child: Any = [] if following.isdigit() else {}
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(child)
                node = node[index]
            else:
                node = node.setdefault(part, child)
        last = parts[-1]
        if isinstance(node, list):
            node.append(value)
        else:
            node[last] = value
    return root


@dataclass
class FakeStripe:
    url: str = ""
    fail_status: int = 0  # answer checkout requests with this Stripe error status
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)  # each checkout request, decoded
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        headers, body = await read_request(scope, receive)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path.startswith("/c/pay/"):
            page = f"<html><body><h1>Fake Stripe Checkout</h1><p>{path.rsplit('/', 1)[1]}</p></body></html>"
            await _send(send, 200, page.encode(), "text/html")
            return
        if (method, path) != ("POST", "/v1/checkout/sessions"):
            await _error(send, 404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})")
            return
        if headers.get("authorization") != f"Bearer {API_KEY}":
            await _error(send, 401, "invalid_request_error", "Invalid API Key provided: sk_test_****")
            return
        params = unflatten(parse_qsl(body.decode(), keep_blank_values=True))
        self.received.append(params)
        if self.fail_status:
            await _error(send, self.fail_status, "api_error", f"Something went wrong; key {API_KEY}")
            return
        price = params.get("line_items", [{}])[0].get("price", "")
        if params.get("mode") != "payment" or price not in PRICES:
            await _error(send, 400, "invalid_request_error", f"No such price: '{price}'")
            return
        await _send(send, 200, json.dumps(self._session(params, price)).encode(), "application/json")

    def _session(self, params: dict[str, Any], price: str) -> dict[str, Any]:
        number = next(self.counter)
        session_id = f"cs_test_{number:04d}{'a' * 20}"
        amount, currency = PRICES[price]
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "client_reference_id": params.get("client_reference_id"),
            "currency": currency,
            "customer_email": params.get("customer_email"),
            "livemode": False,
            "metadata": params.get("metadata", {}),
            "mode": "payment",
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "url": f"{self.url}/c/pay/{session_id}",
            "_price": price,
            "_payment_metadata": params.get("payment_intent_data", {}).get("metadata", {}),
        }
        self.sessions[session_id] = session
        return {k: v for k, v in session.items() if not k.startswith("_")}

    def completed_event(self, session_id: str, *, event_type: str = "checkout.session.completed") -> bytes:
        """The event Stripe sends when the buyer paid the session."""
        session = self.sessions[session_id]
        paid = {k: v for k, v in session.items() if not k.startswith("_")}
        paid.update(
            payment_intent="pi_" + session_id.removeprefix("cs_test_"),
            payment_status="paid",
            status="complete",
            url=None,
        )
        return _event(event_type, paid)

    def refund_event(self, session_id: str, amount_refunded: int) -> bytes:
        """``charge.refunded`` for the session's charge, with the running total refunded."""
        session = self.sessions[session_id]
        suffix = session_id.removeprefix("cs_test_")
        charge = {
            "id": "ch_" + suffix,
            "object": "charge",
            "amount": session["amount_total"],
            "amount_captured": session["amount_total"],
            "amount_refunded": amount_refunded,
            "currency": session["currency"],
            "metadata": session["_payment_metadata"],
            "paid": True,
            "payment_intent": "pi_" + suffix,
            "refunded": amount_refunded >= session["amount_total"],
            "status": "succeeded",
        }
        return _event("charge.refunded", charge)

    def dispute_lost_event(self, session_id: str) -> bytes:
        session = self.sessions[session_id]
        suffix = session_id.removeprefix("cs_test_")
        dispute = {
            "id": "dp_" + suffix,
            "object": "dispute",
            "amount": session["amount_total"],
            "charge": "ch_" + suffix,
            "currency": session["currency"],
            "metadata": {},
            "payment_intent": "pi_" + suffix,
            "reason": "fraudulent",
            "status": "lost",
        }
        return _event("charge.dispute.closed", dispute)


_events = itertools.count(1)


def _event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    event = {
        "id": event_id or f"evt_{next(_events):06d}{'b' * 18}",
        "object": "event",
        "api_version": "2025-10-29.clover",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return json.dumps(event).encode()


def other_event(event_type: str = "customer.created") -> bytes:
    return _event(event_type, {"id": "cus_fake", "object": "customer"})


async def _send(send: Any, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"request-id", b"req_fake")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Any, status: int, error_type: str, message: str) -> None:
    body = json.dumps({"error": {"type": error_type, "message": message, "code": "resource_missing"}})
    await _send(send, status, body.encode(), "application/json")

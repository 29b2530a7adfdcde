"""A fake LemonSqueezy API on 127.0.0.1 speaking its JSON:API wire format.

``POST /v1/checkouts`` checks the headers LemonSqueezy requires (``Accept`` and ``Content-Type``
``application/vnd.api+json``, ``Authorization: Bearer <key>``) and the body's shape (``type``
checkouts, ``relationships.store`` and ``relationships.variant``), and answers 201 with a
checkout whose ``attributes.url`` is a page on this fake. Errors are JSON:API ``errors`` lists.

The test plays LemonSqueezy's side with :meth:`FakeLemonSqueezy.order_created` (the order a
checkout became, ``meta.custom_data`` carrying the checkout's custom data) and
:meth:`order_refunded` (the same order with its running ``refunded_amount``), signing each body
with :func:`sign`: the hex HMAC-SHA256 of the raw body under the signing secret (``X-Signature``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.asgi import read_request, serve_lifespan

API_KEY = "ls_fake_api_key_eyJ0eXAiOiJKV1Qi"
STORE_ID = "30883"
WEBHOOK_SECRET = "ls-fake-signing-secret"
VARIANTS = {"starter": "85474", "pro": "85475"}
PRICES = {"85474": 900, "85475": 2900}
JSON_API = "application/vnd.api+json"


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """The ``X-Signature`` LemonSqueezy sends with ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class FakeLemonSqueezy:
    url: str = ""
    fail_status: int = 0
    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    orders: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        headers, body = await read_request(scope, receive)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path.startswith("/checkout/custom/"):
            await _send(send, 200, b"<html><body><h1>Fake LemonSqueezy checkout</h1></body></html>", "text/html")
            return
        if (method, path) != ("POST", "/v1/checkouts"):
            await _errors(send, 404, "Not Found")
            return
        if headers.get("authorization") != f"Bearer {API_KEY}":
            await _errors(send, 401, "Unauthenticated.")
            return
        if headers.get("accept") != JSON_API or headers.get("content-type") != JSON_API:
            await _errors(send, 406, "Not Acceptable")
            return
        request = json.loads(body)
        self.received.append(request)
        if self.fail_status:
            await _errors(send, self.fail_status, f"Server Error (key {API_KEY})")
            return
        data = request.get("data", {})
        relationships = data.get("relationships", {})
        store = relationships.get("store", {}).get("data", {})
        variant = relationships.get("variant", {}).get("data", {})
        if (
            data.get("type") != "checkouts"
            or store != {"type": "stores", "id": STORE_ID}
            or variant.get("type") != "variants"
            or variant.get("id") not in PRICES
        ):
            await _errors(send, 422, "The variant field is invalid.")
            return
        await _send(send, 201, json.dumps(self._checkout(data, variant["id"])).encode(), JSON_API)

    def _checkout(self, data: dict[str, Any], variant_id: str) -> dict[str, Any]:
        checkout_id = str(uuid.uuid4())
        attributes = data.get("attributes", {})
        checkout_data = attributes.get("checkout_data", {})
        checkout = {
            "type": "checkouts",
            "id": checkout_id,
            "attributes": {
                "store_id": int(STORE_ID),
                "variant_id": int(variant_id),
                "custom_price": None,
                "product_options": attributes.get("product_options", {}),
                "checkout_options": {"embed": False, "media": True, "logo": True},
                "checkout_data": {"email": checkout_data.get("email", ""), "custom": checkout_data.get("custom", [])},
                "expires_at": None,
                "created_at": "2026-12-01T03:00:00.000000Z",
                "updated_at": "2026-12-01T03:00:00.000000Z",
                "test_mode": True,
                "url": f"{self.url}/checkout/custom/{checkout_id}?signature=fake",
            },
            "relationships": {},
            "links": {"self": f"{self.url}/v1/checkouts/{checkout_id}"},
        }
        self.checkouts[checkout_id] = checkout
        return {
            "jsonapi": {"version": "1.0"},
            "links": {"self": f"{self.url}/v1/checkouts/{checkout_id}"},
            "data": checkout,
        }

    def order_created(self, checkout_id: str, *, status: str = "paid") -> tuple[str, bytes]:
        """The order the checkout became, as ``order_created``; returns (order id, body)."""
        order_id = str(next(self.orders))
        checkout = self.checkouts[checkout_id]["attributes"]
        checkout["_order"] = order_id
        return order_id, self._webhook("order_created", checkout, order_id, status=status, refunded_amount=0)

    def order_refunded(self, checkout_id: str, refunded_amount: int) -> bytes:
        checkout = self.checkouts[checkout_id]["attributes"]
        total = PRICES[str(checkout["variant_id"])]
        status = "refunded" if refunded_amount >= total else "partial_refund"
        return self._webhook(
            "order_refunded", checkout, checkout["_order"], status=status, refunded_amount=refunded_amount
        )

    def _webhook(
        self, event: str, checkout: dict[str, Any], order_id: str, *, status: str, refunded_amount: int
    ) -> bytes:
        variant = checkout["variant_id"]
        total = PRICES[str(variant)]
        order = {
            "type": "orders",
            "id": order_id,
            "attributes": {
                "store_id": int(STORE_ID),
                "customer_id": 1,
                "identifier": str(uuid.uuid4()),
                "order_number": int(order_id),
                "user_name": "Darlene Daugherty",
                "user_email": "buyer@example.com",
                "currency": "USD",
                "currency_rate": "1.0000",
                "subtotal": total,
                "discount_total": 0,
                "tax": 0,
                "total": total,
                "refunded_amount": refunded_amount,
                "subtotal_usd": total,
                "total_usd": total,
                "refunded_amount_usd": refunded_amount,
                "tax_name": None,
                "tax_rate": "0.00",
                "status": status,
                "status_formatted": status.replace("_", " ").title(),
                "refunded": refunded_amount >= total,
                "refunded_at": None,
                "first_order_item": {
                    "id": int(order_id) * 10,
                    "order_id": int(order_id),
                    "product_id": 1,
                    "variant_id": variant,
                    "product_name": "Credits",
                    "variant_name": "Default",
                    "price": total,
                    "created_at": "2026-12-01T03:00:00.000000Z",
                    "updated_at": "2026-12-01T03:00:00.000000Z",
                    "test_mode": True,
                },
                "urls": {"receipt": "https://app.lemonsqueezy.com/my-orders/fake"},
                "created_at": "2026-12-01T03:00:00.000000Z",
                "updated_at": "2026-12-01T03:00:00.000000Z",
                "test_mode": True,
            },
            "relationships": {},
            "links": {"self": f"{self.url}/v1/orders/{order_id}"},
        }
        meta = {
            "test_mode": True,
            "event_name": event,
            "webhook_id": "fa6d1d5e-0000-4000-8000-000000000001",
            "custom_data": checkout["checkout_data"]["custom"],
        }
        return json.dumps({"meta": meta, "data": order}).encode()


def other_event(event: str = "subscription_created") -> bytes:
    data = {"type": "subscriptions", "id": "1", "attributes": {"status": "active"}}
    return json.dumps({"meta": {"event_name": event, "custom_data": {"package_id": "starter"}}, "data": data}).encode()


async def _send(send: Any, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": body})


async def _errors(send: Any, status: int, detail: str) -> None:
    body = {"jsonapi": {"version": "1.0"}, "errors": [{"status": str(status), "title": detail, "detail": detail}]}
    await _send(send, status, json.dumps(body).encode(), JSON_API)

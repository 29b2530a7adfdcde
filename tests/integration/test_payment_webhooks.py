"""Buying credits end to end, on both backends: the gateway opens checkouts at the fake Stripe
and LemonSqueezy APIs, and their signed webhooks grant, refuse, reverse and ignore — once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from billing.models import Payment
from tests.fakes import lemonsqueezy_api, stripe_api
from tests.fakes.gateway_fixtures import Backend, Gateway, _with_session, gateway_settings, start_gateway
from tests.fakes.lemonsqueezy_api import FakeLemonSqueezy
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.payments import CREDIT, PACKAGES, Owner, Providers, selling_gateway
from tests.fakes.servers import ThreadedServer
from tests.fakes.stripe_api import FakeStripe


class _Current:
    """One socket per fake for the session (the gateway's settings, hence its cached app, stay the
    same); each test gets a fresh fake behind it."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            from tests.fakes.asgi import serve_lifespan

            await serve_lifespan(receive, send)
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="session")
def _payment_servers() -> Iterator[tuple[_Current, ThreadedServer, _Current, ThreadedServer]]:
    stripe_current, ls_current = _Current(), _Current()
    stripe_server = ThreadedServer(stripe_current).start()
    ls_server = ThreadedServer(ls_current).start()
    try:
        yield stripe_current, stripe_server, ls_current, ls_server
    finally:
        stripe_server.stop()
        ls_server.stop()


@pytest.fixture
def payment_fakes(_payment_servers: tuple[_Current, ThreadedServer, _Current, ThreadedServer]) -> Providers:
    stripe_current, stripe_server, ls_current, ls_server = _payment_servers
    stripe_current.app = FakeStripe(url=stripe_server.url)
    ls_current.app = FakeLemonSqueezy(url=ls_server.url)
    return Providers(stripe_current.app, ls_current.app)


@pytest.fixture
def stripe_gateway(backend: Backend, fake_openai: FakeOpenAI, payment_fakes: Providers) -> Iterator[Gateway]:
    gateway, server = selling_gateway(backend, fake_openai, payment_fakes, "stripe")
    try:
        yield gateway
    finally:
        server.stop()


@pytest.fixture
def ls_gateway(backend: Backend, fake_openai: FakeOpenAI, payment_fakes: Providers) -> Iterator[Gateway]:
    gateway, server = selling_gateway(backend, fake_openai, payment_fakes, "lemonsqueezy")
    try:
        yield gateway
    finally:
        server.stop()


def send_stripe(gateway: Gateway, body: bytes, signature: str | None = None) -> httpx.Response:
    headers = {"Stripe-Signature": signature or stripe_api.sign(body), "Content-Type": "application/json"}
    return httpx.post(gateway.url + "/webhooks/payments/stripe", content=body, headers=headers, timeout=30)


def send_ls(gateway: Gateway, body: bytes, signature: str | None = None) -> httpx.Response:
    headers = {
        "X-Signature": signature or lemonsqueezy_api.sign(body),
        "X-Event-Name": json.loads(body)["meta"]["event_name"],
        "Content-Type": "application/json",
    }
    return httpx.post(gateway.url + "/webhooks/payments/lemonsqueezy", content=body, headers=headers, timeout=30)


def credits(gateway: Gateway) -> tuple[int, int]:
    """Balance and available, as /api/credits/ shows them (micro-credits)."""
    body = httpx.get(gateway.url + "/api/credits/", headers={"Authorization": f"Bearer {gateway.key}"}).json()
    return round(float(body["balance"]) * CREDIT), round(float(body["available"]) * CREDIT)


def payments_count(gateway: Gateway) -> int:
    async def count(session: Any) -> int:
        return int(await session.scalar(select(func.count()).select_from(Payment)) or 0)

    return int(gateway.run(_with_session(gateway.settings, count)))


def stripe_checkout(gateway: Gateway, owner: Owner, package: str = "starter") -> dict[str, Any]:
    response = owner.post("/api/billing/checkout/", json={"package": package})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def reconcile_clean(gateway: Gateway, tmp_path: Path) -> None:
    from gateway.cli import main

    settings = gateway.settings
    config = tmp_path / "reconcile.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\nredis_url = "{settings.redis_url}"\n'
        f'redis_prefix = "{settings.redis_prefix}"\n'
    )
    assert main(["--config", str(config), "billing", "reconcile"]) == 0


def test_payment_stripe_checkout_returns_the_fake_url_and_its_webhook_grants_once(
    stripe_gateway: Gateway, payment_fakes: Providers, tmp_path: Path
) -> None:
    owner = Owner(stripe_gateway)
    opened = stripe_checkout(stripe_gateway, owner)
    fake = payment_fakes.stripe
    assert opened["provider"] == "stripe" and opened["session_id"] in fake.sessions
    assert opened["url"] == f"{fake.url}/c/pay/{opened['session_id']}"
    assert httpx.get(opened["url"]).status_code == 200  # the buyer's page, on the fake
    sent = fake.received[-1]
    assert sent["metadata"] == {
        "account_id": str(stripe_gateway.account_id),
        "package_id": "starter",
        "price_id": "price_starter",
    }
    assert sent["line_items"] == [{"price": "price_starter", "quantity": "1"}]
    assert sent["customer_email"] == "owner@acme.test"
    assert sent["success_url"] == stripe_gateway.url + "/billing?checkout=success"

    event = fake.completed_event(opened["session_id"])
    first = send_stripe(stripe_gateway, event)
    assert first.status_code == 200 and first.json()["outcome"] == "granted", first.text
    assert credits(stripe_gateway) == (12_000 * CREDIT, 12_000 * CREDIT)  # the mirror moved at once
    again = send_stripe(stripe_gateway, event)  # Stripe's retry
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert credits(stripe_gateway)[0] == 12_000 * CREDIT and payments_count(stripe_gateway) == 1
    reconcile_clean(stripe_gateway, tmp_path)


def test_payment_stripe_concurrent_deliveries_grant_once(stripe_gateway: Gateway, payment_fakes: Providers) -> None:
    opened = stripe_checkout(stripe_gateway, Owner(stripe_gateway), "pro")
    event = payment_fakes.stripe.completed_event(opened["session_id"])
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _n: send_stripe(stripe_gateway, event), range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert sorted(a.json()["outcome"] for a in answers) == ["duplicate"] * 4 + ["granted"]
    assert credits(stripe_gateway) == (30_000 * CREDIT, 30_000 * CREDIT)


def test_payment_stripe_refuses_forgeries_stale_and_altered_bodies(
    stripe_gateway: Gateway, payment_fakes: Providers
) -> None:
    opened = stripe_checkout(stripe_gateway, Owner(stripe_gateway))
    event = payment_fakes.stripe.completed_event(opened["session_id"])
    altered = event.replace(b'"amount_total": 900', b'"amount_total": 1')
    assert altered != event
    refused = {
        "bad signature": send_stripe(stripe_gateway, event, stripe_api.sign(event, secret="whsec_someone_else")),
        "no signature": httpx.post(stripe_gateway.url + "/webhooks/payments/stripe", content=event),
        "stale": send_stripe(stripe_gateway, event, stripe_api.sign(event, timestamp=int(time.time()) - 301)),
        "altered after signing": send_stripe(stripe_gateway, altered, stripe_api.sign(event)),
    }
    for why, response in refused.items():
        assert response.status_code == 400, why
        assert response.json()["error"]["code"] in ("invalid_signature", "stale_event"), why
    assert refused["stale"].json()["error"]["code"] == "stale_event"
    assert credits(stripe_gateway) == (0, 0) and payments_count(stripe_gateway) == 0


def test_payment_stripe_refunds_take_credits_back_in_proportion(
    stripe_gateway: Gateway, payment_fakes: Providers, tmp_path: Path
) -> None:
    fake = payment_fakes.stripe
    opened = stripe_checkout(stripe_gateway, Owner(stripe_gateway))
    assert send_stripe(stripe_gateway, fake.completed_event(opened["session_id"])).status_code == 200
    partial = send_stripe(stripe_gateway, fake.refund_event(opened["session_id"], 300))  # a third of $9
    assert partial.status_code == 200 and partial.json()["outcome"] == "reversed"
    assert credits(stripe_gateway) == (8_000 * CREDIT, 8_000 * CREDIT)
    full = send_stripe(stripe_gateway, fake.refund_event(opened["session_id"], 900))
    assert full.status_code == 200
    assert credits(stripe_gateway) == (0, 0)
    # A lost dispute after a full refund takes nothing more.
    assert send_stripe(stripe_gateway, fake.dispute_lost_event(opened["session_id"])).status_code == 200
    assert credits(stripe_gateway) == (0, 0)
    reconcile_clean(stripe_gateway, tmp_path)


def test_payment_stripe_unknown_and_foreign_events_are_200_and_move_nothing(
    stripe_gateway: Gateway, payment_fakes: Providers
) -> None:
    other = send_stripe(stripe_gateway, stripe_api.other_event())
    assert other.status_code == 200 and other.json()["outcome"] == "ignored"
    opened = stripe_checkout(stripe_gateway, Owner(stripe_gateway))
    # A refund of a purchase Tollway never recorded: 409, so Stripe retries once the purchase is in.
    early = send_stripe(stripe_gateway, payment_fakes.stripe.refund_event(opened["session_id"], 900))
    assert early.status_code == 409 and early.json()["error"]["code"] == "purchase_not_found"
    assert credits(stripe_gateway) == (0, 0) and payments_count(stripe_gateway) == 0


def test_payment_checkout_errors(stripe_gateway: Gateway, payment_fakes: Providers) -> None:
    owner = Owner(stripe_gateway)
    missing = owner.post("/api/billing/checkout/", json={"package": "platinum"})
    offline = owner.post("/api/billing/checkout/", json={"package": "offline"})
    assert (missing.status_code, offline.status_code) == (404, 404)
    assert missing.json()["error"]["code"] == "package_not_found"
    payment_fakes.stripe.fail_status = 500
    failed = owner.post("/api/billing/checkout/", json={"package": "starter"})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "checkout_failed"
    assert stripe_api.API_KEY not in failed.text and "went wrong" not in failed.text
    key = {"Authorization": f"Bearer {stripe_gateway.key}"}  # a key acts as an admin: no billing
    assert (
        httpx.post(stripe_gateway.url + "/api/billing/checkout/", json={"package": "starter"}, headers=key).status_code
        == 403
    )
    listed = httpx.get(stripe_gateway.url + "/api/billing/packages/", headers=key).json()
    assert listed["checkout_provider"] == "stripe"
    assert [(p["id"], p["credits"], p["price"], p["purchasable"]) for p in listed["data"]] == [
        ("starter", "12000", "9.00", True),
        ("pro", "30000", "29.00", True),
        ("offline", "5", "1.00", False),
    ]
    unknown = httpx.post(stripe_gateway.url + "/webhooks/payments/paypal", content=b"{}")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "payment_provider_not_found"


def test_payment_checkout_without_a_provider_is_503(backend: Backend, fake_openai: FakeOpenAI) -> None:
    settings = gateway_settings(backend, fake_openai, credit_packages=PACKAGES)  # packages, no provider
    gateway, server = start_gateway(settings, fake_openai, credits_micro=0)
    try:
        owner = Owner(gateway)
        unavailable = owner.post("/api/billing/checkout/", json={"package": "starter"})
        assert unavailable.status_code == 503 and unavailable.json()["error"]["code"] == "payments_not_configured"
        assert owner.post("/api/billing/checkout/", json={"package": "platinum"}).status_code == 404
        listed = owner.get("/api/billing/packages/").json()
        assert listed["checkout_provider"] == "" and not any(p["purchasable"] for p in listed["data"])
        webhook = httpx.post(gateway.url + "/webhooks/payments/stripe", content=b"{}")
        assert webhook.status_code == 404 and webhook.json()["error"]["code"] == "payment_provider_not_found"
    finally:
        server.stop()


def test_payment_lemonsqueezy_checkout_order_and_refund(
    ls_gateway: Gateway, payment_fakes: Providers, tmp_path: Path
) -> None:
    fake = payment_fakes.lemonsqueezy
    opened = stripe_checkout(ls_gateway, Owner(ls_gateway))
    assert opened["provider"] == "lemonsqueezy" and opened["session_id"] in fake.checkouts
    assert opened["url"].startswith(f"{fake.url}/checkout/custom/{opened['session_id']}")
    sent = fake.received[-1]["data"]
    assert sent["attributes"]["checkout_data"]["custom"] == {
        "account_id": str(ls_gateway.account_id),
        "package_id": "starter",
    }
    assert sent["attributes"]["product_options"]["enabled_variants"] == [85474]

    _order_id, body = fake.order_created(opened["session_id"])
    for why, refused in {
        "bad signature": send_ls(ls_gateway, body, lemonsqueezy_api.sign(body, "not-the-secret")),
        "altered after signing": send_ls(
            ls_gateway, body.replace(b'"total": 900', b'"total": 9'), lemonsqueezy_api.sign(body)
        ),
    }.items():
        assert refused.status_code == 400, why
    assert credits(ls_gateway) == (0, 0)
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _n: send_ls(ls_gateway, body), range(5)))
    assert sorted(a.json()["outcome"] for a in answers) == ["duplicate"] * 4 + ["granted"]
    assert credits(ls_gateway) == (12_000 * CREDIT, 12_000 * CREDIT)

    assert send_ls(ls_gateway, fake.order_refunded(opened["session_id"], 450)).json()["outcome"] == "reversed"
    assert credits(ls_gateway)[0] == 6_000 * CREDIT
    assert send_ls(ls_gateway, fake.order_refunded(opened["session_id"], 450)).json()["outcome"] == "duplicate"
    assert send_ls(ls_gateway, fake.order_refunded(opened["session_id"], 900)).status_code == 200
    assert credits(ls_gateway) == (0, 0)
    ignored = send_ls(ls_gateway, lemonsqueezy_api.other_event())
    assert ignored.status_code == 200 and ignored.json()["outcome"] == "ignored"
    assert payments_count(ls_gateway) == 3
    reconcile_clean(ls_gateway, tmp_path)


HOSTILE_CHECKOUTS = [
    b"",
    b"null",
    b"[" * 100_000,
    b'{"package": "star\\u0000ter"}',
    b'{"package": 5}',
    b'{"package": ["starter"]}',
    b'{"package": "' + b"x" * 100_000 + b'"}',
    b'{"package": "starter", "account_id": 1}',
    b'{"package": 1e400}',
    b"\xff\xfe",
]


def test_payment_hostile_requests_are_refused_in_the_error_shape(
    stripe_gateway: Gateway, payment_fakes: Providers
) -> None:
    owner = Owner(stripe_gateway)
    for body in HOSTILE_CHECKOUTS:
        response = owner.post("/api/billing/checkout/", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (body[:40], response.text)
        assert response.json()["error"]["code"] != "internal_error"
    assert payment_fakes.stripe.received == []  # none of them reached the provider
    too_big = httpx.post(stripe_gateway.url + "/webhooks/payments/stripe", content=b"{" * (1024 * 1024 + 1))
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    garbage = httpx.post(
        stripe_gateway.url + "/webhooks/payments/stripe",
        content=b"\x00\xff" * 100,
        headers={b"Stripe-Signature": "t=\xe9,v1=\xff".encode("latin-1")},
    )
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_signature"
    long_name = httpx.post(stripe_gateway.url + "/webhooks/payments/" + "p" * 5000, content=b"{}")
    assert long_name.status_code in (400, 404) and "error" in long_name.json()


def test_payment_lemonsqueezy_checkout_failure_is_502_without_its_words(
    ls_gateway: Gateway, payment_fakes: Providers
) -> None:
    payment_fakes.lemonsqueezy.fail_status = 500
    failed = Owner(ls_gateway).post("/api/billing/checkout/", json={"package": "pro"})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "checkout_failed"
    assert lemonsqueezy_api.API_KEY not in failed.text and "Server Error" not in failed.text

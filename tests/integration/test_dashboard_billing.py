"""The dashboard's Billing page through the real app, on both backends: packages with their
price, Buy credits posting (CSRF-checked) to a checkout at the fake Stripe and sending the browser
on to its page, the webhook's credits and receipt on the page, the return message, roles, and the
low-credit banner linking here."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import stripe_api
from tests.fakes.gateway_fixtures import Backend, Gateway
from tests.fakes.lemonsqueezy_api import FakeLemonSqueezy
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.payments import Providers, selling_gateway
from tests.fakes.servers import ThreadedServer
from tests.fakes.stripe_api import FakeStripe
from tests.integration.test_dashboard_pages import Visitor, add_member


@pytest.fixture
def fakes() -> Iterator[Providers]:
    stripe, lemonsqueezy = FakeStripe(), FakeLemonSqueezy()
    stripe_server, ls_server = ThreadedServer(stripe).start(), ThreadedServer(lemonsqueezy).start()
    stripe.url, lemonsqueezy.url = stripe_server.url, ls_server.url
    try:
        yield Providers(stripe, lemonsqueezy)
    finally:
        stripe_server.stop()
        ls_server.stop()


@pytest.fixture
def selling(backend: Backend, fake_openai: FakeOpenAI, fakes: Providers) -> Iterator[Gateway]:
    gateway, server = selling_gateway(backend, fake_openai, fakes, "stripe")
    try:
        yield gateway
    finally:
        server.stop()


def balance_on(page: str) -> str:
    found = re.search(r'id="balance">([^<]*)<', page)
    assert found, page[:500]
    return found.group(1)


def test_billing_page_buy_credits_goes_to_checkout_and_the_webhook_credits_show(
    selling: Gateway, fakes: Providers
) -> None:
    owner = add_member(selling, "owner@acme.test", "owner")
    page = owner.get("/billing")
    assert page.status_code == 200
    text = page.text
    assert balance_on(text) == "0"
    for name, credits, price in (("Starter", "12,000", "9.00 USD"), ("Pro", "30,000", "29.00 USD")):
        assert re.search(rf"<td[^>]*>{name}</td>\s*<td[^>]*>{credits}</td>\s*<td[^>]*>{price}</td>", text), name
    assert text.count('aria-label="Buy credits: ') == 2  # "Offline" is on sale nowhere: no button
    assert 'id="low-credit-banner"' in text and "No purchases yet." in text
    assert 'href="/billing"' in text  # the nav entry

    assert owner.post("/billing/checkout", {"package": "starter"}, csrf=False).status_code == 403
    assert fakes.stripe.received == []  # refused before any checkout was opened
    bought = owner.post("/billing/checkout", {"package": "starter"})
    assert bought.status_code == 200
    (session_id,) = fakes.stripe.sessions
    checkout_url = f"{fakes.stripe.url}/c/pay/{session_id}"
    # On to the provider without JavaScript: a refresh and a link (a 303 would break the CSP's
    # form-action 'self' in Chromium; tests/e2e/test_billing_browser.py follows it for real).
    assert f'<meta http-equiv="refresh" content="0; url={checkout_url}">' in bought.text
    assert f'id="checkout-link" href="{checkout_url}"' in bought.text and "Starter (9.00 USD)" in bought.text
    sent = fakes.stripe.received[-1]
    assert sent["metadata"]["account_id"] == str(selling.account_id) and sent["customer_email"] == "owner@acme.test"
    assert sent["success_url"] == selling.url + "/billing?checkout=success"
    assert sent["cancel_url"] == selling.url + "/billing?checkout=cancelled"

    missing = owner.post("/billing/checkout", {"package": "platinum"})
    assert missing.status_code == 404 and "platinum" in missing.text
    offline = owner.post("/billing/checkout", {"package": "offline"})
    assert offline.status_code == 404
    hostile = owner.post("/billing/checkout", {"package": "\x00" * 5000})
    assert hostile.status_code == 404

    event = fakes.stripe.completed_event(session_id)
    hook = httpx.post(
        selling.url + "/webhooks/payments/stripe",
        content=event,
        headers={"Stripe-Signature": stripe_api.sign(event), "Content-Type": "application/json"},
        timeout=30,
    )
    assert hook.status_code == 200 and hook.json()["outcome"] == "granted"
    back = owner.get("/billing?checkout=success").text
    assert 'id="checkout-message"' in back and "payment went through" in back
    assert balance_on(back) == "12,000"
    row = re.search(r'<table class="data stack-on-phone" id="purchases">.*?</table>', back, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in cells[1:]] == [
        "purchase",
        "Starter",
        "12,000",
        "9.00 USD",
        "stripe",
    ]
    assert 'id="low-credit-banner"' not in back  # 12,000 is above the 100-credit threshold
    assert "Checkout cancelled" in owner.get("/billing?checkout=cancelled").text
    assert 'id="checkout-message"' not in owner.get("/billing?checkout=<b>x</b>").text


def test_billing_page_roles_and_the_low_credit_banner(selling: Gateway) -> None:
    viewer = add_member(selling, "viewer@acme.test", "viewer")
    page = viewer.get("/billing")
    assert page.status_code == 200 and "Buy credits:" not in page.text and "owners buy credits" in page.text
    assert viewer.post("/billing/checkout", {"package": "starter"}).status_code == 403
    credits = viewer.get("/credits").text  # the balance (0) is below the threshold (100)
    banner = re.search(r'<p class="banner warning"[^>]*id="low-credit-banner">(.*?)</p>', credits, re.S)
    assert banner is not None and '<a href="/billing">Buy credits</a>' in banner.group(1)
    assert Visitor(selling).get("/billing").headers["location"] == "/login?next=/billing"

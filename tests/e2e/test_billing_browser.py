"""Buying credits in a real browser: Debian's Chromium, driven by Playwright, through the real app
with its real Content-Security-Policy (no bypass: the Buy form's 303 to the provider must pass it).

The owner signs in, opens Billing, clicks Buy credits and lands on the fake Stripe's checkout
page; the test then sends the signed ``checkout.session.completed`` webhook Stripe would send, and
the browser, back on the success URL, shows the balance risen by the package's credits and the
purchase with its price. SQLite + embedded counters, like tests/e2e/test_dashboard_browser.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import stripe_api
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Backend, gateway_settings, start_gateway
from tests.fakes.lemonsqueezy_api import FakeLemonSqueezy
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.payments import PACKAGES, Providers, payment_settings
from tests.fakes.servers import ThreadedServer
from tests.fakes.stripe_api import FakeStripe

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OWNER = ("owner@acme.test", "correct horse battery staple")


def test_billing_buy_credits_checkout_webhook_and_the_balance_rises(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed (apt-get install chromium; CI does)")
    servers: list[ThreadedServer] = []
    try:
        fake = FakeOpenAI()
        servers.append(ThreadedServer(fake).start())
        fake.url = servers[-1].url  # type: ignore[attr-defined]
        stripe, lemonsqueezy = FakeStripe(), FakeLemonSqueezy()
        servers.append(ThreadedServer(stripe).start())
        stripe.url = servers[-1].url
        servers.append(ThreadedServer(lemonsqueezy).start())
        lemonsqueezy.url = servers[-1].url
        backend = Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/tollway.db", "", "billing:")
        settings = gateway_settings(
            backend,
            fake,
            session_cookie_secure=False,  # plain http on 127.0.0.1
            credit_packages=PACKAGES,
            payments=payment_settings(Providers(stripe, lemonsqueezy)),
        )
        gateway, server = start_gateway(settings, fake, credits_micro=50_000_000)
        servers.append(server)
        added = httpx.post(
            f"{gateway.url}/api/admin/accounts/{gateway.account_id}/members/",
            json={"email": OWNER[0], "password": OWNER[1]},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert added.status_code == 201, added.text
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            )
            try:
                buy_and_see_the_credits(browser, gateway.url, stripe)
            finally:
                browser.close()
    finally:
        for running in reversed(servers):
            running.stop()


def buy_and_see_the_credits(browser: Any, base: str, stripe: FakeStripe) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(base + "/billing")
    assert "/login" in page.url
    page.get_by_label("Email").fill(OWNER[0])
    page.get_by_label("Password").fill(OWNER[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/billing$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Billing"
    assert page.locator("#balance").inner_text() == "50"
    # 50 credits is below the 100-credit alert: the banner says so (this page is where it links).
    assert page.locator("#low-credit-banner").is_visible()

    page.get_by_role("button", name="Buy credits: Starter").click()
    page.wait_for_url(re.compile(re.escape(stripe.url) + r"/c/pay/cs_test_\w+$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Fake Stripe Checkout"
    (session_id,) = stripe.sessions
    assert page.url.endswith(session_id)

    event = stripe.completed_event(session_id)
    hook = httpx.post(
        base + "/webhooks/payments/stripe",
        content=event,
        headers={"Stripe-Signature": stripe_api.sign(event), "Content-Type": "application/json"},
        timeout=30,
    )
    assert hook.status_code == 200 and hook.json()["outcome"] == "granted", hook.text

    page.goto(stripe.sessions[session_id]["success_url"])  # where Stripe sends the buyer back
    page.wait_for_url(re.compile(r"/billing\?checkout=success$"))
    assert "payment went through" in page.locator("#checkout-message").inner_text()
    assert page.locator("#balance").inner_text() == "12,050"  # 50 + the Starter package's 12,000
    receipt = page.locator("#purchases tbody tr").first
    assert [cell.strip() for cell in receipt.locator("td").all_inner_texts()[1:]] == [
        "purchase",
        "Starter",
        "12,000",
        "9.00 USD",
        "stripe",
    ]
    assert page.locator("#low-credit-banner").count() == 0
    context.close()

"""A gateway that sells credits through the fake Stripe and LemonSqueezy APIs, and a signed-in
owner to buy them (only owners may: Permission.BILLING)."""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx

from billing.payments.packages import CreditPackage
from gateway.settings import LemonSqueezySettings, PaymentSettings, StripeSettings
from tests.fakes import lemonsqueezy_api, stripe_api
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.lemonsqueezy_api import FakeLemonSqueezy
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer
from tests.fakes.stripe_api import FakeStripe

PACKAGES = [
    CreditPackage(
        id="starter",
        name="Starter",
        credits="12000",
        price="9.00",
        provider_price_ids={"stripe": "price_starter", "lemonsqueezy": lemonsqueezy_api.VARIANTS["starter"]},
    ),
    CreditPackage(
        id="pro",
        name="Pro",
        credits="30000",
        price="29.00",
        provider_price_ids={"stripe": "price_pro", "lemonsqueezy": lemonsqueezy_api.VARIANTS["pro"]},
    ),
    CreditPackage(id="offline", name="Offline", credits="5", price="1.00"),  # on sale nowhere
]
CREDIT = 1_000_000
OWNER = ("owner@acme.test", "correct horse battery staple")


@dataclass
class Providers:
    stripe: FakeStripe
    lemonsqueezy: FakeLemonSqueezy


def payment_settings(fakes: Providers, checkout_provider: str = "stripe") -> PaymentSettings:
    return PaymentSettings(
        checkout_provider=checkout_provider,  # type: ignore[arg-type]
        stripe=StripeSettings(
            api_key=stripe_api.API_KEY, webhook_secret=stripe_api.WEBHOOK_SECRET, api_base=fakes.stripe.url
        ),
        lemonsqueezy=LemonSqueezySettings(
            api_key=lemonsqueezy_api.API_KEY,
            store_id=lemonsqueezy_api.STORE_ID,
            webhook_secret=lemonsqueezy_api.WEBHOOK_SECRET,
            api_base=fakes.lemonsqueezy.url,
        ),
    )


def selling_gateway(
    backend: Backend, fake_openai: FakeOpenAI, fakes: Providers, checkout_provider: str = "stripe"
) -> tuple[Gateway, ThreadedServer]:
    settings = gateway_settings(
        backend,
        fake_openai,
        credit_packages=PACKAGES,
        payments=payment_settings(fakes, checkout_provider),
    )
    return start_gateway(settings, fake_openai, credits_micro=0)


class Owner:
    """A signed-in owner's browser: session cookie plus the CSRF header on writes."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        added = httpx.post(
            f"{gateway.url}/api/admin/accounts/{gateway.account_id}/members/",
            json={"email": OWNER[0], "password": OWNER[1]},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert added.status_code == 201, added.text
        login = httpx.post(f"{gateway.url}/api/auth/login/", json={"email": OWNER[0], "password": OWNER[1]})
        assert login.status_code == 200, login.text
        # Parsed by hand: httpx's jar keeps no Secure cookie over http.
        self.cookies: dict[str, str] = {}
        for header in login.headers.get_list("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            self.cookies.update({name: morsel.value for name, morsel in parsed.items()})
        self.csrf = login.json()["csrf_token"]

    def post(self, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        sent = {"Cookie": cookie, "X-CSRF-Token": self.csrf, **(headers or {})}
        return httpx.post(self.gateway.url + path, headers=sent, timeout=30, **kwargs)

    def get(self, path: str) -> httpx.Response:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return httpx.get(self.gateway.url + path, headers={"Cookie": cookie}, timeout=30)

"""Two ``tollway serve`` processes on one Postgres and one Redis: the same signed Stripe event,
delivered five times to each at once (a provider's retries racing its first delivery across
replicas), grants its package once; both processes then see the new balance; reconcile is clean."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.fakes import stripe_api
from tests.fakes.gateway_fixtures import ADMIN_TOKEN
from tests.fakes.stripe_api import FakeStripe
from tests.integration.test_two_processes import base_config, reconciles, start_gateways, stop

PAYMENTS = f"""
[payments]
checkout_provider = "stripe"

[payments.stripe]
api_key = "{stripe_api.API_KEY}"
webhook_secret = "{stripe_api.WEBHOOK_SECRET}"
api_base = "http://127.0.0.1:9"

[[credit_packages]]
id = "starter"
name = "Starter"
credits = "12000"
price = "9.00"
provider_price_ids = {{ stripe = "price_starter" }}
"""


def test_payment_two_processes_grant_a_purchase_once(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    config_text = base_config(postgres_url, redis_url, redis_prefix) + PAYMENTS
    urls, processes = start_gateways(config_text, tmp_path)
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        account = httpx.post(urls[0] + "/api/admin/accounts/", json={"name": "acme"}, headers=admin).json()
        key = httpx.post(urls[0] + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "k"}, headers=admin)
        bearer = {"Authorization": f"Bearer {key.json()['key']}"}
        fake = FakeStripe(url="http://127.0.0.1:9")
        session = fake._session(
            {"metadata": {"account_id": str(account["id"]), "package_id": "starter", "price_id": "price_starter"}},
            "price_starter",
        )
        event = fake.completed_event(str(session["id"]))
        headers = {"Stripe-Signature": stripe_api.sign(event), "Content-Type": "application/json"}
        targets = [url for url in urls for _ in range(5)]
        with ThreadPoolExecutor(len(targets)) as pool:
            answers = list(
                pool.map(
                    lambda url: httpx.post(
                        url + "/webhooks/payments/stripe", content=event, headers=headers, timeout=60
                    ),
                    targets,
                )
            )
        assert [answer.status_code for answer in answers] == [200] * 10, [a.text for a in answers]
        assert sorted(answer.json()["outcome"] for answer in answers) == ["duplicate"] * 9 + ["granted"]
        for url in urls:  # each process's answer reads the mirror the grant set
            shown = httpx.get(url + "/api/credits/", headers=bearer).json()
            assert (shown["balance"], shown["available"]) == ("12000", "12000")
        reconciles(tmp_path / "tollway.toml")
    finally:
        stop(processes)

"""Webhooks end to end: low_credits once per crossing, limit events once per period/minute,
signed deliveries retried with backoff from the outbox, private URLs refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from billing.models import WebhookEvent
from billing.webhooks import verify_signature
from tests.fakes.asgi import read_request
from tests.fakes.gateway_fixtures import (
    ADMIN_TOKEN,
    FAKE_MODEL,
    Backend,
    Gateway,
    _with_session,
    gateway_settings,
    start_gateway,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

THRESHOLD = 100_000_000  # the default low-credits threshold: 100 credits


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it gets and can fail on purpose."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers, body = await read_request(scope, receive)
        status = 500 if self.fail_first > 0 else 204
        self.fail_first -= 1
        if status == 204:
            self.received.append((headers, body))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def events(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(body) for headers, body in self.received if headers["x-tollway-event"] == name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    server = ThreadedServer(hook).start()
    hook.url = server.url + "/hooks"
    try:
        yield hook
    finally:
        server.stop()


@pytest.fixture
def hooked(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    settings = gateway_settings(
        backend, fake_openai, webhook_allow_private=True, webhook_poll_s=0.05, webhook_retry_base_s=0.2
    )
    gw, server = start_gateway(settings, fake_openai, credits_micro=THRESHOLD + 10_000)
    try:
        yield gw
    finally:
        server.stop()


def api(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, gateway.url + path, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10, **kwargs
    )


def chat(gateway: Gateway, key: str | None = None, **extra: Any) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], **extra},
        headers={"Authorization": f"Bearer {key or gateway.key}"},
        timeout=10,
    )


def wait_for(condition: Any, seconds: float = 15.0) -> None:
    """Poll for a delivery (the worker sends in the background), failing after a generous deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for a webhook"
        time.sleep(0.05)


def outbox(gateway: Gateway, event: str) -> int:
    """How many ``event`` events the outbox holds: what was decided, whether or not delivered yet.
    Refusals write theirs before answering, settlements once written (``settled``)."""
    gateway.settled()

    async def count(session: Any) -> int:
        return int(await session.scalar(select(func.count()).where(WebhookEvent.event == event)))

    return int(gateway.run(_with_session(gateway.settings, count)))


def test_low_credits_fires_once_per_crossing_signed_and_retried(hooked: Gateway, receiver: Receiver) -> None:
    key_id = api(hooked, "GET", "/api/keys/").json()["keys"][0]["id"]
    assert api(hooked, "PATCH", f"/api/keys/{key_id}/", json={"webhook_url": receiver.url}).status_code == 200
    receiver.fail_first = 2  # the first two attempts fail: the outbox retries with backoff
    assert chat(hooked).status_code == 200  # ~0.006 credits: the balance crosses below 100
    assert chat(hooked).status_code == 200  # still below: no second event
    wait_for(lambda: receiver.events("low_credits"))
    (event,) = receiver.events("low_credits")
    assert event["event"] == "low_credits" and event["user_email"] == "ops@acme.test"
    assert "billing_url" not in event  # public_url is not set: no absolute link to give
    assert float(event["credits_balance"]) < 100
    headers, body = receiver.received[0]
    secret = api(hooked, "GET", "/api/webhooks/secret/").json()["secret"]
    assert verify_signature(secret, headers["x-tollway-signature"], body)
    assert not verify_signature("whsec_other", headers["x-tollway-signature"], body)
    (delivery,) = api(hooked, "GET", "/api/webhooks/deliveries/").json()["data"]
    assert (delivery["status"], delivery["attempts"], delivery["event"]) == ("delivered", 3, "low_credits")

    # Back just above the threshold (99.9977 + 0.005), then a debit takes it below again: a new
    # crossing, a new event.
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    grant = {"amount": "0.005"}
    httpx.post(hooked.url + f"/api/admin/accounts/{hooked.account_id}/credits/", json=grant, headers=admin)
    assert outbox(hooked, "low_credits") == 1  # neither the second chat nor the grant made one
    chat(hooked)
    wait_for(lambda: len(receiver.events("low_credits")) == 2)
    assert outbox(hooked, "low_credits") == 2


def test_limit_events_once_per_period_and_minute(hooked: Gateway, receiver: Receiver) -> None:
    # At the top of a minute: the rate window and the event's minute cannot roll over mid-test.
    hooked.clock.set_now(datetime.now(UTC).replace(second=0, microsecond=0))
    capped = api(
        hooked, "POST", "/api/keys/", json={"name": "capped", "spending_limit": "1", "webhook_url": receiver.url}
    ).json()
    for _ in range(2):
        assert chat(hooked, capped["key"], max_tokens=5000).status_code == 402
    limited = api(
        hooked, "POST", "/api/keys/", json={"name": "rpm", "rpm_limit": 1, "webhook_url": receiver.url}
    ).json()
    assert chat(hooked, limited["key"]).status_code == 200
    for _ in range(2):
        assert chat(hooked, limited["key"]).status_code == 429
    # Each refusal wrote its event (or found it written) before answering: once each, for good.
    assert outbox(hooked, "spending_limit_reached") == 1 and outbox(hooked, "rate_limit_exceeded") == 1
    wait_for(lambda: receiver.events("spending_limit_reached") and receiver.events("rate_limit_exceeded"))
    (spent,) = receiver.events("spending_limit_reached")
    assert spent["key_id"] == capped["id"] and spent["spending_limit"] == "1" and spent["spending_period"] == "monthly"
    (rate,) = receiver.events("rate_limit_exceeded")
    assert rate["key_id"] == limited["id"]


def test_private_webhook_urls_are_refused_by_default(gateway: Gateway) -> None:
    key_id = api(gateway, "GET", "/api/keys/").json()["keys"][0]["id"]
    for url in ("http://127.0.0.1:9/x", "http://[::1]/x", "http://10.1.2.3/x", "http://localhost:8000/x"):
        refused = api(gateway, "PATCH", f"/api/keys/{key_id}/", json={"webhook_url": url})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "webhook_url", url
    assert (
        api(gateway, "PATCH", f"/api/keys/{key_id}/", json={"webhook_url": "https://hooks.example.com/x"}).status_code
        == 200
    )


def test_low_credits_links_to_the_billing_page_when_public_url_is_set(
    backend: Backend, fake_openai: FakeOpenAI, receiver: Receiver
) -> None:
    settings = gateway_settings(
        backend,
        fake_openai,
        webhook_allow_private=True,
        webhook_poll_s=0.05,
        public_url="https://ai.example.com/",
    )
    gateway, server = start_gateway(settings, fake_openai, credits_micro=THRESHOLD + 1_000)  # one call crosses
    try:
        key_id = api(gateway, "GET", "/api/keys/").json()["keys"][0]["id"]
        assert api(gateway, "PATCH", f"/api/keys/{key_id}/", json={"webhook_url": receiver.url}).status_code == 200
        assert chat(gateway).status_code == 200
        wait_for(lambda: receiver.events("low_credits"))
        (event,) = receiver.events("low_credits")
        assert event["billing_url"] == "https://ai.example.com/billing"
    finally:
        server.stop()

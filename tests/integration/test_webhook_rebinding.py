"""DNS rebinding: the delivery must connect to the address that passed the private-address check.

The fake transport plays the network: a URL that still carries a name is resolved again at
connect time, as httpx's own connection would, through the same rebinding DNS."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from billing.accounts import create_account
from billing.models import WebhookDelivery, WebhookEvent
from gateway.db import create_engine, create_sessionmaker, migrate
from gateway.webhooks import WebhookWorker
from keys.service import create_key


class RebindingDns:
    def __init__(self) -> None:
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        return ["93.184.216.34"] if self.lookups == 1 else ["127.0.0.1"]


async def test_webhook_delivery_connects_to_the_checked_address(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        account = await create_account(session, "acme", email="ops@acme.test", credits_micro=0)
        key, _plaintext = await create_key(session, account.id, "hooked")
        key.webhook_url = "http://hooks.example.com/tollway"
        session.add(WebhookEvent(account_id=account.id, key_id=key.id, event="low_credits", payload={"x": 1}))
        await session.commit()

    dns = RebindingDns()
    connected: list[tuple[str, str]] = []

    async def network(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            host = (await dns(host, request.url.port or 80))[0]  # the connect-time lookup
        connected.append((host, request.headers["host"]))
        return httpx.Response(200)

    worker = WebhookWorker(
        sessionmaker,
        allow_private=False,
        retry_base_s=1,
        now=lambda: datetime.now(UTC),
        client=httpx.AsyncClient(transport=httpx.MockTransport(network)),
        resolver=dns,
    )
    try:
        await worker.run_once()
        await worker.run_once()
        async with sessionmaker() as session:
            delivery = await session.scalar(select(WebhookDelivery))
        assert delivery is not None and delivery.status == "delivered"
        assert connected == [("93.184.216.34", "hooks.example.com")]
    finally:
        await worker.aclose()
        await engine.dispose()

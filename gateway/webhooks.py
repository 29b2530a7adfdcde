"""Webhook delivery: a background worker per process, never on a request's path.

Each round it (1) fans new outbox events out to deliveries, one per webhook URL (a key's own,
or every active key of the account for account events), and (2) sends the deliveries that are
due. A delivery is claimed by moving its ``next_attempt_at`` forward only if nobody else did
(compare-and-set), so several processes share the work without sending twice. Each POST has
a 10 s timeout, is signed with the account's secret, and is retried with growing delays.

URLs that resolve to private, loopback or link-local addresses are refused unless the operator
allows them (``webhook_allow_private``): a key holder must not be able to make the gateway
call into its own network. The name is resolved once, every address it gives is checked, and
the POST goes to the checked address (``Host`` and TLS SNI/certificate name still the original
name): letting httpx resolve the name again would let a DNS server that answers a public
address first and 127.0.0.1 second (DNS rebinding) slip past the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
import msgspec
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.models import Account, WebhookDelivery, WebhookEvent
from billing.webhooks import MAX_ATTEMPTS, retry_delay, signature_header
from functions.egress import is_public_address
from keys.models import ApiKey
from keys.restrictions import RestrictionError

log = logging.getLogger("tollway.webhooks")
TIMEOUT_S = 10.0
_LEASE = timedelta(seconds=60)
_BATCH = 20


def _private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # One classification for every outbound call the gateway makes (functions.egress).
    return not is_public_address(address)


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """At configuration time: refuse what is visibly private (a literal IP or localhost)."""
    if not url or allow_private:
        return
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise RestrictionError("webhook_url", "points at a private address (the operator can allow it)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: checked again against what it resolves to at delivery time
    if _private(address):
        raise RestrictionError("webhook_url", "points at a private address (the operator can allow it)")


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses to connect to; the seam tests use to play a rebinding DNS."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class PrivateAddress(Exception):
    """The webhook URL is, or resolves to, an address inside the operator's network."""


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """Where to connect (the checked address) and which name to present (Host, SNI)."""

    url: httpx.URL
    host_header: str
    sni_hostname: str | None


async def pin_public_address(url: str, resolver: Resolver) -> PinnedTarget:
    """Resolve ``url``'s host once; refuse if any address is private; else pin the first one."""
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
        literal = True
    except ValueError:
        literal = False
        try:
            addresses = [ipaddress.ip_address(a) for a in await resolver(host, port)]
        except ValueError as error:  # e.g. a scoped fe80::1%eth0: link-local anyway
            raise PrivateAddress(host) from error
    if not addresses or any(_private(address) for address in addresses):
        raise PrivateAddress(host)
    return PinnedTarget(
        url=parsed.copy_with(host=str(addresses[0])),
        host_header=parsed.netloc.decode("ascii"),
        sni_hostname=None if literal or parsed.scheme != "https" else host,
    )


class WebhookWorker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        allow_private: bool,
        retry_base_s: float,
        now: Callable[[], datetime],
        client: httpx.AsyncClient | None = None,
        resolver: Resolver = system_resolver,
        billing_url: str = "",
    ) -> None:
        self._sessionmaker = sessionmaker
        # Added to low_credits deliveries (from settings.public_url): where the user buys more.
        # At delivery, not in the stored event: the settlement writer that records it knows no URLs.
        self._billing_url = billing_url
        self._allow_private = allow_private
        self._resolver = resolver
        self._retry_base_s = retry_base_s
        self._now = now
        # No redirects (a redirect could lead to a private address) and no proxies from env.
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run_once(self) -> int:
        fanned = await self._fan_out()
        sent = await self._deliver_due()
        return fanned + sent

    async def _fan_out(self) -> int:
        async with self._sessionmaker() as session:
            events = (
                await session.scalars(select(WebhookEvent).where(WebhookEvent.fanned_out.is_(False)).limit(100))
            ).all()
            for event in events:
                keys = select(ApiKey.webhook_url).where(ApiKey.webhook_url != "", ApiKey.is_active.is_(True))
                if event.key_id is not None:
                    keys = keys.where(ApiKey.id == event.key_id)
                else:
                    keys = keys.where(ApiKey.account_id == event.account_id)
                for url in sorted(set((await session.scalars(keys)).all())):
                    session.add(WebhookDelivery(event_id=event.id, url=url, next_attempt_at=self._now()))
                event.fanned_out = True
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()  # another process fanned these out at the same time
                return 0
            return len(events)

    async def _deliver_due(self) -> int:
        now = self._now()
        async with self._sessionmaker() as session:
            due = (
                await session.execute(
                    select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
                    .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(_BATCH)
                )
            ).all()
            claimed: list[int] = []
            for delivery_id, due_at in due:
                result = await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, WebhookDelivery.next_attempt_at == due_at)
                    .values(next_attempt_at=now + _LEASE)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery_id)
            await session.commit()
        await asyncio.gather(*(self._send(delivery_id) for delivery_id in claimed))
        return len(claimed)

    async def _secret(self, session: AsyncSession, account_id: int) -> str:
        account = await session.get(Account, account_id)
        assert account is not None
        if not account.webhook_secret:
            account.webhook_secret = "whsec_" + secrets.token_hex(24)
            await session.commit()
        return account.webhook_secret

    async def _send(self, delivery_id: int) -> None:
        async with self._sessionmaker() as session:
            delivery = await session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            event = await session.get(WebhookEvent, delivery.event_id)
            assert event is not None
            secret = await self._secret(session, event.account_id)
            payload = event.payload
            if event.event == "low_credits" and self._billing_url:
                payload = {**payload, "billing_url": self._billing_url}
            body = msgspec.json.encode(payload)
            status, error = 0, ""
            try:
                timestamp = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "Tollway-Webhooks/1",
                    "X-Tollway-Event": event.event,
                    "X-Tollway-Delivery": str(delivery.id),
                    "X-Tollway-Signature": signature_header(secret, timestamp, body),
                }
                if self._allow_private:
                    response = await self._client.post(delivery.url, content=body, headers=headers)
                else:
                    target = await pin_public_address(delivery.url, self._resolver)
                    response = await self._client.post(
                        target.url,
                        content=body,
                        headers={**headers, "Host": target.host_header},
                        extensions={"sni_hostname": target.sni_hostname} if target.sni_hostname else {},
                    )
                status = response.status_code
            except PrivateAddress:
                error = "refused: the URL resolves to a private address"
            except (httpx.HTTPError, OSError) as failure:
                error = type(failure).__name__
            delivery.attempts += 1
            delivery.last_status = status
            delivery.last_error = error[:500]
            if 200 <= status < 300:
                delivery.status, delivery.delivered_at = "delivered", self._now()
            elif error.startswith("refused") or delivery.attempts >= MAX_ATTEMPTS:
                delivery.status = "failed"
            else:
                delivery.next_attempt_at = self._now() + retry_delay(delivery.attempts, self._retry_base_s)
            await session.commit()


@contextlib.asynccontextmanager
async def deliver_webhooks(worker: WebhookWorker, poll_s: float) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            try:
                busy = await worker.run_once()
            except Exception:  # a database hiccup must not end the worker; events wait in the outbox
                log.warning("webhook round failed; retrying", exc_info=True)
                busy = 0
            await asyncio.sleep(0.05 if busy else poll_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.aclose()

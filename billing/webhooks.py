"""Webhook events: the outbox rows for limit refusals, and how deliveries are signed and retried.

``low_credits`` is written by the settlement itself (billing/ledger.py), in the debit's
transaction. ``spending_limit_reached`` and ``rate_limit_exceeded`` are written when a request
is refused, once per key per period (spending) or per minute (rate), which a unique
``dedupe_key`` enforces across processes.

Signatures: ``X-Tollway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with
the account's webhook secret; receivers recompute it and reject old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import WebhookEvent, utcnow
from billing.money import format_credits
from billing.periods import period_id

MAX_ATTEMPTS = 8
_events = cast(Table, WebhookEvent.__table__)


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes) -> bool:
    """What a receiver does (used by the tests and documented for integrators)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        expected = signature_header(secret, int(parts["t"]), body).split(",v1=")[1]
    except (KeyError, ValueError, IndexError):
        return False
    return hmac.compare_digest(expected, parts.get("v1", ""))


def retry_delay(attempts: int, base_s: float) -> timedelta:
    """Delay after the ``attempts``-th failure: base × 3^(n-1), capped at six hours."""
    return timedelta(seconds=min(base_s * 3 ** (attempts - 1), 6 * 3600))


async def enqueue(
    session: AsyncSession,
    *,
    account_id: int,
    key_id: int | None,
    event: str,
    payload: dict[str, Any],
    dedupe_key: str | None,
) -> None:
    """Add an event unless its ``dedupe_key`` was already used; the caller commits."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_events).values(
        account_id=account_id,
        key_id=key_id,
        event=event,
        payload=payload,
        dedupe_key=dedupe_key,
        fanned_out=False,
        created_at=utcnow(),
    )
    await session.execute(statement.on_conflict_do_nothing(index_elements=["dedupe_key"]))


def spending_limit_event(
    key_id: int, key_name: str, limit_micro: int | None, period: str, now: datetime
) -> tuple[dict[str, Any], str]:
    current = period_id(now, period)
    payload = {
        "event": "spending_limit_reached",
        "key_id": key_id,
        "key_name": key_name,
        "spending_limit": format_credits(limit_micro) if limit_micro is not None else None,
        "spending_period": period,
        "period": current,
    }
    return payload, f"spend:{key_id}:{current}"


def rate_limit_event(key_id: int, key_name: str, message: str, now: datetime) -> tuple[dict[str, Any], str]:
    minute = now.strftime("%Y-%m-%dT%H:%M")
    payload = {
        "event": "rate_limit_exceeded",
        "key_id": key_id,
        "key_name": key_name,
        "message": message,
        "minute": minute,
    }
    return payload, f"rate:{key_id}:{minute}"

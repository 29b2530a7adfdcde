"""Typed SQLAlchemy 2 models for money: accounts, the credits ledger and usage records.

All amounts are integer micro-credits (1 credit = 1,000,000). ``Base`` lives here because
every other domain's tables hang off an account; ``keys`` imports it, never the reverse.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a real BIGINT identity.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BANNED = "banned"


class LedgerKind(enum.StrEnum):
    GRANT = "grant"
    DEBIT = "debit"
    REFUND = "refund"
    # Credits bought through a payment provider, and taken back by its refund or chargeback
    # (billing/payments/): kinds of their own, so an operator's idempotency keys never collide
    # with a provider's event ids and the revenue report reads purchases alone.
    PURCHASE = "purchase"
    REVERSAL = "reversal"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str] = mapped_column(String(320), default="")
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.ACTIVE.value)
    balance_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    low_credit_threshold_micro: Mapped[int] = mapped_column(BigInteger, default=100_000_000)
    # HMAC key for this account's webhook signatures; generated on first use.
    webhook_secret: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerEntry(Base):
    """One movement of credits. ``request_id`` is unique per account and kind: a request is
    debited once, and an operator's idempotency key (a grant's or refund's ``request_id``) belongs
    to the account it was used for, so another account can use the same key for its own grant."""

    __tablename__ = "credit_ledger"
    __table_args__ = (
        UniqueConstraint("account_id", "kind", "request_id"),
        Index("ix_credit_ledger_account_created", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    balance_after_micro: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PaymentKind(enum.StrEnum):
    PURCHASE = "purchase"
    REVERSAL = "reversal"


class Payment(Base):
    """One payment provider event that moved credits: a purchase or its reversal (refund,
    chargeback). ``(provider, event_id)`` is unique, so a provider's retried or replayed webhook
    — to any process — finds the row and grants nothing more; the row and its ledger entry are
    written in one transaction. ``reference`` is the provider's id for the purchase (a checkout
    session, an order), which a later reversal names. Money paid is in the currency's minor
    unit (cents), as the providers report it; credits are micro-credits, signed like the ledger."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index("ix_payments_provider_reference", "provider", "reference"),
        Index("ix_payments_account_created", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(200), default="")
    package_id: Mapped[str] = mapped_column(String(64), default="")
    credits_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="")
    ledger_entry_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageRecord(Base):
    """One compact row per authenticated request, idempotent on ``request_id``."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_account_created", "account_id", "created_at"),
        Index("ix_usage_records_key_created", "key_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    key_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    model: Mapped[str] = mapped_column(String(200), default="")
    provider: Mapped[str] = mapped_column(String(100), default="")
    upstream_model: Mapped[str] = mapped_column(String(200), default="")
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    credits_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int] = mapped_column(Integer, default=200)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    end_user_id: Mapped[str] = mapped_column(String(256), default="")
    # Why this record needs a second look (usage past its hold, malformed input); "" when none.
    anomaly: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ParkedSettlement(Base):
    """A buffered settlement the database refused (a data error, not an outage), set aside so
    it cannot block every other account's writes. Its hold was released and its cost taken off
    the mirror when it was served, but the database never debited it: reconcile fails while a
    row is here, and ``tollway billing replay-parked`` writes it once the cause is fixed.

    ``data`` is the entry exactly as buffered (JSON text, with anything the database cannot
    store escaped), so nothing about the request is lost."""

    __tablename__ = "parked_settlements"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # No foreign key: a settlement for an account that is gone is one of the things parked.
    account_id: Mapped[int] = mapped_column(BigInteger, index=True)
    request_id: Mapped[str] = mapped_column(String(200), unique=True)
    cost_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    data: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VideoJob(Base):
    """An asynchronous video generation: charged when created, refunded once if it fails.

    The id is the upstream's job id; ``provider`` says which upstream to ask for its status and
    content. Only the account that created a job can see it.
    """

    __tablename__ = "video_jobs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(100))
    upstream_model: Mapped[str] = mapped_column(String(200))
    seconds: Mapped[int] = mapped_column(Integer, default=0)
    cost_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    refunded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ModelPriceOverride(Base):
    """An operator's price for one model slug (USD strings, as in the config); wins over both
    the config and the shipped price list, and reaches every gateway process within seconds."""

    __tablename__ = "model_price_overrides"

    slug: Mapped[str] = mapped_column(String(200), primary_key=True)
    prices: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    """Something to tell an account's webhooks, written in the transaction that caused it (the
    outbox). ``key_id`` set: that key's webhook only; unset: every active key with a webhook.
    ``dedupe_key`` makes "once per crossing / period / minute" a unique constraint."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event to one URL, retried with backoff until it answers 2xx or attempts run out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "url"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_status: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

"""Typed SQLAlchemy 2 models for proxy functions.

Every table carries ``account_id`` even where a parent already implies it: each query filters on
it first, so one tenant can never reach another's rows by guessing an id. Secret values and
function tokens are stored only as key-ring ciphertexts (:mod:`functions.crypto`); the token is
also stored as its SHA-256 so the runtime compares digests, never plaintexts.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from billing.models import Base, BigIntId, utcnow

DEFAULT_ENVIRONMENTS = ("Development", "Staging", "Production")


class HttpMethod(enum.StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"


class InjectAs(enum.StrEnum):
    HEADER = "header"
    BODY = "body"
    QUERY = "query"


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Variable(Base):
    """A named value of one environment. Every value is encrypted; ``is_secret`` decides masking."""

    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("environment_id", "key"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    value_ciphertext: Mapped[str] = mapped_column(Text)
    is_secret: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ProxyFunction(Base):
    """One hosted proxy: the fields of envmanager.md §2 plus Tollway's forwarding options.

    ``secret_mappings`` items: ``{"variable_id": int, "inject_as": "header"|"body"|"query",
    "key": str, "template": str}`` (template "" = the raw value; its first ``${value}`` is
    replaced). ``body_template`` is a JSON value or None. The id is a random UUID: it is the
    public URL, so it must not be guessable or enumerable.
    """

    __tablename__ = "proxy_functions"
    __table_args__ = (
        UniqueConstraint("environment_id", "slug"),
        Index("ix_proxy_functions_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(50))
    description: Mapped[str] = mapped_column(String(1000), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    target_url: Mapped[str] = mapped_column(String(2000))
    method: Mapped[str] = mapped_column(String(8), default=HttpMethod.POST.value)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secret_mappings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    allowed_origins: Mapped[list[Any]] = mapped_column(JSON, default=list)
    pass_through_body: Mapped[bool] = mapped_column(Boolean, default=True)
    body_template: Mapped[Any | None] = mapped_column(JSON, default=None, nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    template_id: Mapped[str] = mapped_column(String(64), default="")  # a template slug, "" = custom
    forward_path: Mapped[bool] = mapped_column(Boolean, default=False)
    forward_query: Mapped[bool] = mapped_column(Boolean, default=False)
    timeout_ms: Mapped[int] = mapped_column(Integer, default=25_000)
    token_ciphertext: Mapped[str] = mapped_column(Text)
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class FunctionInvocation(Base):
    """One call of a proxy function, written behind the request like usage records.

    No foreign key to the function: the history outlives a deleted function (analytics keep
    counting it), and a log row must never fail to insert because its function just went away.
    ``request_id`` is unique so a replayed write-behind batch inserts each call once.
    """

    __tablename__ = "function_invocations"
    __table_args__ = (
        Index("ix_function_invocations_account_time", "account_id", "requested_at"),
        Index("ix_function_invocations_function_time", "function_id", "requested_at"),
        # Analytics read one project's (or environment's) calls over a window (migration 0010).
        Index("ix_function_invocations_project_time", "project_id", "requested_at"),
        Index("ix_function_invocations_environment_time", "environment_id", "requested_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(BigInteger)
    environment_id: Mapped[int] = mapped_column(BigInteger)
    function_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str] = mapped_column(String(32), default="")  # "", timeout, target_error, rate_limited…
    origin: Mapped[str] = mapped_column(String(300), default="")
    credits_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

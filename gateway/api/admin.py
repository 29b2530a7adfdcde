"""``/api/admin``: the operator's API (accounts, their status, credit grants, every account's keys).

Authenticated by the operator token from config (``admin_token``), compared in constant
time by the :func:`gateway.api.deps.operator_only` guard on the controller; with no token
configured the admin API is off.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import func, select

from billing.accounts import (
    AccountExists,
    create_account,
    get_account,
    list_accounts,
    set_account_status,
)
from billing.bounds import MAX_LIST_ITEMS, NO_CONTROL, CreditsText, Email, Item, Name, Password, Reason, ShortText
from billing.grants import grant as grant_and_sync
from billing.grants import grant_signup_credits
from billing.models import Account, AccountStatus, LedgerEntry, LedgerKind, UsageRecord
from billing.money import MoneyError, credits_to_micro, format_credits
from billing.pricing import UsdPrices
from billing.reports import RevenueRow, month_start, revenue_report
from gateway.api.deps import OPERATOR, Injected, operator_only
from gateway.api.openapi import ADMIN_AUTH, errors
from gateway.api.views import model_view, usage_view
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound
from gateway.prices import load_overrides, store_override
from gateway.state import GatewayState
from gateway.validation import PathId, QueryId, Slug
from keys.audit import record_event
from keys.management import KeyCreate, KeyNotFound, create_key_with, delete_key, list_all_keys
from keys.members import add_member
from keys.models import ApiKey, Role


class AccountConflict(GatewayError):
    status_code = 409
    code = "account_exists"


class AccountCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    email: Annotated[str, msgspec.Meta(max_length=320, pattern=NO_CONTROL)] = ""
    credits: CreditsText = "0"


class AccountUpdate(msgspec.Struct, forbid_unknown_fields=True):
    status: AccountStatus


class AdminKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class AdminMemberAdd(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password | None = None
    role: Role = Role.OWNER


class RefundCreate(msgspec.Struct, forbid_unknown_fields=True):
    amount: CreditsText
    idempotency_key: ShortText
    reason: Reason = ""


class PriceOverride(UsdPrices, forbid_unknown_fields=True, frozen=True):
    """An operator's prices for a model (USD, like the config), bounded by UsdPrices itself."""

    per_unit_usd_variants: Annotated[dict[Item, Decimal], msgspec.Meta(max_length=MAX_LIST_ITEMS)] = {}


class CreditGrant(msgspec.Struct, forbid_unknown_fields=True):
    amount: CreditsText
    reason: Reason = ""
    idempotency_key: ShortText | None = None


class AccountRead(msgspec.Struct):
    id: int
    name: str
    email: str
    status: str
    balance: str  # credits, as a decimal string
    created_at: str


class AccountList(msgspec.Struct):
    accounts: list[AccountRead]


class GrantRead(msgspec.Struct):
    ledger_id: int
    amount: str
    balance: str


class RefundRead(msgspec.Struct):
    ledger_id: int
    kind: str
    amount: str
    balance: str


class AdminKeyCreated(msgspec.Struct):
    id: int
    account_id: int
    name: str
    prefix: str
    key: str  # shown once


class AdminKeyRead(msgspec.Struct):
    """A key as the operator sees it: who holds it and its display prefix, never the key."""

    id: int
    account_id: int
    name: str
    prefix: str
    is_active: bool
    expires_at: str | None
    created_at: str


class AdminKeyList(msgspec.Struct):
    keys: list[AdminKeyRead]


def revenue_line(row: RevenueRow) -> RevenueLine:
    return RevenueLine(
        month=row.month,
        package_id=row.package_id,
        currency=row.currency,
        purchases=row.purchases,
        gross_minor=row.gross_minor,
        refunded_minor=row.refunded_minor,
        net_minor=row.net_minor,
        credits_sold=format_credits(row.credits_sold_micro),
        credits_reversed=format_credits(row.credits_reversed_micro),
    )


def admin_key_read(key: ApiKey) -> AdminKeyRead:
    return AdminKeyRead(
        id=key.id,
        account_id=key.account_id,
        name=key.name,
        prefix=key.prefix,
        is_active=key.is_active,
        expires_at=key.expires_at.isoformat() if key.expires_at else None,
        created_at=key.created_at.isoformat(),
    )


class AdminMemberRead(msgspec.Struct):
    account_id: int
    id: int
    user_id: int
    email: str
    role: Role


class AdminModelList(msgspec.Struct):
    models: list[dict[str, Any]]  # /v1/models' entries, plus "price_override": bool


class RevenueLine(msgspec.Struct):
    """One UTC month, package and currency. Money in the currency's minor unit (cents), credits
    as decimal strings; ``refunded`` and ``credits_reversed`` are positive amounts given back."""

    month: str
    package_id: str
    currency: str
    purchases: int
    gross_minor: int
    refunded_minor: int
    net_minor: int
    credits_sold: str
    credits_reversed: str


class RevenueReport(msgspec.Struct):
    first_month: str | None
    last_month: str | None
    data: list[RevenueLine]


# A month as YYYY-MM in the query (``from`` and ``to`` are the names a caller writes).
MonthFrom = Annotated[str | None, QueryParameter(name="from", max_length=7, pattern=NO_CONTROL)]
MonthTo = Annotated[str | None, QueryParameter(name="to", max_length=7, pattern=NO_CONTROL)]


def _month(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    try:
        month_start(value)
    except ValueError as error:
        raise InvalidRequest(str(error), param=param) from error
    return value


class Anomalies(msgspec.Struct):
    counts: dict[str, int]
    this_process: dict[str, int]
    newest: list[dict[str, Any]]  # usage records, with their account_id


async def _move_credits(
    gateway: GatewayState,
    account_id: int,
    amount: int,
    reason: str,
    idempotency_key: str | None,
    *,
    kind: LedgerKind = LedgerKind.GRANT,
) -> tuple[LedgerEntry, int]:
    """Grant or refund through the one grant service; returns the ledger entry and the balance
    as it stands now (finished requests written first, so the answer includes them)."""
    await gateway.meter.settled(account_id)
    entry = await grant_and_sync(
        gateway.sessionmaker,
        gateway.counters,
        gateway.settings.redis_prefix,
        account_id,
        amount,
        reason=reason,
        idempotency_key=idempotency_key,
        kind=kind,
    )
    async with gateway.sessionmaker() as session:
        account = await get_account(session, account_id)
    return entry, account.balance_micro


def _credits(value: str, param: str) -> int:
    try:
        return credits_to_micro(value)
    except MoneyError as error:
        raise InvalidRequest(str(error), param=param) from error


def account_read(account: Account) -> AccountRead:
    return AccountRead(
        id=account.id,
        name=account.name,
        email=account.email,
        status=account.status,
        balance=format_credits(account.balance_micro),
        created_at=account.created_at.isoformat(),
    )


class AdminController(Controller):
    path = "/api/admin"
    tags = ["admin"]
    guards = [operator_only]
    security = ADMIN_AUTH

    @get("/accounts/", operation_id="admin_list_accounts", responses=errors(401))
    async def list_accounts(self, gateway: Injected[GatewayState]) -> AccountList:
        async with gateway.sessionmaker() as session:
            return AccountList([account_read(a) for a in await list_accounts(session)])

    @post("/accounts/", status_code=201, operation_id="admin_create_account", responses=errors(400, 401, 409, 413))
    async def create_account(self, gateway: Injected[GatewayState], data: JSONBody[AccountCreate]) -> AccountRead:
        """A new customer account: its opening ``credits``, then the configured ``signup_credits``
        once (a ledger grant of its own, reason "sign-up credits")."""
        credits = _credits(data.credits, "credits")
        if credits < 0:
            raise InvalidRequest("credits cannot be negative", param="credits")
        async with gateway.sessionmaker() as session:
            try:
                account = await create_account(session, data.name, email=data.email, credits_micro=credits)
            except AccountExists as error:
                raise AccountConflict(str(error), param="name") from error
        signup = credits_to_micro(gateway.settings.signup_credits)
        if await grant_signup_credits(
            gateway.sessionmaker, gateway.counters, gateway.settings.redis_prefix, account.id, signup
        ):
            async with gateway.sessionmaker() as session:
                account = await get_account(session, account.id)
        return account_read(account)

    @patch("/accounts/{account_id:int}/", operation_id="admin_update_account", responses=errors(400, 401, 404, 413))
    async def update_account(
        self, gateway: Injected[GatewayState], account_id: FromPath[PathId], data: JSONBody[AccountUpdate]
    ) -> AccountRead:
        async with gateway.sessionmaker() as session:
            account, previous = await set_account_status(session, account_id, data.status)
            record_event(
                session,
                account_id=account_id,
                actor=OPERATOR,
                action="account.status",
                target_type="account",
                target_id=account_id,
                before={"status": previous},
                after={"status": data.status.value},
            )
            await session.commit()
        gateway.keys.forget_all()
        return account_read(account)

    @post(
        "/accounts/{account_id:int}/credits/",
        status_code=201,
        operation_id="admin_grant_credits",
        responses=errors(400, 401, 404, 413),
    )
    async def grant(
        self, gateway: Injected[GatewayState], account_id: FromPath[PathId], data: JSONBody[CreditGrant]
    ) -> GrantRead:
        amount = _credits(data.amount, "amount")
        if amount == 0:
            raise InvalidRequest("amount must not be zero", param="amount")
        entry, balance = await _move_credits(gateway, account_id, amount, data.reason, data.idempotency_key)
        return GrantRead(entry.id, format_credits(entry.amount_micro), format_credits(balance))

    @post(
        "/accounts/{account_id:int}/refunds/",
        status_code=201,
        operation_id="admin_refund_credits",
        responses=errors(400, 401, 404, 413),
    )
    async def refund(
        self, gateway: Injected[GatewayState], account_id: FromPath[PathId], data: JSONBody[RefundCreate]
    ) -> RefundRead:
        """Give credits back for something that went wrong; the idempotency key makes a retry safe."""
        amount = _credits(data.amount, "amount")
        if amount <= 0:
            raise InvalidRequest("a refund must be positive", param="amount")
        entry, balance = await _move_credits(
            gateway, account_id, amount, data.reason, data.idempotency_key, kind=LedgerKind.REFUND
        )
        return RefundRead(entry.id, entry.kind, format_credits(entry.amount_micro), format_credits(balance))

    @post(
        "/accounts/{account_id:int}/keys/",
        status_code=201,
        operation_id="admin_create_key",
        responses=errors(400, 401, 404, 413),
    )
    async def create_key(
        self, gateway: Injected[GatewayState], account_id: FromPath[PathId], data: JSONBody[AdminKeyCreate]
    ) -> AdminKeyCreated:
        """An account's first key comes from the operator; the account manages the rest itself."""
        async with gateway.sessionmaker() as session:
            await get_account(session, account_id)
            key, plaintext = await create_key_with(
                session, account_id, KeyCreate(name=data.name), gateway.now(), actor=OPERATOR
            )
        return AdminKeyCreated(key.id, account_id, key.name, key.prefix, plaintext)

    @get("/keys/", operation_id="admin_list_keys", responses=errors(400, 401))
    async def list_keys(self, gateway: Injected[GatewayState], account_id: FromQuery[QueryId] = None) -> AdminKeyList:
        """Every account's keys (or one account's with ``?account_id=``): to find a leaked key by
        its prefix and revoke it."""
        async with gateway.sessionmaker() as session:
            return AdminKeyList([admin_key_read(key) for key in await list_all_keys(session, account_id)])

    @delete("/keys/{key_id:int}/", status_code=204, operation_id="admin_revoke_key", responses=errors(400, 401, 404))
    async def revoke_key(self, gateway: Injected[GatewayState], key_id: FromPath[PathId]) -> None:
        """Revoke (delete) any account's key; other processes stop accepting it within
        ``key_cache_ttl_s``, this one at once."""
        async with gateway.sessionmaker() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise KeyNotFound(f"no key with id {key_id}")
            await delete_key(session, key.account_id, key_id, actor=OPERATOR)
        gateway.keys.forget_all()

    @post(
        "/accounts/{account_id:int}/members/",
        status_code=201,
        operation_id="admin_add_member",
        responses=errors(400, 401, 404, 409, 413),
    )
    async def add_member(
        self, gateway: Injected[GatewayState], account_id: FromPath[PathId], data: JSONBody[AdminMemberAdd]
    ) -> AdminMemberRead:
        """An account's first owner comes from the operator; owners and admins invite the rest."""
        async with gateway.sessionmaker() as session:
            await get_account(session, account_id)
            member = await add_member(
                session,
                account_id,
                email=data.email,
                role=data.role,
                password=data.password,
                actor_role=Role.OWNER,
                actor=OPERATOR,
            )
        return AdminMemberRead(account_id, member.membership_id, member.user_id, member.email, member.role)

    @get("/models/", operation_id="admin_list_models", responses=errors(401))
    async def list_models(self, gateway: Injected[GatewayState]) -> AdminModelList:
        overridden = set(await load_overrides(gateway.sessionmaker))
        return AdminModelList(
            [{**model_view(m), "price_override": m.slug in overridden} for m in gateway.catalog.values()]
        )

    @put("/models/{slug:path}", operation_id="admin_set_price", responses=errors(400, 401, 413))
    async def set_price(
        self, gateway: Injected[GatewayState], slug: FromPath[Slug], data: JSONBody[PriceOverride]
    ) -> dict[str, Any]:
        """Set a model's price (USD, like the config); it reaches every process within seconds."""
        slug = slug.lstrip("/")
        model = gateway.catalog.get(slug)
        if model is None:
            raise ModelNotFound(f"unknown model {slug!r}", param="model")
        fields = data.prices()
        if not fields.covers("embedding" if model.embeds_only else model.category):
            raise InvalidRequest(
                f"these prices do not cover a {model.category} model (see the README's pricing fields)",
                param="input_per_mtok",
            )
        await store_override(gateway, slug, fields)
        return model_view(gateway.catalog[slug])

    @delete("/models/{slug:path}", status_code=204, operation_id="admin_clear_price", responses=errors(400, 401))
    async def clear_price(self, gateway: Injected[GatewayState], slug: FromPath[Slug]) -> None:
        await store_override(gateway, slug.lstrip("/"), None)

    @get("/revenue/", operation_id="admin_revenue_report", responses=errors(400, 401))
    async def revenue(
        self, gateway: Injected[GatewayState], first: MonthFrom = None, last: MonthTo = None
    ) -> RevenueReport:
        """Revenue by UTC month, package and currency over every account, ``from`` and ``to``
        (YYYY-MM) included; a refund counts in the month it happened."""
        first, last = _month(first, "from"), _month(last, "to")
        if first is not None and last is not None and first > last:
            raise InvalidRequest("from is after to", param="from")
        async with gateway.sessionmaker() as session:
            rows = await revenue_report(session, first=first, last=last)
        return RevenueReport(first, last, [revenue_line(row) for row in rows])

    @get("/anomalies/", operation_id="admin_list_anomalies", responses=errors(401))
    async def list_anomalies(self, gateway: Injected[GatewayState]) -> Anomalies:
        """Usage the gateway did not take at the upstream's word (over the hold, unbelievable,
        text it had to clean): counts over every account, the newest records, and this
        process's counters since it started."""
        async with gateway.sessionmaker() as session:
            counts = await session.execute(
                select(UsageRecord.anomaly, func.count()).where(UsageRecord.anomaly != "").group_by(UsageRecord.anomaly)
            )
            newest = await session.scalars(
                select(UsageRecord).where(UsageRecord.anomaly != "").order_by(UsageRecord.id.desc()).limit(50)
            )
            return Anomalies(
                counts={str(kind): int(count) for kind, count in counts},
                this_process=dict(gateway.anomalies),
                newest=[{**usage_view(record), "account_id": record.account_id} for record in newest],
            )

"""``/api/admin``: the operator's API (accounts, their status, credit grants).

Authenticated by the operator token from config (``admin_token``), compared in constant
time; with no token configured the admin API is off.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.params import FromPath
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
from billing.models import Account, AccountStatus, LedgerKind, UsageRecord
from billing.money import MoneyError, credits_to_micro, format_credits
from gateway.api.views import model_view, usage_view
from gateway.catalog import PriceFields, is_priced
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, decode_body, remember_request_id
from gateway.pipeline.chat import new_request_id
from gateway.prices import load_overrides, store_override
from gateway.settings import PRICE_FIELDS
from gateway.state import GatewayState
from gateway.validation import PathId, Slug
from keys.audit import record_event
from keys.management import KeyCreate, create_key_with
from keys.members import add_member
from keys.models import Role

_encoder = msgspec.json.Encoder()
OPERATOR = "operator"


class AdminUnauthorized(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_admin_token"


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


UsdText = Annotated[str, msgspec.Meta(max_length=32, pattern=NO_CONTROL)]
MAX_USD_PRICE = 1_000_000  # per million tokens or per unit: far above any real price


class PriceOverride(msgspec.Struct, forbid_unknown_fields=True):
    input_per_mtok: UsdText = ""
    output_per_mtok: UsdText = ""
    cached_input_per_mtok: UsdText = ""
    cache_write_per_mtok: UsdText = ""
    per_unit_usd: UsdText = ""
    per_unit_usd_variants: Annotated[dict[Item, UsdText], msgspec.Meta(max_length=MAX_LIST_ITEMS)] = {}


class CreditGrant(msgspec.Struct, forbid_unknown_fields=True):
    amount: CreditsText
    reason: Reason = ""
    idempotency_key: ShortText | None = None


def _json(payload: Any, status_code: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status_code, media_type="application/json")


def _operator(request: Request[Any, Any, Any]) -> GatewayState:
    remember_request_id(request, new_request_id())
    state: GatewayState = request.app.state.gateway
    expected = state.settings.admin_token
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    digest = hashlib.sha256
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())
    ):
        raise AdminUnauthorized("a valid operator token is required for /api/admin")
    return state


def _credits(value: str, param: str) -> int:
    try:
        return credits_to_micro(value)
    except MoneyError as error:
        raise InvalidRequest(str(error), param=param) from error


def account_view(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "email": account.email,
        "status": account.status,
        "balance": format_credits(account.balance_micro),
        "created_at": account.created_at.isoformat(),
    }


class AdminController(Controller):
    path = "/api/admin"

    @get("/accounts/")
    async def list_accounts(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state = _operator(request)
        async with state.sessionmaker() as session:
            return _json({"accounts": [account_view(a) for a in await list_accounts(session)]})

    @post("/accounts/")
    async def create_account(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state = _operator(request)
        create = decode_body(await request.body(), AccountCreate)
        credits = _credits(create.credits, "credits")
        if credits < 0:
            raise InvalidRequest("credits cannot be negative", param="credits")
        async with state.sessionmaker() as session:
            try:
                account = await create_account(session, create.name, email=create.email, credits_micro=credits)
            except AccountExists as error:
                raise AccountConflict(str(error), param="name") from error
        return _json(account_view(account), 201)

    @patch("/accounts/{account_id:int}/")
    async def update_account(self, request: Request[Any, Any, Any], account_id: FromPath[PathId]) -> Response[bytes]:
        state = _operator(request)
        update = decode_body(await request.body(), AccountUpdate)
        async with state.sessionmaker() as session:
            account, previous = await set_account_status(session, account_id, update.status)
            record_event(
                session,
                account_id=account_id,
                actor=OPERATOR,
                action="account.status",
                target_type="account",
                target_id=account_id,
                before={"status": previous},
                after={"status": update.status.value},
            )
            await session.commit()
        state.keys.forget_all()
        return _json(account_view(account))

    @post("/accounts/{account_id:int}/credits/")
    async def grant(self, request: Request[Any, Any, Any], account_id: FromPath[PathId]) -> Response[bytes]:
        state = _operator(request)
        grant = decode_body(await request.body(), CreditGrant)
        amount = _credits(grant.amount, "amount")
        if amount == 0:
            raise InvalidRequest("amount must not be zero", param="amount")
        await state.meter.settled(account_id)  # the balance it answers includes finished requests
        entry = await grant_and_sync(
            state.sessionmaker,
            state.counters,
            state.settings.redis_prefix,
            account_id,
            amount,
            reason=grant.reason,
            idempotency_key=grant.idempotency_key,
        )
        async with state.sessionmaker() as session:
            account = await get_account(session, account_id)
        return _json(
            {
                "ledger_id": entry.id,
                "amount": format_credits(entry.amount_micro),
                "balance": format_credits(account.balance_micro),
            },
            201,
        )

    @post("/accounts/{account_id:int}/refunds/")
    async def refund(self, request: Request[Any, Any, Any], account_id: FromPath[PathId]) -> Response[bytes]:
        """Give credits back for something that went wrong; the idempotency key makes a retry safe."""
        state = _operator(request)
        ask = decode_body(await request.body(), RefundCreate)
        amount = _credits(ask.amount, "amount")
        if amount <= 0:
            raise InvalidRequest("a refund must be positive", param="amount")
        await state.meter.settled(account_id)
        entry = await grant_and_sync(
            state.sessionmaker,
            state.counters,
            state.settings.redis_prefix,
            account_id,
            amount,
            reason=ask.reason,
            idempotency_key=ask.idempotency_key,
            kind=LedgerKind.REFUND,
        )
        async with state.sessionmaker() as session:
            account = await get_account(session, account_id)
        return _json(
            {
                "ledger_id": entry.id,
                "kind": entry.kind,
                "amount": format_credits(entry.amount_micro),
                "balance": format_credits(account.balance_micro),
            },
            201,
        )

    @post("/accounts/{account_id:int}/keys/")
    async def create_key(self, request: Request[Any, Any, Any], account_id: FromPath[PathId]) -> Response[bytes]:
        """An account's first key comes from the operator; the account manages the rest itself."""
        state = _operator(request)
        create = decode_body(await request.body(), AdminKeyCreate)
        async with state.sessionmaker() as session:
            await get_account(session, account_id)
            key, plaintext = await create_key_with(
                session, account_id, KeyCreate(name=create.name), state.now(), actor=OPERATOR
            )
        return _json(
            {"id": key.id, "account_id": account_id, "name": key.name, "prefix": key.prefix, "key": plaintext}, 201
        )

    @post("/accounts/{account_id:int}/members/")
    async def add_member(self, request: Request[Any, Any, Any], account_id: FromPath[PathId]) -> Response[bytes]:
        """An account's first owner comes from the operator; owners and admins invite the rest."""
        state = _operator(request)
        ask = decode_body(await request.body(), AdminMemberAdd)
        async with state.sessionmaker() as session:
            await get_account(session, account_id)
            member = await add_member(
                session,
                account_id,
                email=ask.email,
                role=ask.role,
                password=ask.password,
                actor_role=Role.OWNER,
                actor=OPERATOR,
            )
        return _json({"account_id": account_id, **member.as_json()}, 201)

    @get("/models/")
    async def list_models(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state = _operator(request)
        overridden = set(await load_overrides(state.sessionmaker))
        return _json(
            {"models": [{**model_view(m), "price_override": m.slug in overridden} for m in state.catalog.values()]}
        )

    @put("/models/{slug:path}")
    async def set_price(self, request: Request[Any, Any, Any], slug: FromPath[Slug]) -> Response[bytes]:
        """Set a model's price (USD, like the config); it reaches every process within seconds."""
        state = _operator(request)
        slug = slug.lstrip("/")
        model = state.catalog.get(slug)
        if model is None:
            raise ModelNotFound(f"unknown model {slug!r}", param="model")
        ask = decode_body(await request.body(), PriceOverride)
        for field in PRICE_FIELDS:
            value = getattr(ask, field, "")
            if value:
                _usd(value, field)
        for variant, value in ask.per_unit_usd_variants.items():
            _usd(value, f"per_unit_usd_variants.{variant}")
        fields = PriceFields(**msgspec.structs.asdict(ask))
        if not is_priced("embedding" if model.embeds_only else model.category, fields):
            raise InvalidRequest(
                f"these prices do not cover a {model.category} model (see the README's pricing fields)",
                param="input_per_mtok",
            )
        await store_override(state, slug, fields)
        return _json(model_view(state.catalog[slug]))

    @delete("/models/{slug:path}", status_code=204)
    async def clear_price(self, request: Request[Any, Any, Any], slug: FromPath[Slug]) -> None:
        state = _operator(request)
        await store_override(state, slug.lstrip("/"), None)

    @get("/anomalies/")
    async def list_anomalies(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Usage the gateway did not take at the upstream's word (over the hold, unbelievable,
        text it had to clean): counts over every account, the newest records, and this
        process's counters since it started."""
        state = _operator(request)
        async with state.sessionmaker() as session:
            counts = await session.execute(
                select(UsageRecord.anomaly, func.count()).where(UsageRecord.anomaly != "").group_by(UsageRecord.anomaly)
            )
            newest = await session.scalars(
                select(UsageRecord).where(UsageRecord.anomaly != "").order_by(UsageRecord.id.desc()).limit(50)
            )
            return _json(
                {
                    "counts": {str(kind): int(count) for kind, count in counts},
                    "this_process": dict(state.anomalies),
                    "newest": [{**usage_view(record), "account_id": record.account_id} for record in newest],
                }
            )


def _usd(value: str, field: str) -> None:
    try:
        parsed = Decimal(value)
    except InvalidOperation as error:
        raise InvalidRequest(f"{field} must be a decimal string", param=field) from error
    if not parsed.is_finite() or parsed < 0:
        raise InvalidRequest(f"{field} must be a non-negative decimal", param=field)
    if parsed > MAX_USD_PRICE:  # "1e999999" would be stored, then overflow every price computed from it
        raise InvalidRequest(f"{field} must be at most {MAX_USD_PRICE} USD", param=field)

"""``/api/keys``: key management and ``bt-`` browser tokens, thin over :mod:`keys.management`.

Authenticated by a ``prx-`` key of the account or a dashboard session (see
:func:`gateway.api.auth.management_caller`); a caller sees and manages only its own account's
keys, within what its role allows, and ``bt-`` tokens are refused with 403.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from billing.bounds import NO_CONTROL, Id
from billing.money import format_credits
from gateway.api.auth import management_caller
from gateway.errors import decode_body
from gateway.state import GatewayState
from gateway.validation import Limit, PathId, QueryId
from gateway.webhooks import check_webhook_url
from keys.audit import list_events, record_event
from keys.browser_tokens import DEFAULT_TTL_S, MAX_TTL_S, MIN_TTL_S
from keys.management import (
    KeyCreate,
    KeyNotFound,
    KeyUpdate,
    create_key_with,
    delete_key,
    get_key,
    list_keys,
    update_key,
)
from keys.models import ApiKey
from keys.roles import Permission

_encoder = msgspec.json.Encoder()


class EphemeralCreate(msgspec.Struct, forbid_unknown_fields=True):
    key_id: Id
    ttl: Annotated[int, msgspec.Meta(ge=MIN_TTL_S, le=MAX_TTL_S)] = DEFAULT_TTL_S


class EphemeralRevoke(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(max_length=256, pattern=NO_CONTROL)]


def _json(payload: Any, status_code: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status_code, media_type="application/json")


async def key_view(state: GatewayState, key: ApiKey) -> dict[str, Any]:
    spent = await state.meter.key_spend_micro(key.account_id, key.id, key.spending_period, state.now())
    return {
        "id": key.id,
        "name": key.name,
        "description": key.description,
        "prefix": key.prefix,
        "is_active": key.is_active,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "allowed_models": key.allowed_models,
        "allowed_categories": key.allowed_categories,
        "allowed_ips": key.allowed_ips,
        "allowed_origins": key.allowed_origins,
        "blocked_countries": key.blocked_countries,
        "active_hours": key.active_hours,
        "spending_limit": format_credits(key.spending_limit_micro) if key.spending_limit_micro is not None else None,
        "spending_current": format_credits(spent),
        "spending_period": key.spending_period,
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "webhook_url": key.webhook_url,
        "created_at": key.created_at.isoformat(),
    }


class KeysController(Controller):
    path = "/api/keys"

    @get("/")
    async def list_keys(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW)
        async with state.sessionmaker() as session:
            keys = await list_keys(session, caller.account_id)
        return _json({"keys": [await key_view(state, key) for key in keys]})

    @post("/")
    async def create_key(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MANAGE_KEYS)
        create = decode_body(await request.body(), KeyCreate)
        if isinstance(create.webhook_url, str):
            check_webhook_url(create.webhook_url, allow_private=state.settings.webhook_allow_private)
        async with state.sessionmaker() as session:
            key, plaintext = await create_key_with(session, caller.account_id, create, state.now(), actor=caller.actor)
        body = {**await key_view(state, key), "key": plaintext}
        body["_tollway"] = {"note": "Save this key. It will not be shown again."}
        return _json(body, 201)

    @get("/{key_id:int}/")
    async def get_key(self, request: Request[Any, Any, Any], key_id: FromPath[PathId]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW)
        async with state.sessionmaker() as session:
            key = await get_key(session, caller.account_id, key_id)
        return _json(await key_view(state, key))

    @patch("/{key_id:int}/")
    async def update_key(self, request: Request[Any, Any, Any], key_id: FromPath[PathId]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MANAGE_KEYS)
        update = decode_body(await request.body(), KeyUpdate)
        if isinstance(update.webhook_url, str):
            check_webhook_url(update.webhook_url, allow_private=state.settings.webhook_allow_private)
        async with state.sessionmaker() as session:
            key, _before = await update_key(session, caller.account_id, key_id, update, state.now(), actor=caller.actor)
        state.keys.forget_all()
        return _json(await key_view(state, key))

    @delete("/{key_id:int}/", status_code=204)
    async def delete_key(self, request: Request[Any, Any, Any], key_id: FromPath[PathId]) -> None:
        state, caller = await management_caller(request, Permission.MANAGE_KEYS)
        async with state.sessionmaker() as session:
            await delete_key(session, caller.account_id, key_id, actor=caller.actor)
        state.keys.forget_all()

    @post("/ephemeral/")
    async def mint_token(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MINT_TOKENS)
        ask = decode_body(await request.body(), EphemeralCreate)
        caller.require_token_parent(ask.key_id)
        async with state.sessionmaker() as session:
            parent = await _own_active_key(session, caller.account_id, ask.key_id)
        minted = await state.tokens.mint(caller.account_id, parent.id, ask.ttl)
        return _json(
            {"data": {"token": minted.token, "expires_in": minted.expires_in, "expires_at": minted.expires_at}}, 201
        )

    @post("/ephemeral/revoke/", status_code=204)
    async def revoke_token(self, request: Request[Any, Any, Any]) -> None:
        state, caller = await management_caller(request, Permission.MINT_TOKENS)
        ask = decode_body(await request.body(), EphemeralRevoke)
        caller.require_token_owner(await state.tokens.owner_of(ask.token))
        await state.tokens.revoke(ask.token)

    @post("/{key_id:int}/revoke-tokens/", status_code=204)
    async def revoke_all_tokens(self, request: Request[Any, Any, Any], key_id: FromPath[PathId]) -> None:
        state, caller = await management_caller(request, Permission.MANAGE_KEYS)
        async with state.sessionmaker() as session:
            await get_key(session, caller.account_id, key_id)
            await state.tokens.revoke_all(caller.account_id, key_id)
            record_event(
                session,
                account_id=caller.account_id,
                actor=caller.actor,
                action="key.revoke_tokens",
                target_type="key",
                target_id=key_id,
            )
            await session.commit()


async def _own_active_key(session: AsyncSession, account_id: int, key_id: int) -> ApiKey:
    key = await get_key(session, account_id, key_id)
    if not key.is_active:
        raise KeyNotFound(f"key {key_id} is disabled and cannot mint tokens")
    return key


class AuditController(Controller):
    path = "/api/audit"

    @get("/")
    async def list_audit(
        self, request: Request[Any, Any, Any], limit: FromQuery[Limit] = 100, before_id: FromQuery[QueryId] = None
    ) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW_AUDIT)
        async with state.sessionmaker() as session:
            events = await list_events(session, caller.account_id, limit=max(1, min(limit, 500)), before_id=before_id)
        return _json(
            {
                "events": [
                    {
                        "id": e.id,
                        "actor": e.actor,
                        "action": e.action,
                        "target_type": e.target_type,
                        "target_id": e.target_id,
                        "before": e.before,
                        "after": e.after,
                        "created_at": e.created_at.isoformat(),
                    }
                    for e in events
                ]
            }
        )

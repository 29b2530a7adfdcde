"""``/api/keys``: key management and ``bt-`` browser tokens, thin over :mod:`keys.management`.

Authenticated by a ``prx-`` key of the account or a dashboard session (the guards of
:mod:`gateway.api.deps`); a caller sees and manages only its own account's keys, within what its
role allows, and ``bt-`` tokens are refused with 403.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from billing.bounds import NO_CONTROL, Id
from billing.money import format_credits
from gateway.api.actions import create_account_key, delete_account_key, mint_browser_token, update_account_key
from gateway.api.deps import Caller, Injected, requires
from gateway.api.openapi import MEMBER_AUTH, errors
from gateway.state import GatewayState
from gateway.validation import Limit, PathId, QueryId
from keys.audit import list_events, record_event
from keys.browser_tokens import DEFAULT_TTL_S, MAX_TTL_S, MIN_TTL_S
from keys.management import KeyCreate, KeyUpdate, get_key, list_keys
from keys.models import ApiKey
from keys.roles import Permission


class EphemeralCreate(msgspec.Struct, forbid_unknown_fields=True):
    key_id: Id
    ttl: Annotated[int, msgspec.Meta(ge=MIN_TTL_S, le=MAX_TTL_S)] = DEFAULT_TTL_S


class EphemeralRevoke(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(max_length=256, pattern=NO_CONTROL)]


class KeyRead(msgspec.Struct):
    id: int
    name: str
    description: str
    prefix: str
    is_active: bool
    expires_at: str | None
    allowed_models: list[str]
    allowed_categories: list[str]
    allowed_ips: list[str]
    allowed_origins: list[str]
    blocked_countries: list[str]
    active_hours: str
    spending_limit: str | None  # credits, as a decimal string
    spending_current: str
    spending_period: str
    rpm_limit: int | None
    tpm_limit: int | None
    webhook_url: str
    cache_ttl_s: int  # the response cache's lifetime for this key's answers; 0 = off
    created_at: str


class Note(msgspec.Struct):
    note: str


class KeyCreated(KeyRead):
    """The one answer that carries the key itself."""

    key: str
    tollway: Note = msgspec.field(name="_tollway")


class KeyList(msgspec.Struct):
    keys: list[KeyRead]


class BrowserToken(msgspec.Struct):
    token: str
    expires_in: int
    expires_at: int


class BrowserTokenCreated(msgspec.Struct):
    data: BrowserToken


class AuditEvent(msgspec.Struct):
    id: int
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: str


class AuditList(msgspec.Struct):
    events: list[AuditEvent]


async def key_read(state: GatewayState, key: ApiKey) -> KeyRead:
    spent = await state.meter.key_spend_micro(key.account_id, key.id, key.spending_period, state.now())
    return KeyRead(
        id=key.id,
        name=key.name,
        description=key.description,
        prefix=key.prefix,
        is_active=key.is_active,
        expires_at=key.expires_at.isoformat() if key.expires_at else None,
        allowed_models=key.allowed_models,
        allowed_categories=key.allowed_categories,
        allowed_ips=key.allowed_ips,
        allowed_origins=key.allowed_origins,
        blocked_countries=key.blocked_countries,
        active_hours=key.active_hours,
        spending_limit=format_credits(key.spending_limit_micro) if key.spending_limit_micro is not None else None,
        spending_current=format_credits(spent),
        spending_period=key.spending_period,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        webhook_url=key.webhook_url,
        cache_ttl_s=key.cache_ttl_s,
        created_at=key.created_at.isoformat(),
    )


class KeysController(Controller):
    path = "/api/keys"
    tags = ["keys"]
    security = MEMBER_AUTH

    @get("/", guards=[requires(Permission.VIEW)], operation_id="list_keys", responses=errors(401, 403))
    async def list_keys(self, gateway: Injected[GatewayState], caller: Injected[Caller]) -> KeyList:
        async with gateway.sessionmaker() as session:
            keys = await list_keys(session, caller.account_id)
        return KeyList([await key_read(gateway, key) for key in keys])

    @post(
        "/",
        guards=[requires(Permission.MANAGE_KEYS)],
        operation_id="create_key",
        responses=errors(400, 401, 403, 413),
    )
    async def create_key(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[KeyCreate]
    ) -> KeyCreated:
        key, plaintext = await create_account_key(gateway, caller, data)
        read = await key_read(gateway, key)
        return KeyCreated(
            **msgspec.structs.asdict(read), key=plaintext, tollway=Note("Save this key. It will not be shown again.")
        )

    @get(
        "/{key_id:int}/",
        guards=[requires(Permission.VIEW)],
        operation_id="get_key",
        responses=errors(400, 401, 403, 404),
    )
    async def get_key(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], key_id: FromPath[PathId]
    ) -> KeyRead:
        async with gateway.sessionmaker() as session:
            key = await get_key(session, caller.account_id, key_id)
        return await key_read(gateway, key)

    @patch(
        "/{key_id:int}/",
        guards=[requires(Permission.MANAGE_KEYS)],
        operation_id="update_key",
        responses=errors(400, 401, 403, 404, 413),
    )
    async def update_key(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        key_id: FromPath[PathId],
        data: JSONBody[KeyUpdate],
    ) -> KeyRead:
        return await key_read(gateway, await update_account_key(gateway, caller, key_id, data))

    @delete(
        "/{key_id:int}/",
        status_code=204,
        guards=[requires(Permission.MANAGE_KEYS)],
        operation_id="delete_key",
        responses=errors(400, 401, 403, 404),
    )
    async def delete_key(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], key_id: FromPath[PathId]
    ) -> None:
        await delete_account_key(gateway, caller, key_id)

    @post(
        "/ephemeral/",
        guards=[requires(Permission.MINT_TOKENS)],
        operation_id="mint_browser_token",
        responses=errors(400, 401, 403, 404, 413),
    )
    async def mint_token(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[EphemeralCreate]
    ) -> BrowserTokenCreated:
        minted = await mint_browser_token(gateway, caller, data.key_id, data.ttl)
        return BrowserTokenCreated(BrowserToken(minted.token, minted.expires_in, minted.expires_at))

    @post(
        "/ephemeral/revoke/",
        status_code=204,
        guards=[requires(Permission.MINT_TOKENS)],
        operation_id="revoke_browser_token",
        responses=errors(400, 401, 403, 413),
    )
    async def revoke_token(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[EphemeralRevoke]
    ) -> None:
        caller.require_token_owner(await gateway.tokens.owner_of(data.token))
        await gateway.tokens.revoke(data.token)

    @post(
        "/{key_id:int}/revoke-tokens/",
        status_code=204,
        guards=[requires(Permission.MANAGE_KEYS)],
        operation_id="revoke_key_browser_tokens",
        responses=errors(400, 401, 403, 404),
    )
    async def revoke_all_tokens(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], key_id: FromPath[PathId]
    ) -> None:
        async with gateway.sessionmaker() as session:
            await get_key(session, caller.account_id, key_id)
            await gateway.tokens.revoke_all(caller.account_id, key_id)
            record_event(
                session,
                account_id=caller.account_id,
                actor=caller.actor,
                action="key.revoke_tokens",
                target_type="key",
                target_id=key_id,
            )
            await session.commit()


class AuditController(Controller):
    path = "/api/audit"
    tags = ["audit"]
    security = MEMBER_AUTH

    @get("/", guards=[requires(Permission.VIEW_AUDIT)], operation_id="list_audit", responses=errors(400, 401, 403))
    async def list_audit(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        limit: FromQuery[Limit] = 100,
        before_id: FromQuery[QueryId] = None,
    ) -> AuditList:
        async with gateway.sessionmaker() as session:
            events = await list_events(session, caller.account_id, limit=max(1, min(limit, 500)), before_id=before_id)
        return AuditList(
            [
                AuditEvent(
                    id=e.id,
                    actor=e.actor,
                    action=e.action,
                    target_type=e.target_type,
                    target_id=e.target_id,
                    before=e.before,
                    after=e.after,
                    created_at=e.created_at.isoformat(),
                )
                for e in events
            ]
        )

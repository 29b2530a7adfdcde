"""The management actions the ``/api`` controllers and the dashboard's pages both perform.

Each action is the whole rule once: the role check, the checks that live outside the domain
service (a webhook URL refused at configuration time, a restricted key minting only for itself),
the service call in its own transaction, and what must follow it (forgetting the cached key
resolutions). A JSON controller and an HTML form handler differ only in how they read the request
and render the answer, so neither can drift from the other.

This is not a controller module: controllers import it, never each other (pyproject.toml).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.bounds import Credits
from billing.models import Account, WebhookDelivery, WebhookEvent
from billing.money import MoneyError, credits_to_micro
from gateway.api.deps import Caller
from gateway.state import GatewayState
from gateway.webhooks import check_webhook_url
from keys.audit import record_event
from keys.browser_tokens import MintedToken
from keys.invitations import (
    Accepted,
    InvitationView,
    accept_invitation,
    create_invitation,
    invited_email,
    revoke_invitation,
)
from keys.management import KeyCreate, KeyNotFound, KeyUpdate, create_key_with, delete_key, get_key, update_key
from keys.members import MemberView, change_role, remove_member, user_by_email
from keys.models import ApiKey, Role
from keys.restrictions import RestrictionError
from keys.roles import Permission, require
from keys.sessions import Principal

__all__ = [
    "change_member_role",
    "create_account_key",
    "delete_account_key",
    "invite_member",
    "mint_browser_token",
    "redeem_invitation",
    "remove_account_member",
    "revoke_account_invitation",
    "set_low_credit_threshold",
    "update_account_key",
    "webhook_deliveries",
    "webhook_secret",
]


async def create_account_key(state: GatewayState, caller: Caller, data: KeyCreate) -> tuple[ApiKey, str]:
    """Create a key (the row and its plaintext, shown once)."""
    require(caller.role, Permission.MANAGE_KEYS)
    if isinstance(data.webhook_url, str):
        check_webhook_url(data.webhook_url, allow_private=state.settings.webhook_allow_private)
    async with state.sessionmaker() as session:
        return await create_key_with(session, caller.account_id, data, state.now(), actor=caller.actor)


async def update_account_key(state: GatewayState, caller: Caller, key_id: int, data: KeyUpdate) -> ApiKey:
    require(caller.role, Permission.MANAGE_KEYS)
    if isinstance(data.webhook_url, str):
        check_webhook_url(data.webhook_url, allow_private=state.settings.webhook_allow_private)
    async with state.sessionmaker() as session:
        key, _before = await update_key(session, caller.account_id, key_id, data, state.now(), actor=caller.actor)
    state.keys.forget_all()  # a restriction changed: the next call re-reads the key
    return key


async def delete_account_key(state: GatewayState, caller: Caller, key_id: int) -> None:
    require(caller.role, Permission.MANAGE_KEYS)
    async with state.sessionmaker() as session:
        await delete_key(session, caller.account_id, key_id, actor=caller.actor)
    state.keys.forget_all()


async def mint_browser_token(state: GatewayState, caller: Caller, key_id: int, ttl_s: int) -> MintedToken:
    """A ``bt-`` token under one of the account's active keys."""
    require(caller.role, Permission.MINT_TOKENS)
    caller.require_token_parent(key_id)
    async with state.sessionmaker() as session:
        parent = await own_active_key(session, caller.account_id, key_id)
    return await state.tokens.mint(caller.account_id, parent.id, ttl_s)


async def own_active_key(session: AsyncSession, account_id: int, key_id: int) -> ApiKey:
    key = await get_key(session, account_id, key_id)
    if not key.is_active:
        raise KeyNotFound(f"key {key_id} is disabled and cannot mint tokens")
    return key


async def invite_member(state: GatewayState, caller: Caller, email: str, role: Role) -> tuple[InvitationView, str]:
    """An invitation and its one-time token (shown once)."""
    require(caller.role, Permission.MANAGE_MEMBERS)
    async with state.sessionmaker() as session:
        return await create_invitation(
            session,
            caller.account_id,
            email=email,
            role=role,
            actor_role=caller.role,
            actor=caller.actor,
            now=state.now(),
        )


async def revoke_account_invitation(state: GatewayState, caller: Caller, invitation_id: int) -> None:
    require(caller.role, Permission.MANAGE_MEMBERS)
    async with state.sessionmaker() as session:
        await revoke_invitation(
            session, caller.account_id, invitation_id, actor_role=caller.role, actor=caller.actor, now=state.now()
        )


async def redeem_invitation(
    state: GatewayState, token: str, password: str | None, signed_in: Principal | None
) -> Accepted:
    """Join the account an invitation is for. A session proves who is accepting; without one, a new
    user's chosen password, or an existing user's own current password (checked, never set)."""
    signed_in_id: int | None = None
    if signed_in is not None:
        signed_in_id, password = signed_in.user_id, None
    elif password:
        async with state.sessionmaker() as session:
            email = await invited_email(session, token, state.now())
            existing = await user_by_email(session, email) if email is not None else None
        if existing is not None:
            signed_in_id, password = await state.sessions.verify_user(existing.email, password), None
    async with state.sessionmaker() as session:
        return await accept_invitation(session, token, state.now(), signed_in_user_id=signed_in_id, password=password)


async def change_member_role(state: GatewayState, caller: Caller, member_id: int, role: Role) -> MemberView:
    require(caller.role, Permission.MANAGE_MEMBERS)
    async with state.sessionmaker() as session:
        return await change_role(
            session, caller.account_id, member_id, role, actor_role=caller.role, actor=caller.actor
        )


async def remove_account_member(state: GatewayState, caller: Caller, member_id: int) -> None:
    require(caller.role, Permission.MANAGE_MEMBERS)
    async with state.sessionmaker() as session:
        await remove_member(session, caller.account_id, member_id, actor_role=caller.role, actor=caller.actor)


async def webhook_secret(state: GatewayState, caller: Caller, *, rotate: bool) -> str:
    """The account's webhook signing secret, made on first read; ``rotate`` replaces it."""
    require(caller.role, Permission.MANAGE_KEYS)
    async with state.sessionmaker() as session:
        account = await session.get(Account, caller.account_id, with_for_update=True)
        assert account is not None
        if rotate or not account.webhook_secret:
            account.webhook_secret = "whsec_" + secrets.token_hex(24)
            if rotate:
                record_event(
                    session,
                    account_id=caller.account_id,
                    actor=caller.actor,
                    action="webhook_secret.rotate",
                    target_type="account",
                    target_id=caller.account_id,
                )
            await session.commit()
        return account.webhook_secret


async def webhook_deliveries(
    state: GatewayState, caller: Caller, *, limit: int
) -> Sequence[tuple[WebhookDelivery, str]]:
    """The account's most recent webhook deliveries, newest first, with their event names."""
    require(caller.role, Permission.VIEW_AUDIT)
    async with state.sessionmaker() as session:
        rows = await session.execute(
            select(WebhookDelivery, WebhookEvent.event)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookEvent.account_id == caller.account_id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
        return [(delivery, event) for delivery, event in rows.all()]


MAX_THRESHOLD_MICRO = 10**15  # a billion credits: far past any balance, well inside BIGINT


async def set_low_credit_threshold(state: GatewayState, caller: Caller, credits: Credits) -> int:
    """Set the balance below which ``low_credits`` fires (owners: billing); returns micro-credits."""
    require(caller.role, Permission.BILLING)
    try:
        micro = credits_to_micro(str(credits))
    except MoneyError as error:
        raise RestrictionError("low_credits_threshold", f"not a number of credits: {credits}") from error
    if not 0 <= micro <= MAX_THRESHOLD_MICRO:
        raise RestrictionError("low_credits_threshold", "must be between 0 and 1,000,000,000 credits")
    async with state.sessionmaker() as session:
        account = await session.get(Account, caller.account_id, with_for_update=True)
        assert account is not None
        before = account.low_credit_threshold_micro
        account.low_credit_threshold_micro = micro
        record_event(
            session,
            account_id=caller.account_id,
            actor=caller.actor,
            action="account.low_credits_threshold",
            target_type="account",
            target_id=caller.account_id,
            before={"low_credit_threshold_micro": before},
            after={"low_credit_threshold_micro": micro},
        )
        await session.commit()
    return micro

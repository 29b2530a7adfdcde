"""First-run setup: the one-time link that lets the bootstrap account's owner choose a sign-in.

``tollway serve`` creates the ``default`` account with a key but no user; the dashboard needs an
owner. The setup link reuses the invitation mechanism (:mod:`keys.invitations`): a row in
``invitations`` with the role ``owner`` and no email (whoever opens the link chooses theirs), a
single-use token stored only as its SHA-256, expiring after ``SETUP_TTL``. Redeeming it creates
the user with their own password (the usual policy) and makes them the account's owner; an email
that already has a sign-in is refused (that person signs in and is added by an owner, or by the
operator's ``tollway members add``), so the link can never take over an existing user.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from keys.audit import record_event
from keys.errors import IdentityConflict
from keys.invitations import TOKEN_PREFIX, Accepted, InvitationInvalid
from keys.members import create_user, normalise_email, user_by_email
from keys.models import Invitation, Membership, Role
from keys.secrets import hash_key

__all__ = ["SETUP_EMAIL", "SETUP_TTL", "complete_setup", "create_setup_link", "setup_is_pending"]

SETUP_EMAIL = ""  # an invitation with no email is a setup link
SETUP_TTL = timedelta(days=7)


async def create_setup_link(session: AsyncSession, account_id: int, now: datetime, *, actor: str) -> str:
    """A new setup token for ``account_id`` (returned once, stored hashed). Commits."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = Invitation(
        account_id=account_id,
        email=SETUP_EMAIL,
        role=Role.OWNER.value,
        token_hash=hash_key(token),
        invited_by=actor,
        created_at=now,
        expires_at=now + SETUP_TTL,
    )
    session.add(row)
    await session.flush()
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="setup.create",
        target_type="invitation",
        target_id=row.id,
        after={"role": Role.OWNER.value, "expires_at": row.expires_at.isoformat()},
    )
    await session.commit()
    return token


def _pending(token: str, now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Invitation.token_hash == hash_key(token),
        Invitation.email == SETUP_EMAIL,
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > now,
    )


async def setup_is_pending(session: AsyncSession, token: str, now: datetime) -> bool:
    found = await session.scalar(select(Invitation.id).where(*_pending(token, now)))
    return found is not None


async def complete_setup(session: AsyncSession, token: str, email: str, password: str, now: datetime) -> Accepted:
    """Redeem the setup link once: a new user with this email and password, owner of the account."""
    row = await session.scalar(select(Invitation).where(*_pending(token, now)).with_for_update())
    if row is None:
        raise InvitationInvalid(
            "this setup link is unknown, used or expired: `tollway members setup-link` makes a new one"
        )
    email = normalise_email(email)
    if await user_by_email(session, email) is not None:
        raise IdentityConflict(f"{email} already has a sign-in: sign in instead, and ask an owner to add you")
    user = await create_user(session, email, password)
    membership = Membership(account_id=row.account_id, user_id=user.id, role=Role.OWNER.value)
    session.add(membership)
    row.accepted_at = now
    row.email = email
    await session.flush()
    record_event(
        session,
        account_id=row.account_id,
        actor=f"user:{user.id}",
        action="member.add",
        target_type="member",
        target_id=membership.id,
        after={"email": email, "role": Role.OWNER.value, "setup_link": row.id},
    )
    await session.commit()
    return Accepted(row.account_id, membership.id, user.id, email, Role.OWNER)

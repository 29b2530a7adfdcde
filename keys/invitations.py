"""Invitations: how a person joins an account without anyone else choosing their password.

Adding a member used to create the user with a password the inviter chose. Users are global
(one sign-in, many accounts), so an admin of account X could create ``alice@victim.example``,
remove her, and sign in as her once account Y added the same email. Now:

- an owner or admin creates an invitation (email, role) and is shown its one-time token once;
  only the token's SHA-256 is stored, and it expires after ``INVITATION_TTL``;
- creating one reads nothing about the email outside the account, so the answer is the same
  whether or not a user with that email exists;
- whoever holds the token accepts it: a new user sets their own password (the usual policy);
  an existing user must prove they are that user (a dashboard session as them, or their own
  current password), and no password is ever set for an existing user;
- owners and admins list and revoke pending invitations; only owners invite owners; every step
  lands in the audit trail.

The operator's tools (``tollway members add``, ``POST /api/admin/accounts/{id}/members/``) still
add members directly through :func:`keys.members.add_member`, which never overwrites an
existing user's password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keys.audit import record_event
from keys.errors import IdentityConflict, IdentityInvalid, KeyError_, RoleForbidden
from keys.members import create_user, normalise_email
from keys.models import Invitation, Membership, Role, User
from keys.roles import may_assign
from keys.secrets import hash_key

INVITATION_TTL = timedelta(days=7)
TOKEN_PREFIX = "twinv_"


class InvitationInvalid(KeyError_):
    """Unknown, used, revoked or expired: one answer for all, so a token cannot be probed."""

    status_code = 404
    type = "not_found_error"
    code = "invitation_invalid"


class InvitationNeedsSignIn(KeyError_):
    status_code = 401
    type = "authentication_error"
    code = "sign_in_required"


@dataclass(frozen=True, slots=True)
class InvitationView:
    id: int
    email: str
    role: Role
    invited_by: str
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, row: Invitation) -> InvitationView:
        return cls(row.id, row.email, Role(row.role), row.invited_by, _aware(row.created_at), _aware(row.expires_at))

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role.value,
            "invited_by": self.invited_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Accepted:
    account_id: int
    membership_id: int
    user_id: int
    email: str
    role: Role


def _check_assign(actor_role: Role, role: Role) -> None:
    if not may_assign(actor_role, None, role):
        raise RoleForbidden("only owners can invite owners; owners and admins invite the rest")


def _pending(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None), Invitation.expires_at > now)


async def create_invitation(
    session: AsyncSession, account_id: int, *, email: str, role: Role, actor_role: Role, actor: str, now: datetime
) -> tuple[InvitationView, str]:
    """Create an invitation; returns it and its token (shown once, never stored). Commits.

    A pending invitation for the same email is replaced, so the newest link is the only one.
    """
    _check_assign(actor_role, role)
    email = normalise_email(email)
    # Only this account's own members are looked at (the inviter can list them anyway).
    already = await session.scalar(
        select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.account_id == account_id, User.email == email)
    )
    if already is not None:
        raise IdentityConflict(f"{email} is already a member of this account")
    await session.execute(
        update(Invitation)
        .where(Invitation.account_id == account_id, Invitation.email == email, *_pending(now))
        .values(revoked_at=now)
    )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = Invitation(
        account_id=account_id,
        email=email,
        role=role.value,
        token_hash=hash_key(token),
        invited_by=actor,
        created_at=now,
        expires_at=now + INVITATION_TTL,
    )
    session.add(row)
    await session.flush()
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="invitation.create",
        target_type="invitation",
        target_id=row.id,
        after={"email": email, "role": role.value, "expires_at": row.expires_at.isoformat()},
    )
    await session.commit()
    return InvitationView.of(row), token


async def list_invitations(session: AsyncSession, account_id: int, now: datetime) -> list[InvitationView]:
    rows = await session.scalars(
        select(Invitation).where(Invitation.account_id == account_id, *_pending(now)).order_by(Invitation.id)
    )
    return [InvitationView.of(row) for row in rows]


async def revoke_invitation(
    session: AsyncSession, account_id: int, invitation_id: int, *, actor_role: Role, actor: str, now: datetime
) -> None:
    row = await session.scalar(
        select(Invitation).where(Invitation.id == invitation_id, Invitation.account_id == account_id, *_pending(now))
    )
    if row is None:
        raise InvitationInvalid(f"no pending invitation {invitation_id} in this account")
    _check_assign(actor_role, Role(row.role))
    row.revoked_at = now
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="invitation.revoke",
        target_type="invitation",
        target_id=invitation_id,
        before={"email": row.email, "role": row.role},
    )
    await session.commit()


async def accept_invitation(
    session: AsyncSession,
    token: str,
    now: datetime,
    *,
    signed_in_user_id: int | None,
    password: str | None,
) -> Accepted:
    """Redeem ``token`` once. ``signed_in_user_id`` is who the caller proved to be (a session, or
    their own password checked by the caller), ``password`` a new user's chosen password."""
    row = await session.scalar(
        select(Invitation).where(Invitation.token_hash == hash_key(token), *_pending(now)).with_for_update()
    )
    if row is None:
        raise InvitationInvalid("this invitation is unknown, used, revoked or expired: ask for a new one")
    user = await session.scalar(select(User).where(User.email == row.email))
    if user is not None:
        if signed_in_user_id != user.id:
            raise InvitationNeedsSignIn(
                f"{row.email} already has a Tollway sign-in: accept while signed in as that user"
                " (or send their current password)"
            )
    else:
        if signed_in_user_id is not None:
            raise InvitationNeedsSignIn(f"this invitation is for {row.email}, not for the user signed in")
        if not password:
            raise IdentityInvalid("choose a password to create your sign-in", param="password")
        user = await create_user(session, row.email, password)
    if await session.scalar(
        select(Membership.id).where(Membership.account_id == row.account_id, Membership.user_id == user.id)
    ):
        raise IdentityConflict(f"{user.email} is already a member of this account")
    membership = Membership(account_id=row.account_id, user_id=user.id, role=row.role)
    session.add(membership)
    row.accepted_at = now
    await session.flush()
    record_event(
        session,
        account_id=row.account_id,
        actor=f"user:{user.id}",
        action="member.add",
        target_type="member",
        target_id=membership.id,
        after={"email": user.email, "role": row.role, "invitation_id": row.id, "invited_by": row.invited_by},
    )
    await session.commit()
    return Accepted(row.account_id, membership.id, user.id, user.email, Role(row.role))


async def invited_email(session: AsyncSession, token: str, now: datetime) -> str | None:
    """The email a pending invitation is for (to know whose password an existing user sends)."""
    email: str | None = await session.scalar(
        select(Invitation.email).where(Invitation.token_hash == hash_key(token), *_pending(now))
    )
    return email


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

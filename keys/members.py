"""Users and memberships: who belongs to an account, with which role.

Rules from docs/roles.md: an account always keeps at least one owner (the last one can
be neither removed nor demoted), only owners grant, change or remove the owner role, and every
change lands in the audit trail in the same transaction. Removing a member ends their
dashboard sessions for that account at once, because a session is only honoured while its
membership exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keys.audit import record_event
from keys.errors import IdentityConflict, IdentityInvalid, MemberNotFound, RoleForbidden
from keys.models import Membership, Role, User
from keys.passwords import check_password_policy, hash_password_async
from keys.roles import may_assign

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def normalise_email(email: str) -> str:
    cleaned = email.strip().lower()
    if len(cleaned) > 320 or not _EMAIL.match(cleaned):
        raise IdentityInvalid(f"{email!r} is not an email address", param="email")
    return cleaned


@dataclass(frozen=True, slots=True)
class MemberView:
    membership_id: int
    user_id: int
    email: str
    role: Role

    def as_json(self) -> dict[str, object]:
        return {"id": self.membership_id, "user_id": self.user_id, "email": self.email, "role": self.role.value}


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    found: User | None = await session.scalar(select(User).where(User.email == normalise_email(email)))
    return found


async def create_user(session: AsyncSession, email: str, password: str) -> User:
    check_password_policy(password)
    user = User(email=normalise_email(email), password_hash=await hash_password_async(password))
    session.add(user)
    await session.flush()
    return user


async def list_members(session: AsyncSession, account_id: int) -> list[MemberView]:
    rows = await session.execute(
        select(Membership, User.email)
        .join(User, User.id == Membership.user_id)
        .where(Membership.account_id == account_id)
        .order_by(Membership.id)
    )
    return [MemberView(m.id, m.user_id, email, Role(m.role)) for m, email in rows]


async def _owner_count(session: AsyncSession, account_id: int) -> int:
    # Lock the account's owner rows (Postgres) so two concurrent demotions cannot both pass.
    owners = await session.scalars(
        select(Membership.id)
        .where(Membership.account_id == account_id, Membership.role == Role.OWNER.value)
        .with_for_update()
    )
    return len(list(owners))


async def _membership(session: AsyncSession, account_id: int, membership_id: int) -> Membership:
    membership = await session.scalar(
        select(Membership).where(Membership.id == membership_id, Membership.account_id == account_id)
    )
    if membership is None:
        raise MemberNotFound(f"no member {membership_id} in this account")
    return membership


def _check_assign(actor_role: Role, current: Role | None, new: Role | None) -> None:
    if not may_assign(actor_role, current, new):
        raise RoleForbidden("only owners can grant, change or remove the owner role")


async def add_member(
    session: AsyncSession,
    account_id: int,
    *,
    email: str,
    role: Role,
    password: str | None,
    actor_role: Role,
    actor: str,
) -> MemberView:
    """Add a user to the account, creating the user (with ``password``) if the email is new."""
    _check_assign(actor_role, None, role)
    user = await user_by_email(session, email)
    if user is None:
        if not password:
            raise IdentityInvalid("a new user needs an initial password", param="password")
        user = await create_user(session, email, password)
    elif password:
        raise IdentityInvalid(
            "this user already exists: leave out password (only the user can change it)", param="password"
        )
    existing = await session.scalar(
        select(func.count()).where(Membership.account_id == account_id, Membership.user_id == user.id)
    )
    if existing:
        raise IdentityConflict(f"{user.email} is already a member of this account")
    membership = Membership(account_id=account_id, user_id=user.id, role=role.value)
    session.add(membership)
    await session.flush()
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="member.add",
        target_type="member",
        target_id=membership.id,
        after={"email": user.email, "role": role.value},
    )
    await session.commit()
    return MemberView(membership.id, user.id, user.email, role)


async def change_role(
    session: AsyncSession, account_id: int, membership_id: int, role: Role, *, actor_role: Role, actor: str
) -> MemberView:
    membership = await _membership(session, account_id, membership_id)
    current = Role(membership.role)
    _check_assign(actor_role, current, role)
    if current is Role.OWNER and role is not Role.OWNER and await _owner_count(session, account_id) <= 1:
        raise IdentityConflict("the last owner cannot be demoted: make someone else owner first")
    membership.role = role.value
    email = await session.scalar(select(User.email).where(User.id == membership.user_id))
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="member.update",
        target_type="member",
        target_id=membership.id,
        before={"email": email, "role": current.value},
        after={"email": email, "role": role.value},
    )
    await session.commit()
    return MemberView(membership.id, membership.user_id, str(email), role)


async def remove_member(
    session: AsyncSession, account_id: int, membership_id: int, *, actor_role: Role, actor: str
) -> None:
    membership = await _membership(session, account_id, membership_id)
    current = Role(membership.role)
    _check_assign(actor_role, current, None)
    if current is Role.OWNER and await _owner_count(session, account_id) <= 1:
        raise IdentityConflict("the last owner cannot be removed")
    email = await session.scalar(select(User.email).where(User.id == membership.user_id))
    await session.delete(membership)
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="member.remove",
        target_type="member",
        target_id=membership_id,
        before={"email": email, "role": current.value},
    )
    await session.commit()

"""Dashboard sessions: short-lived signed JWTs backed by a revocable row, with refresh rotation.

Three cookies (set by the HTTP layer, see ``gateway/api/auth.py``):

- the access token: an HS256 JWT (``sid``, ``sub``, ``acc``) living ``session_ttl_s``.
  Every use also checks its session row, membership and account, so logout, a removed
  member, a suspended account or a password change take effect on the next request;
- the refresh token ``<sid>.<secret>``: only its SHA-256 is stored. Each refresh replaces it
  (rotation); presenting the one it replaced means it was copied, and the whole session is
  revoked -- except within ``REFRESH_GRACE_S`` of the rotation: two tabs of one browser share
  the cookie and refresh at the same moment, and the loser must not log the user out. The
  next secret is an HMAC of the previous one's hash, so a late tab is answered with exactly
  the pair the first tab got (no third token appears, whichever response the cookie jar keeps
  is the current one), and two racing refreshes on SQLite compute the same token;
- the CSRF token: an HMAC of the session id, readable by the page's script and required in
  ``X-CSRF-Token`` for every cookie-authenticated write (double submit, bound to the session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.counters import Check, CounterStore
from billing.models import Account, AccountStatus
from keys.errors import (
    AccountSuspended,
    CsrfFailed,
    IdentityInvalid,
    InvalidCredentials,
    SessionExpired,
    TooManyAttempts,
)
from keys.models import DashboardSession, InstanceSecret, Membership, Role, User
from keys.passwords import (
    check_password_policy,
    hash_password_async,
    needs_rehash,
    verify_password_async,
)
from keys.secrets import constant_time_equal, hash_key

_ALGORITHM = "HS256"
_ISSUER = "tollway"
_SECRET_NAME = "session_signing_key"
LOGIN_ATTEMPTS = 10
LOGIN_WINDOW_S = 900
REFRESH_GRACE_S = 20  # how long the refresh token just rotated away still answers (see above)


async def load_signing_secret(sessionmaker: async_sessionmaker[AsyncSession], configured: str) -> bytes:
    """The configured secret, else one generated once and shared through the database."""
    if configured:
        return configured.encode("utf-8")
    async with sessionmaker() as session:
        stored = await session.get(InstanceSecret, _SECRET_NAME)
        if stored is None:
            session.add(InstanceSecret(name=_SECRET_NAME, value=secrets.token_urlsafe(48)))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()  # another process won the race: use its secret
        stored = await session.get(InstanceSecret, _SECRET_NAME, populate_existing=True)
        assert stored is not None
        return stored.value.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in dashboard user acting on one account."""

    session_id: str
    user_id: int
    account_id: int
    email: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedSession:
    access_token: str
    refresh_token: str
    csrf_token: str
    access_max_age_s: int
    refresh_max_age_s: int
    principal: Principal


class SessionService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        counters: CounterStore,
        secret: bytes,
        *,
        prefix: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
        now: Callable[[], datetime],
    ) -> None:
        self._sessionmaker = sessionmaker
        self._counters = counters
        self._secret = secret
        self._prefix = prefix
        self._access_ttl_s = access_ttl_s
        self._refresh_ttl_s = refresh_ttl_s
        self._now = now

    # -- tokens ---------------------------------------------------------------------------

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self._secret, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session_id: str, presented: str | None) -> None:
        if not presented or not constant_time_equal(presented, self.csrf_token(session_id)):
            raise CsrfFailed("missing or wrong X-CSRF-Token header (send the value of the tw_csrf cookie)")

    def _access_token(self, principal: Principal) -> str:
        now = self._now()
        claims = {
            "iss": _ISSUER,
            "sub": str(principal.user_id),
            "sid": principal.session_id,
            "acc": principal.account_id,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + self._access_ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def _issue(self, principal: Principal, refresh_token: str, refresh_expires_at: datetime) -> IssuedSession:
        return IssuedSession(
            access_token=self._access_token(principal),
            refresh_token=refresh_token,
            csrf_token=self.csrf_token(principal.session_id),
            access_max_age_s=self._access_ttl_s,
            refresh_max_age_s=max(0, int((refresh_expires_at - self._now()).total_seconds())),
            principal=principal,
        )

    @staticmethod
    def _new_refresh(session_id: str) -> tuple[str, str]:
        secret = secrets.token_urlsafe(32)
        return f"{session_id}.{secret}", hash_key(secret)

    def _next_refresh(self, session_id: str, previous_hash: str) -> tuple[str, str]:
        """The token that replaces the one hashed ``previous_hash``: derived, so it can be re-derived."""
        mac = hmac.new(self._secret, f"refresh:{session_id}:{previous_hash}".encode(), hashlib.sha256).digest()
        secret = base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
        return f"{session_id}.{secret}", hash_key(secret)

    # -- login, refresh, logout -----------------------------------------------------------

    async def _throttle(self, email: str) -> str:
        key = f"{self._prefix}login:{hash_key(email)}"
        result = await self._counters.apply(
            [Check(key=key, field="attempts", delta=1, limit=LOGIN_ATTEMPTS, ttl_ms=LOGIN_WINDOW_S * 1000)]
        )
        if not result.ok:
            raise TooManyAttempts("too many sign-in attempts for this email: try again in 15 minutes")
        return key

    async def login(self, email: str, password: str, account_id: int | None = None) -> IssuedSession:
        throttle_key = await self._throttle(email.strip().lower())
        async with self._sessionmaker() as session:
            user = await _user_with_password(session, email, password)
            memberships = select(Membership).where(Membership.user_id == user.id).order_by(Membership.id)
            if account_id is not None:
                memberships = memberships.where(Membership.account_id == account_id)
            membership = await session.scalar(memberships.limit(1))
            if membership is None:
                raise InvalidCredentials("this user is not a member of that account")
            await self._require_active_account(session, membership.account_id)
            if needs_rehash(user.password_hash):
                user.password_hash = await hash_password_async(password)
            session_id = secrets.token_hex(16)
            refresh_token, refresh_hash = self._new_refresh(session_id)
            now = self._now()
            row = DashboardSession(
                id=session_id,
                user_id=user.id,
                account_id=membership.account_id,
                refresh_hash=refresh_hash,
                created_at=now,
                rotated_at=now,
                expires_at=now + timedelta(seconds=self._refresh_ttl_s),
            )
            session.add(row)
            await session.commit()
            principal = Principal(session_id, user.id, membership.account_id, user.email, Role(membership.role))
        await self._counters.delete(throttle_key)
        return self._issue(principal, refresh_token, row.expires_at)

    async def verify_user(self, email: str, password: str) -> int:
        """The id of the user whose own password this is, throttled like sign-in (used to accept
        an invitation as an existing user who has no session to show)."""
        throttle_key = await self._throttle(email.strip().lower())
        async with self._sessionmaker() as session:
            user_id = (await _user_with_password(session, email, password, param="password")).id
        await self._counters.delete(throttle_key)
        return user_id

    async def refresh(self, refresh_token: str | None) -> IssuedSession:
        session_id, _, secret = (refresh_token or "").partition(".")
        if not session_id or not secret:
            raise SessionExpired("no session: sign in again")
        presented = hash_key(secret)
        async with self._sessionmaker() as session:
            row = await session.get(DashboardSession, session_id, with_for_update=True)
            if row is None or row.revoked_at is not None or _aware(row.expires_at) <= self._now():
                raise SessionExpired("session ended: sign in again")
            expires_at = _aware(row.expires_at)
            if not constant_time_equal(presented, row.refresh_hash):
                if not row.previous_refresh_hash or not constant_time_equal(presented, row.previous_refresh_hash):
                    raise SessionExpired("session ended: sign in again")
                if self._now() - _aware(row.rotated_at) > timedelta(seconds=REFRESH_GRACE_S):
                    # A refresh token that was rotated away long ago came back: someone copied it.
                    row.revoked_at = self._now()
                    await session.commit()
                    raise SessionExpired("session ended: sign in again")
                # Another tab's refresh won the race a moment ago: answer with the pair it got.
                principal = await self._principal(session, row)
                current_token, current_hash = self._next_refresh(session_id, row.previous_refresh_hash)
                if not constant_time_equal(current_hash, row.refresh_hash):  # rotated by an older version
                    raise SessionExpired("session ended: sign in again")
                return self._issue(principal, current_token, expires_at)
            principal = await self._principal(session, row)
            new_token, new_hash = self._next_refresh(session_id, row.refresh_hash)
            row.previous_refresh_hash = row.refresh_hash
            row.refresh_hash = new_hash
            row.rotated_at = self._now()
            await session.commit()
        return self._issue(principal, new_token, expires_at)

    async def logout(self, session_id: str) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                update(DashboardSession)
                .where(DashboardSession.id == session_id, DashboardSession.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
            await session.commit()

    async def revoke_user_sessions(self, session: AsyncSession, user_id: int, *, keep: str | None = None) -> None:
        statement = update(DashboardSession).where(
            DashboardSession.user_id == user_id, DashboardSession.revoked_at.is_(None)
        )
        if keep is not None:
            statement = statement.where(DashboardSession.id != keep)
        await session.execute(statement.values(revoked_at=self._now()))

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        check_password_policy(new)
        async with self._sessionmaker() as session:
            user = await session.get(User, principal.user_id)
            if user is None or not await verify_password_async(current, user.password_hash):
                raise InvalidCredentials("current password is wrong", param="current_password")
            if current == new:
                raise IdentityInvalid("the new password must differ from the current one", param="new_password")
            user.password_hash = await hash_password_async(new)
            await self.revoke_user_sessions(session, user.id, keep=principal.session_id)
            await session.commit()

    # -- per request ----------------------------------------------------------------------

    async def authenticate(self, access_token: str) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                access_token,
                self._secret,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "sid", "sub"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError as error:
            raise SessionExpired("session token expired: refresh it (POST /api/auth/refresh/)") from error
        except jwt.InvalidTokenError as error:
            raise SessionExpired("invalid session: sign in again") from error
        async with self._sessionmaker() as session:
            row = await session.get(DashboardSession, str(claims["sid"]))
            if (
                row is None
                or row.revoked_at is not None
                or _aware(row.expires_at) <= self._now()
                or str(row.user_id) != claims["sub"]
            ):
                raise SessionExpired("session ended: sign in again")
            return await self._principal(session, row)

    async def _principal(self, session: AsyncSession, row: DashboardSession) -> Principal:
        found = (
            await session.execute(
                select(User.email, User.is_active, Membership.role)
                .join(Membership, Membership.user_id == User.id)
                .where(User.id == row.user_id, Membership.account_id == row.account_id)
            )
        ).first()
        if found is None or not found.is_active:
            raise SessionExpired("you are no longer a member of this account")
        await self._require_active_account(session, row.account_id)
        return Principal(row.id, row.user_id, row.account_id, found.email, Role(found.role))

    @staticmethod
    async def _require_active_account(session: AsyncSession, account_id: int) -> None:
        status = await session.scalar(select(Account.status).where(Account.id == account_id))
        if status != AccountStatus.ACTIVE.value:
            raise AccountSuspended(f"this account is {status or 'gone'}")


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _user_with_password(session: AsyncSession, email: str, password: str, *, param: str | None = None) -> User:
    """The active user whose own password this is. An unknown email costs a password check too
    (against a dummy hash), so the answer takes as long either way."""
    user = await session.scalar(select(User).where(User.email == email.strip().lower()))
    ok = await verify_password_async(password, user.password_hash if user is not None else None)
    if user is None or not ok or not user.is_active:
        raise InvalidCredentials("wrong email or password", param=param)
    return user

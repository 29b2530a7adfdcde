"""The security chain: ordered checks, one function per step, the first failure answers.

Steps and codes follow PRODUCT.md's table. This module holds the steps that need no request
context beyond the key (bearer, account status, key validity); the restriction steps are
added in the same shape.
"""

from __future__ import annotations

from datetime import UTC, datetime

from billing.models import AccountStatus
from keys.errors import AccountSuspended, InvalidApiKey, MissingApiKey
from keys.secrets import looks_like_prx_key
from keys.service import KeyIdentity, KeyResolver


def bearer_token(authorization: str | None) -> str:
    """Step 1: a well-formed ``Authorization: Bearer <token>`` header."""
    if not authorization:
        raise MissingApiKey("missing API key: send Authorization: Bearer <key>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingApiKey("malformed Authorization header: expected Bearer <key>")
    return token


def check_account_active(identity: KeyIdentity) -> None:
    """Step 2: the key's account is neither suspended nor banned."""
    if identity.account_status != AccountStatus.ACTIVE.value:
        raise AccountSuspended(f"this account is {identity.account_status}")


def check_key_valid(identity: KeyIdentity, now: datetime) -> None:
    """Step 3: the key is active and not expired."""
    if not identity.is_active:
        raise InvalidApiKey("this API key is disabled")
    expires_at = identity.expires_at
    if expires_at is not None:
        if expires_at.tzinfo is None:  # SQLite returns naive datetimes; we store UTC
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= now:
            raise InvalidApiKey("this API key has expired")


async def authenticate(authorization: str | None, resolver: KeyResolver, now: datetime) -> KeyIdentity:
    """Steps 1–3 in order. Unknown keys fail at step 3 without revealing why."""
    token = bearer_token(authorization)
    identity = await resolver.resolve(token) if looks_like_prx_key(token) else None
    if identity is None:
        raise InvalidApiKey("invalid API key")
    check_account_active(identity)
    check_key_valid(identity, now)
    return identity

"""Managing an account's ``prx-`` keys: create, read, change, delete.

Every restriction is validated here, before it reaches the database, and each error names
the field. Changes are partial: a field left out stays as it is, ``null`` clears it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.bounds import Credits, Description, Items, Name, PositiveInt32, Url
from billing.money import MoneyError, credits_to_micro
from keys.audit import record_event
from keys.errors import KeyError_
from keys.models import ApiKey
from keys.restrictions import (
    RestrictionError,
    parse_active_hours,
    parse_categories,
    parse_countries,
    parse_networks,
    parse_origins,
    parse_period,
)
from keys.secrets import PRX_PREFIX, display_prefix, hash_key, looks_like_prx_key, new_prx_key

# Every field is bounded by the column it lands in (billing.bounds): a NUL byte, a string past
# its VARCHAR or a limit past its INTEGER is a 400 here, never a failed write later.
Limit = PositiveInt32
Hours = Annotated[str, msgspec.Meta(max_length=11)]  # "HH:MM-HH:MM", checked by parse_active_hours
Period = Annotated[str, msgspec.Meta(max_length=16)]
# The response cache's lifetime for a key's answers, in seconds (0 = off); at most 30 days, and
# the operator's response_cache.max_ttl_s caps it again when an entry is written.
MAX_CACHE_TTL_S = 30 * 86400
CacheTtl = Annotated[int, msgspec.Meta(ge=0, le=MAX_CACHE_TTL_S)]


class KeyNotFound(KeyError_):
    status_code = 404
    type = "invalid_request_error"
    code = "key_not_found"


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""
    is_active: bool = True
    expires_at: datetime | None = None
    allowed_models: Items = []
    allowed_categories: Items = []
    allowed_ips: Items = []
    allowed_origins: Items = []
    blocked_countries: Items = []
    active_hours: Hours = ""
    spending_limit: Credits | None = None
    spending_period: Period = "monthly"
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    webhook_url: Url = ""
    cache_ttl_s: CacheTtl = 0


class KeyUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Every field optional; ``msgspec.UNSET`` = not sent (unchanged), ``None`` = clear."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET
    expires_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    allowed_models: Items | msgspec.UnsetType | None = msgspec.UNSET
    allowed_categories: Items | msgspec.UnsetType | None = msgspec.UNSET
    allowed_ips: Items | msgspec.UnsetType | None = msgspec.UNSET
    allowed_origins: Items | msgspec.UnsetType | None = msgspec.UNSET
    blocked_countries: Items | msgspec.UnsetType | None = msgspec.UNSET
    active_hours: Hours | msgspec.UnsetType | None = msgspec.UNSET
    spending_limit: Credits | msgspec.UnsetType | None = msgspec.UNSET
    spending_period: Period | msgspec.UnsetType = msgspec.UNSET
    rpm_limit: Limit | msgspec.UnsetType | None = msgspec.UNSET
    tpm_limit: Limit | msgspec.UnsetType | None = msgspec.UNSET
    webhook_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    cache_ttl_s: CacheTtl | msgspec.UnsetType | None = msgspec.UNSET


# What "cleared" means for each column: no restriction.
_CLEARED: dict[str, Any] = {
    "description": "",
    "expires_at": None,
    "allowed_models": [],
    "allowed_categories": [],
    "allowed_ips": [],
    "allowed_origins": [],
    "blocked_countries": [],
    "active_hours": "",
    "spending_limit_micro": None,
    "rpm_limit": None,
    "tpm_limit": None,
    "webhook_url": "",
    "cache_ttl_s": 0,
}


def _spending_limit_micro(value: Credits) -> int:
    try:
        micro = credits_to_micro(Decimal(str(value)))
    except (MoneyError, InvalidOperation) as error:
        raise RestrictionError("spending_limit", f"not a number of credits: {value!r}") from error
    if micro < 0:
        raise RestrictionError("spending_limit", "cannot be negative")
    return micro


def _webhook_url(value: str) -> str:
    if value and not value.startswith(("https://", "http://")):
        raise RestrictionError("webhook_url", "must be an http(s) URL")
    return value


def _normalise(field: str, value: Any, now: datetime) -> tuple[str, Any]:
    """Validate one restriction and return the (column, value) to store."""
    if field == "expires_at" and value is not None:
        expires = value if value.tzinfo else value.replace(tzinfo=UTC)
        try:  # 9999-12-31T23:59-05:00 is in year 10000 in UTC: no datetime (nor driver) holds it
            expires = expires.astimezone(UTC)
        except OverflowError as error:
            raise RestrictionError("expires_at", "is out of range") from error
        if expires.year >= 9999:
            raise RestrictionError("expires_at", "is out of range (before year 9999, please)")
        if expires <= now:
            raise RestrictionError("expires_at", "is in the past")
        return field, expires
    if field == "allowed_ips":
        return field, [str(n) for n in parse_networks(value)]
    if field == "allowed_origins":
        parse_origins(value)
        return field, [origin.lower() for origin in value]
    if field == "blocked_countries":
        return field, sorted(parse_countries(value))
    if field == "allowed_categories":
        return field, sorted(parse_categories(value))
    if field == "allowed_models":
        if any(not isinstance(m, str) or "/" not in m for m in value):
            raise RestrictionError("allowed_models", "model slugs are provider/model")
        return field, list(dict.fromkeys(value))
    if field == "active_hours":
        parse_active_hours(value)
        return field, value
    if field == "spending_period":
        return field, parse_period(value)
    if field == "spending_limit":
        return "spending_limit_micro", _spending_limit_micro(value)
    if field == "webhook_url":
        return field, _webhook_url(value)
    return field, value


def changes_from(update: KeyCreate | KeyUpdate, now: datetime) -> dict[str, Any]:
    """The columns to write for a create or a partial update, validated."""
    changes: dict[str, Any] = {}
    for field in update.__struct_fields__:
        value = getattr(update, field)
        if value is msgspec.UNSET:
            continue
        if value is None and field not in ("expires_at", "spending_limit", "rpm_limit", "tpm_limit"):
            if field not in _CLEARED:
                raise RestrictionError(field, "cannot be null")
            changes[field] = _CLEARED[field]
            continue
        if value is None:
            column = "spending_limit_micro" if field == "spending_limit" else field
            changes[column] = None
            continue
        column, stored = _normalise(field, value, now)
        changes[column] = stored
    return changes


async def list_keys(session: AsyncSession, account_id: int) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.id)))


async def list_all_keys(session: AsyncSession, account_id: int | None = None) -> list[ApiKey]:
    """Every account's keys (the operator's view), or one account's."""
    query = select(ApiKey).order_by(ApiKey.id)
    if account_id is not None:
        query = query.where(ApiKey.account_id == account_id)
    return list(await session.scalars(query))


async def find_keys(session: AsyncSession, reference: str) -> list[ApiKey]:
    """The keys ``reference`` may mean, in any account: a key id, a display prefix (``prx-ab12``,
    or its start), or a whole key (matched by its hash, as a leaked key is best named)."""
    text = reference.strip()
    if text.isdigit() and len(text) <= 18:
        query = select(ApiKey).where(ApiKey.id == int(text))
    elif looks_like_prx_key(text):
        query = select(ApiKey).where(ApiKey.key_hash == hash_key(text))
    else:
        prefix = text if text.startswith(PRX_PREFIX) else PRX_PREFIX + text
        # Nothing after prx- would match every key; more than a display prefix holds, none.
        if len(prefix) <= len(PRX_PREFIX) or len(prefix) > len(display_prefix(prefix)):
            return []
        query = select(ApiKey).where(ApiKey.prefix.startswith(prefix, autoescape=True))
    return list(await session.scalars(query.order_by(ApiKey.id)))


async def get_key(session: AsyncSession, account_id: int, key_id: int) -> ApiKey:
    """A key of this account; another account's key is reported as not found, never forbidden."""
    key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id))
    if key is None:
        raise KeyNotFound(f"no key with id {key_id}")
    return key


async def create_key_with(
    session: AsyncSession, account_id: int, create: KeyCreate, now: datetime, *, actor: str
) -> tuple[ApiKey, str]:
    """Create a key with its restrictions; returns the row and the plaintext (shown once). Commits."""
    changes = changes_from(create, now)
    plaintext = new_prx_key()
    key = ApiKey(account_id=account_id, prefix=display_prefix(plaintext), key_hash=hash_key(plaintext), **changes)
    session.add(key)
    await session.flush()
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="key.create",
        target_type="key",
        target_id=key.id,
        after={"prefix": key.prefix, **changes},
    )
    await session.commit()
    await session.refresh(key)
    return key, plaintext


async def update_key(
    session: AsyncSession, account_id: int, key_id: int, update: KeyUpdate, now: datetime, *, actor: str
) -> tuple[ApiKey, dict[str, Any]]:
    """Apply a partial update; returns the key and the columns' values before it. Commits."""
    key = await get_key(session, account_id, key_id)
    changes = changes_from(update, now)
    before = {column: getattr(key, column) for column in changes}
    for column, value in changes.items():
        setattr(key, column, value)
    key.updated_at = now
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="key.update",
        target_type="key",
        target_id=key_id,
        before=before,
        after=changes,
    )
    await session.commit()
    await session.refresh(key)
    return key, before


async def delete_key(session: AsyncSession, account_id: int, key_id: int, *, actor: str) -> None:
    key = await get_key(session, account_id, key_id)
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="key.delete",
        target_type="key",
        target_id=key_id,
        before={"name": key.name, "prefix": key.prefix},
    )
    await session.delete(key)
    await session.commit()

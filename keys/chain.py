"""The security chain: ordered checks, one function per step, the first failure answers.

Steps and codes follow the table in docs/product-rules.md:

    1 bearer present and well formed   401 missing_api_key
    2 account active                   403 account_suspended
    3 key / token valid                401 invalid_api_key / token_expired
    4 active hours                     403 outside_active_hours
    5 client IP                        403 ip_not_allowed
    6 country                          403 country_blocked
    7 origin                           403 origin_not_allowed
    8 models                           403 model_not_allowed
    9 category                         403 category_not_allowed
    10-12 rate, spend, balance         in billing's single atomic reservation

Steps 1–7 need only the request's headers and peer (:func:`authorize_request`); 8–9 need the
parsed body (:func:`authorize_models`); 10–12 are one Lua call in :mod:`billing.reservations`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from billing.models import AccountStatus
from keys.browser_tokens import BrowserTokens, looks_like_bt_token
from keys.errors import (
    AccountSuspended,
    CategoryNotAllowed,
    CountryBlocked,
    InvalidApiKey,
    IpNotAllowed,
    MissingApiKey,
    ModelNotAllowed,
    OriginNotAllowed,
    OutsideActiveHours,
    TokenExpired,
)
from keys.restrictions import IPAddress, ip_allowed, origin_allowed
from keys.secrets import looks_like_prx_key
from keys.service import KeyIdentity, KeyResolver


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the gateway knows about the caller, gathered once per request."""

    client_ip: IPAddress | None = None
    origin: tuple[str, int] | None = None  # host and port of Origin, else of Referer
    country: str | None = None  # ISO code; None when it could not be determined
    fail_closed_on_unknown_country: bool = True


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


def check_active_hours(identity: KeyIdentity, now: datetime) -> None:
    """Step 4: inside the key's UTC window."""
    window = identity.active_hours
    if window is not None and not window.contains(now.astimezone(UTC)):
        raise OutsideActiveHours("this key may only be used during its active hours (UTC)")


def check_client_ip(identity: KeyIdentity, facts: RequestFacts) -> None:
    """Step 5: the caller's address is in ``allowed_ips``."""
    if not identity.allowed_ips:
        return
    if facts.client_ip is None or not ip_allowed(identity.allowed_ips, facts.client_ip):
        raise IpNotAllowed("requests from this IP address are not allowed for this key")


def check_country(identity: KeyIdentity, facts: RequestFacts) -> None:
    """Step 6: the caller's country is not blocked; unknown countries are refused by default."""
    if not identity.blocked_countries:
        return
    if facts.country is None:
        if facts.fail_closed_on_unknown_country:
            raise CountryBlocked("this key blocks some countries and the caller's country could not be determined")
        return
    if facts.country in identity.blocked_countries:
        raise CountryBlocked("requests from this country are not allowed for this key")


def check_origin(identity: KeyIdentity, facts: RequestFacts) -> None:
    """Step 7: ``Origin`` (else the ``Referer`` host) matches ``allowed_origins``."""
    if not identity.allowed_origins:
        return
    if facts.origin is None:
        raise OriginNotAllowed("this key only accepts requests that carry an allowed Origin or Referer")
    if not origin_allowed(identity.allowed_origins, *facts.origin):
        raise OriginNotAllowed("this origin is not allowed for this key")


def authorize_models(identity: KeyIdentity, models: Iterable[str], category: str) -> None:
    """Steps 8 and 9: every model asked for (fallbacks included) and its category are allowed."""
    if identity.allowed_models:
        for model in models:
            if model not in identity.allowed_models:
                raise ModelNotAllowed(f"model {model!r} is not allowed for this key")
    if identity.allowed_categories and category not in identity.allowed_categories:
        raise CategoryNotAllowed(f"category {category!r} is not allowed for this key")


async def identify(
    authorization: str | None, resolver: KeyResolver, tokens: BrowserTokens | None, now: datetime
) -> KeyIdentity:
    """Steps 1–3. Unknown keys fail at step 3 without revealing why."""
    token = bearer_token(authorization)
    if looks_like_prx_key(token):
        identity = await resolver.resolve(token)
        if identity is None:
            raise InvalidApiKey("invalid API key")
        check_account_active(identity)
        check_key_valid(identity, now)
        return identity
    if tokens is not None and looks_like_bt_token(token):
        grant = await tokens.resolve(token)
        parent = await resolver.resolve_id(grant.key_id) if grant is not None else None
        if grant is None or parent is None:
            raise InvalidApiKey("invalid or revoked browser token")
        check_account_active(parent)
        check_key_valid(parent, now)
        if grant.expired:
            raise TokenExpired("this browser token has expired: fetch a new one from your backend")
        return dataclasses.replace(parent, via_token=True)
    raise InvalidApiKey("invalid API key")


def authorize_request(identity: KeyIdentity, facts: RequestFacts, now: datetime) -> None:
    """Steps 4–7, in order."""
    check_active_hours(identity, now)
    check_client_ip(identity, facts)
    check_country(identity, facts)
    check_origin(identity, facts)


async def authenticate(
    authorization: str | None,
    resolver: KeyResolver,
    now: datetime,
    facts: RequestFacts | None = None,
    tokens: BrowserTokens | None = None,
) -> KeyIdentity:
    """Steps 1–7 for a request."""
    identity = await identify(authorization, resolver, tokens, now)
    authorize_request(identity, facts or RequestFacts(), now)
    return identity

"""The first steps of the security chain, each alone, and their order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keys.chain import authenticate, bearer_token, check_account_active, check_key_valid
from keys.errors import AccountSuspended, InvalidApiKey, MissingApiKey
from keys.secrets import display_prefix, hash_key, looks_like_prx_key, new_prx_key
from keys.service import KeyIdentity

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def identity(**changes: object) -> KeyIdentity:
    values: dict[str, object] = {
        "key_id": 1,
        "account_id": 1,
        "account_status": "active",
        "is_active": True,
        "expires_at": None,
        "name": "k",
    }
    values.update(changes)
    return KeyIdentity(**values)  # type: ignore[arg-type]


class StubResolver:
    """Stands in for the database-backed resolver: a dict of plaintext key → identity."""

    def __init__(self, known: dict[str, KeyIdentity]) -> None:
        self.known = known
        self.asked: list[str] = []

    async def resolve(self, token: str) -> KeyIdentity | None:
        self.asked.append(token)
        return self.known.get(token)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "token-without-scheme"])
def test_chain_bearer_missing_or_malformed(header: str | None) -> None:
    with pytest.raises(MissingApiKey) as caught:
        bearer_token(header)
    assert (caught.value.status_code, caught.value.code) == (401, "missing_api_key")


def test_chain_bearer_scheme_case_insensitive() -> None:
    assert bearer_token("bearer prx-abc") == "prx-abc"


@pytest.mark.parametrize("status", ["suspended", "banned"])
def test_chain_account_not_active_is_403(status: str) -> None:
    with pytest.raises(AccountSuspended) as caught:
        check_account_active(identity(account_status=status))
    assert (caught.value.status_code, caught.value.code) == (403, "account_suspended")


def test_chain_disabled_key_is_401() -> None:
    with pytest.raises(InvalidApiKey):
        check_key_valid(identity(is_active=False), NOW)


def test_chain_expired_key_is_401_naive_or_aware() -> None:
    with pytest.raises(InvalidApiKey):
        check_key_valid(identity(expires_at=NOW - timedelta(seconds=1)), NOW)
    with pytest.raises(InvalidApiKey):
        check_key_valid(identity(expires_at=(NOW - timedelta(seconds=1)).replace(tzinfo=None)), NOW)
    check_key_valid(identity(expires_at=NOW + timedelta(seconds=1)), NOW)


async def test_chain_account_status_answers_before_key_validity() -> None:
    key = new_prx_key()
    resolver = StubResolver({key: identity(account_status="banned", is_active=False)})
    with pytest.raises(AccountSuspended):
        await authenticate(f"Bearer {key}", resolver, NOW)  # type: ignore[arg-type]


async def test_chain_malformed_token_never_reaches_the_store() -> None:
    resolver = StubResolver({})
    with pytest.raises(InvalidApiKey):
        await authenticate("Bearer prx-short", resolver, NOW)  # type: ignore[arg-type]
    assert resolver.asked == []


async def test_chain_valid_key_resolves() -> None:
    key = new_prx_key()
    resolver = StubResolver({key: identity()})
    assert (await authenticate(f"Bearer {key}", resolver, NOW)).key_id == 1  # type: ignore[arg-type]


def test_keys_material() -> None:
    key = new_prx_key()
    assert looks_like_prx_key(key) and len(key) == 52
    assert display_prefix(key) == key[:8] and display_prefix(key).startswith("prx-")
    assert hash_key(key) != key and len(hash_key(key)) == 64
    assert new_prx_key() != key
    assert not looks_like_prx_key("prx-" + "g" * 48)

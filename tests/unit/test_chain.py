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


@pytest.mark.parametrize(
    "token",
    [
        "prx-" + "a" * 47,
        "prx-" + "a" * 49,
        "prx-" + "a" * 48 + "\n",  # $ would match before a final newline; fullmatch does not
        "prx-" + "A" * 48,  # keys are lowercase hex
        "prx-" + "\u0661" * 48,  # ARABIC-INDIC DIGIT ONE: a digit to \d, not to [0-9]
        "prx-" + "\uff41" * 48,  # FULLWIDTH LATIN SMALL LETTER A
        "PRX-" + "a" * 48,
        " prx-" + "a" * 47,
        "bt-" + "a" * 48,
        "",
    ],
)
def test_only_a_prx_key_shaped_token_looks_like_one(token: str) -> None:
    assert not looks_like_prx_key(token)


# --- steps 4-9, each alone, then in order ---------------------------------------------------

from ipaddress import ip_address  # noqa: E402

from keys.chain import (  # noqa: E402
    RequestFacts,
    authorize_models,
    authorize_request,
    check_active_hours,
    check_client_ip,
    check_country,
    check_origin,
)
from keys.errors import (  # noqa: E402
    CategoryNotAllowed,
    CountryBlocked,
    IpNotAllowed,
    ModelNotAllowed,
    OriginNotAllowed,
    OutsideActiveHours,
)
from keys.restrictions import parse_active_hours, parse_networks, parse_origins  # noqa: E402

FACTS = RequestFacts(client_ip=ip_address("203.0.113.5"), origin=("app.example.com", 443), country="FR")


def test_chain_step4_active_hours() -> None:
    check_active_hours(identity(active_hours=parse_active_hours("09:00-18:00")), NOW)  # 12:00
    with pytest.raises(OutsideActiveHours) as caught:
        check_active_hours(identity(active_hours=parse_active_hours("13:00-18:00")), NOW)
    assert (caught.value.status_code, caught.value.code) == (403, "outside_active_hours")


def test_chain_step5_client_ip() -> None:
    check_client_ip(identity(allowed_ips=parse_networks(["203.0.113.0/24"])), FACTS)
    with pytest.raises(IpNotAllowed):
        check_client_ip(identity(allowed_ips=parse_networks(["10.0.0.0/8"])), FACTS)
    with pytest.raises(IpNotAllowed):
        check_client_ip(identity(allowed_ips=parse_networks(["10.0.0.0/8"])), RequestFacts())


def test_chain_step6_country_and_fail_closed() -> None:
    check_country(identity(blocked_countries=frozenset({"RU"})), FACTS)
    with pytest.raises(CountryBlocked):
        check_country(identity(blocked_countries=frozenset({"FR"})), FACTS)
    with pytest.raises(CountryBlocked, match="could not be determined"):
        check_country(identity(blocked_countries=frozenset({"RU"})), RequestFacts())
    check_country(identity(blocked_countries=frozenset({"RU"})), RequestFacts(fail_closed_on_unknown_country=False))


def test_chain_step7_origin() -> None:
    check_origin(identity(allowed_origins=parse_origins(["*.example.com"])), FACTS)
    with pytest.raises(OriginNotAllowed):
        check_origin(identity(allowed_origins=parse_origins(["myapp.com"])), FACTS)
    with pytest.raises(OriginNotAllowed, match="carry an allowed Origin"):
        check_origin(identity(allowed_origins=parse_origins(["myapp.com"])), RequestFacts())


def test_chain_step8_every_fallback_model_is_checked() -> None:
    allowed = identity(allowed_models=frozenset({"openai/gpt-4o-mini"}))
    authorize_models(allowed, ["openai/gpt-4o-mini"], "text")
    with pytest.raises(ModelNotAllowed, match="gpt-4o'"):
        authorize_models(allowed, ["openai/gpt-4o-mini", "openai/gpt-4o"], "text")


def test_chain_step9_category() -> None:
    with pytest.raises(CategoryNotAllowed):
        authorize_models(identity(allowed_categories=frozenset({"tts"})), ["openai/gpt-4o-mini"], "text")


def test_chain_earlier_failure_answers() -> None:
    everything_wrong = identity(
        active_hours=parse_active_hours("13:00-18:00"),
        allowed_ips=parse_networks(["10.0.0.0/8"]),
        blocked_countries=frozenset({"FR"}),
        allowed_origins=parse_origins(["myapp.com"]),
    )
    with pytest.raises(OutsideActiveHours):
        authorize_request(everything_wrong, FACTS, NOW)
    with pytest.raises(IpNotAllowed):
        authorize_request(identity(**{**everything_wrong_fields(), "active_hours": None}), FACTS, NOW)
    with pytest.raises(CountryBlocked):
        authorize_request(
            identity(blocked_countries=frozenset({"FR"}), allowed_origins=parse_origins(["x.com"])), FACTS, NOW
        )


def everything_wrong_fields() -> dict[str, object]:
    return {
        "allowed_ips": parse_networks(["10.0.0.0/8"]),
        "blocked_countries": frozenset({"FR"}),
        "allowed_origins": parse_origins(["myapp.com"]),
    }


async def test_chain_suspended_account_answers_before_restrictions() -> None:
    key = new_prx_key()
    resolver = StubResolver({key: identity(account_status="suspended", allowed_ips=parse_networks(["10.0.0.0/8"]))})
    with pytest.raises(AccountSuspended):
        await authenticate(f"Bearer {key}", resolver, NOW, FACTS)  # type: ignore[arg-type]

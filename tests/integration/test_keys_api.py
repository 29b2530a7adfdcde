"""The key management API, bt- tokens, per-key limits and CORS, through the real app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from billing.accounts import create_account
from keys.service import create_key
from tests.fakes.gateway_fixtures import (
    FAKE_MODEL,
    Backend,
    Gateway,
    _with_session,
    expected_cost_micro,
    gateway_settings,
    start_gateway,
)
from tests.fakes.geoip import write_country_db
from tests.fakes.openai_upstream import FakeOpenAI

CHAT = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def api(gateway: Gateway, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gateway.key}", **kwargs.pop("headers", {})}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=10, **kwargs)


def new_key(gateway: Gateway, **restrictions: Any) -> dict[str, Any]:
    response = api(gateway, "POST", "/api/keys/", json={"name": "test", **restrictions})
    assert response.status_code == 201, response.text
    return dict(response.json())


def chat(gateway: Gateway, key: str, **kwargs: Any) -> httpx.Response:
    return api(gateway, "POST", "/v1/chat/completions", key=key, json=kwargs.pop("json", CHAT), **kwargs)


def test_keys_create_list_get_patch_delete(gateway: Gateway) -> None:
    created = new_key(gateway, description="ci", allowed_models=[FAKE_MODEL], spending_limit="10.5")
    assert created["key"].startswith("prx-") and created["prefix"] == created["key"][:8]
    assert created["_tollway"]["note"].startswith("Save this key")
    assert (created["spending_limit"], created["spending_current"], created["spending_period"]) == (
        "10.5",
        "0",
        "monthly",
    )

    listed = api(gateway, "GET", "/api/keys/").json()["keys"]
    assert [k["id"] for k in listed][-1] == created["id"]
    assert all("key" not in k for k in listed)

    patched = api(
        gateway, "PATCH", f"/api/keys/{created['id']}/", json={"name": "renamed", "spending_limit": None}
    ).json()
    assert (patched["name"], patched["description"], patched["spending_limit"]) == ("renamed", "ci", None)
    assert patched["allowed_models"] == [FAKE_MODEL]  # untouched: not sent
    cleared = api(gateway, "PATCH", f"/api/keys/{created['id']}/", json={"allowed_models": None}).json()
    assert cleared["allowed_models"] == []

    assert api(gateway, "GET", f"/api/keys/{created['id']}/").json()["name"] == "renamed"
    assert api(gateway, "DELETE", f"/api/keys/{created['id']}/").status_code == 204
    missing = api(gateway, "GET", f"/api/keys/{created['id']}/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    assert chat(gateway, created["key"]).json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("allowed_ips", ["10.0.0.300"]),
        ("allowed_ips", ["10.0.0.1/24"]),
        ("active_hours", "9-17"),
        ("allowed_categories", ["audio"]),
        ("spending_period", "yearly"),
        ("blocked_countries", ["ZZ"]),
        ("expires_at", "2001-01-01T00:00:00Z"),
        ("allowed_origins", ["https://myapp.com/"]),
        ("allowed_models", ["gpt-4o"]),
        ("spending_limit", "-1"),
        ("spending_limit", "abc"),
        ("rpm_limit", 0),
        ("webhook_url", "ftp://x"),
        ("name", ""),
        ("unknown_field", 1),
    ],
)
def test_keys_validation_names_the_field(gateway: Gateway, field: str, value: Any) -> None:
    for method, path in (("POST", "/api/keys/"), ("PATCH", "/api/keys/1/")):
        body = {"name": "x", field: value} if method == "POST" else {field: value}
        response = api(gateway, method, path, json=body)
        assert response.status_code == 400, (method, response.text)
        error = response.json()["error"]
        assert error["param"] == field, error
        assert error["type"] == "invalid_request_error"


def test_keys_other_accounts_keys_are_invisible(gateway: Gateway) -> None:
    async def other(session: Any) -> tuple[int, str]:
        account = await create_account(session, "other", credits_micro=10_000_000)
        key, plaintext = await create_key(session, account.id, "theirs")
        return key.id, plaintext

    other_id, other_key = gateway.run(_with_session(gateway.settings, other))
    for method in ("GET", "PATCH", "DELETE"):
        response = api(gateway, method, f"/api/keys/{other_id}/", json={} if method == "PATCH" else None)
        assert response.status_code == 404
    assert other_id not in [k["id"] for k in api(gateway, "GET", "/api/keys/").json()["keys"]]
    minted = api(gateway, "POST", "/api/keys/ephemeral/", json={"key_id": other_id})
    assert minted.status_code == 404
    assert api(gateway, "GET", "/api/keys/", key=other_key).json()["keys"][0]["id"] == other_id


def mint(gateway: Gateway, key_id: int, ttl: int = 3600) -> str:
    response = api(gateway, "POST", "/api/keys/ephemeral/", json={"key_id": key_id, "ttl": ttl})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["expires_in"] == ttl and data["expires_at"] > time.time()
    return str(data["token"])


def test_bt_token_calls_v1_and_is_refused_on_api(gateway: Gateway) -> None:
    parent = new_key(gateway)
    token = mint(gateway, parent["id"])
    assert token.startswith("bt-")
    client = openai.OpenAI(base_url=gateway.v1, api_key=token, max_retries=0)
    reply = client.chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from the fake upstream"
    (record,) = gateway.usage_records()
    assert record.key_id == parent["id"]  # token spend counts against its parent
    refused = api(gateway, "GET", "/api/keys/", key=token)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "browser_token_forbidden"
    spent = api(gateway, "GET", f"/api/keys/{parent['id']}/").json()["spending_current"]
    assert spent == "0.00615" == f"{expected_cost_micro(21, 5) / 1_000_000:g}"


@pytest.mark.parametrize("ttl", [0, 86401, -5])
def test_bt_ttl_out_of_range_is_400(gateway: Gateway, ttl: int) -> None:
    response = api(gateway, "POST", "/api/keys/ephemeral/", json={"key_id": 1, "ttl": ttl})
    assert response.status_code == 400 and response.json()["error"]["param"] == "ttl"


def test_bt_token_expires_with_401_token_expired(gateway: Gateway) -> None:
    token = mint(gateway, new_key(gateway)["id"], ttl=60)  # a minute: "still valid" holds on a busy machine
    assert chat(gateway, token).status_code == 200
    gateway.clock.advance(60.1)
    expired = chat(gateway, token)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"


def test_bt_token_revocation_one_and_all(gateway: Gateway) -> None:
    parent = new_key(gateway)
    first, second, third = (mint(gateway, parent["id"]) for _ in range(3))
    assert api(gateway, "POST", "/api/keys/ephemeral/revoke/", json={"token": first}).status_code == 204
    assert chat(gateway, first).json()["error"]["code"] == "invalid_api_key"
    assert chat(gateway, second).status_code == 200
    assert api(gateway, "POST", f"/api/keys/{parent['id']}/revoke-tokens/").status_code == 204
    assert chat(gateway, second).status_code == 401 and chat(gateway, third).status_code == 401
    assert chat(gateway, mint(gateway, parent["id"])).status_code == 200  # new tokens work again


def test_bt_token_dies_with_parent_and_follows_its_restrictions(gateway: Gateway) -> None:
    parent = new_key(gateway)
    token = mint(gateway, parent["id"])
    api(gateway, "PATCH", f"/api/keys/{parent['id']}/", json={"allowed_models": ["other/model"]})
    gateway.clock.advance(gateway.settings.key_cache_ttl_s + 0.1)  # past the key cache, as another process would be
    assert chat(gateway, token).json()["error"]["code"] == "model_not_allowed"
    api(gateway, "PATCH", f"/api/keys/{parent['id']}/", json={"is_active": False})
    gateway.clock.advance(gateway.settings.key_cache_ttl_s + 0.1)
    assert chat(gateway, token).json()["error"]["code"] == "invalid_api_key"
    api(gateway, "DELETE", f"/api/keys/{parent['id']}/")
    assert chat(gateway, token).status_code == 401


def test_keys_model_category_ip_and_origin_restrictions(gateway: Gateway) -> None:
    assert chat(gateway, new_key(gateway, allowed_models=["other/model"])["key"]).json()["error"]["code"] == (
        "model_not_allowed"
    )
    fallback = chat(
        gateway, new_key(gateway, allowed_models=[FAKE_MODEL])["key"], json={**CHAT, "models": ["other/model"]}
    )
    assert fallback.json()["error"]["code"] == "model_not_allowed"
    assert chat(gateway, new_key(gateway, allowed_categories=["tts"])["key"]).json()["error"]["code"] == (
        "category_not_allowed"
    )
    assert chat(gateway, new_key(gateway, allowed_ips=["10.0.0.0/8"])["key"]).json()["error"]["code"] == (
        "ip_not_allowed"
    )
    assert chat(gateway, new_key(gateway, allowed_ips=["127.0.0.1/32", "::1"])["key"]).status_code == 200
    pinned = new_key(gateway, allowed_origins=["*.example.com"])["key"]
    assert chat(gateway, pinned).json()["error"]["code"] == "origin_not_allowed"
    assert chat(gateway, pinned, headers={"Origin": "https://evil.com"}).status_code == 403
    assert chat(gateway, pinned, headers={"Origin": "https://app.example.com"}).status_code == 200
    assert chat(gateway, pinned, headers={"Referer": "https://app.example.com/page"}).status_code == 200
    blocked = new_key(gateway, blocked_countries=["RU"])["key"]
    unknown = chat(gateway, blocked)
    assert unknown.status_code == 403 and "could not be determined" in unknown.json()["error"]["message"]


def test_keys_spending_limit_and_rpm(gateway: Gateway) -> None:
    # The worst case of one call (21 prompt tokens estimated + 16384 output) is ~9.8 credits.
    capped = new_key(gateway, spending_limit="15", spending_period="daily")["key"]
    assert chat(gateway, capped).status_code == 200
    assert chat(gateway, capped).status_code == 200  # 0.006 spent, a second worst case still fits
    tight = new_key(gateway, spending_limit="1")["key"]
    refused = chat(gateway, tight, json={**CHAT, "max_tokens": 5000})
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "spending_limit_exceeded"
    assert "the largest max_tokens that fits is" in refused.json()["error"]["message"]
    assert chat(gateway, tight, json={**CHAT, "max_tokens": 100}).status_code == 200
    fitted = chat(gateway, tight)  # no max_tokens: lowered to what the limit still allows
    assert fitted.status_code == 200 and 100 < int(fitted.headers["x-tollway-max-tokens"]) < 1700

    limited = new_key(gateway, rpm_limit=2)["key"]
    assert [chat(gateway, limited).status_code for _ in range(2)] == [200, 200]
    third = chat(gateway, limited)
    assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(third.headers["retry-after"]) <= 60


def test_cors_preflight_and_exposed_headers(gateway: Gateway) -> None:
    preflight = httpx.options(
        gateway.v1 + "/chat/completions",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-stainless-os" in preflight.headers["access-control-allow-headers"]
    assert preflight.headers["vary"] == "Origin"
    response = chat(gateway, gateway.key, headers={"Origin": "https://app.example.com"})
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "X-Tollway-Credits-Used" in response.headers["access-control-expose-headers"]
    expired = chat(gateway, "bt-" + "0" * 32, headers={"Origin": "https://app.example.com"})
    assert expired.status_code == 401 and expired.headers["access-control-allow-origin"] == "https://app.example.com"
    assert (
        "access-control-allow-origin"
        not in api(gateway, "GET", "/api/keys/", headers={"Origin": "https://x.com"}).headers
    )


@pytest.fixture
def geo_gateway(backend: Backend, fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway whose MaxMind database places loopback callers in Germany."""
    database = write_country_db(tmp_path / "country.mmdb", {"127.0.0.0/8": {"country": {"iso_code": "DE"}}})
    settings = gateway_settings(backend, fake_openai, geoip_database=str(database))
    gw, server = start_gateway(settings, fake_openai)
    try:
        yield gw
    finally:
        server.stop()


def test_blocked_countries_from_the_local_geoip_database(geo_gateway: Gateway) -> None:
    blocked = chat(geo_gateway, new_key(geo_gateway, blocked_countries=["DE", "AT"])["key"])
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "country_blocked"
    assert "not allowed" in blocked.json()["error"]["message"]
    assert chat(geo_gateway, new_key(geo_gateway, blocked_countries=["FR"])["key"]).status_code == 200


def test_a_restricted_key_cannot_hand_out_more_than_it_has(gateway: Gateway) -> None:
    narrow = new_key(gateway, allowed_models=[FAKE_MODEL], rpm_limit=100)
    wide = new_key(gateway)
    assert api(gateway, "GET", "/api/keys/", key=narrow["key"]).status_code == 200
    create = api(gateway, "POST", "/api/keys/", key=narrow["key"], json={"name": "wider"})
    assert create.status_code == 403 and create.json()["error"]["code"] == "insufficient_role"
    widen = api(gateway, "PATCH", f"/api/keys/{narrow['id']}/", key=narrow["key"], json={"allowed_models": None})
    assert widen.status_code == 403
    sibling = api(gateway, "POST", "/api/keys/ephemeral/", key=narrow["key"], json={"key_id": wide["id"]})
    assert sibling.status_code == 403
    own = api(gateway, "POST", "/api/keys/ephemeral/", key=narrow["key"], json={"key_id": narrow["id"]})
    assert own.status_code == 201
    # Its own network restrictions apply on /api too, not only on /v1.
    pinned = new_key(gateway, allowed_ips=["10.0.0.0/8"])
    refused = api(gateway, "GET", "/api/keys/", key=pinned["key"])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "ip_not_allowed"

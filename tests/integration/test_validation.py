"""What the door refuses: values no column can hold are 400s (or 413s) naming the field, on
both backends, before the database sees them (issue 10: "500 instead of 400", "one bad string
stops billing for every tenant")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_fixtures import ADMIN_TOKEN, FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

CHAT = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def call(gateway: Gateway, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or gateway.key}", **kwargs.pop("headers", {})}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=30, **kwargs)


def refused(response: httpx.Response, param: str | None, status: int = 400) -> dict[str, Any]:
    """The response is the OpenAI error envelope with this status, naming ``param``."""
    assert response.status_code == status, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return error


def key_names(gateway: Gateway) -> list[str]:
    return [key["name"] for key in call(gateway, "GET", "/api/keys/").json()["keys"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rpm_limit", 2**62),
        ("rpm_limit", 2**31),  # one past an INTEGER column
        ("tpm_limit", 10**30),
        ("cache_ttl_s", 2**62),
        ("cache_ttl_s", -1),
        ("cache_ttl_s", 30 * 86400 + 1),  # past the 30 days a key may cache for
        ("spending_limit", 1e30),
        ("spending_limit", "1e30"),
        ("spending_limit", "1e999999999"),
        ("spending_limit", 2**70),
        ("name", "a\u0000b"),
        ("name", "n" * 201),
        ("description", "nul \u0000 inside"),
        ("description", "d" * 1001),
        ("webhook_url", "https://hooks.example.com/" + "a" * 100_000),
        ("allowed_models", ["fake/gpt\u0000"]),
        ("allowed_models", ["fake/m"] * 101),
        ("active_hours", "09:00-17:00" * 1000),
        ("expires_at", "9999-12-31T23:59:00-05:00"),
    ],
)
def test_validation_key_fields_beyond_their_columns_are_400(gateway: Gateway, field: str, value: Any) -> None:
    before = key_names(gateway)
    refused(call(gateway, "POST", "/api/keys/", json={"name": "ok", field: value}), field)
    refused(call(gateway, "PATCH", "/api/keys/1/", json={field: value}), field)
    assert key_names(gateway) == before  # nothing was stored


def test_validation_five_megabyte_description_is_413(gateway: Gateway) -> None:
    response = call(gateway, "POST", "/api/keys/", json={"name": "big", "description": "d" * 5_000_000})
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["code"] == "request_too_large"
    assert "big" not in key_names(gateway)


def test_validation_api_body_cap_is_a_setting(backend: Backend, fake_openai: FakeOpenAI) -> None:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai, api_max_body_bytes=200), fake_openai)
    try:
        small = call(gateway, "POST", "/api/keys/", json={"name": "small"})
        assert small.status_code == 201, small.text
        large = call(gateway, "POST", "/api/keys/", json={"name": "large", "description": "d" * 300})
        assert large.status_code == 413 and large.json()["error"]["code"] == "request_too_large"
        # /v1 keeps the app-wide limit: prompts are larger than management bodies.
        long_prompt = [{"role": "user", "content": "u" * 300}]
        chat = call(gateway, "POST", "/v1/chat/completions", json={**CHAT, "messages": long_prompt})
        assert chat.status_code == 200, chat.text
    finally:
        server.stop()


@pytest.mark.parametrize("amount", ["1e400", "1e30", "-1e400", "1e999999999", "1e-999999999", "1" * 40])
def test_validation_huge_grants_and_refunds_are_400(gateway: Gateway, amount: str) -> None:
    base = f"/api/admin/accounts/{gateway.account_id}"
    balance = gateway.balance_micro()
    refused(call(gateway, "POST", base + "/credits/", token=ADMIN_TOKEN, json={"amount": amount}), "amount")
    refund = {"amount": amount, "idempotency_key": "r-1"}
    refused(call(gateway, "POST", base + "/refunds/", token=ADMIN_TOKEN, json=refund), "amount")
    raw = call(gateway, "POST", base + "/credits/", token=ADMIN_TOKEN, content=b'{"amount": 1e400}')
    refused(raw, "amount")
    assert gateway.balance_micro() == balance


@pytest.mark.parametrize(
    ("field", "value"),
    [("reason", "r\u0000"), ("reason", "r" * 501), ("idempotency_key", "k" * 65), ("idempotency_key", "k\u0000")],
)
def test_validation_grant_text_beyond_its_column_is_400(gateway: Gateway, field: str, value: str) -> None:
    body = {"amount": "1", "idempotency_key": "k-1", field: value}
    path = f"/api/admin/accounts/{gateway.account_id}/credits/"
    refused(call(gateway, "POST", path, token=ADMIN_TOKEN, json=body), field)


def test_validation_price_override_is_capped(gateway: Gateway) -> None:
    path = f"/api/admin/models/{FAKE_MODEL}"
    body = {"input_per_mtok": "1e999999", "output_per_mtok": "1"}
    refused(call(gateway, "PUT", path, token=ADMIN_TOKEN, json=body), "input_per_mtok")
    assert call(gateway, "POST", "/v1/chat/completions", json=CHAT).status_code == 200


HUGE = [str(2**63), str(2**64), "9" * 30]


@pytest.mark.parametrize(
    ("method", "template", "token"),
    [
        ("GET", "/api/keys/{}/", None),
        ("PATCH", "/api/keys/{}/", None),
        ("DELETE", "/api/keys/{}/", None),
        ("POST", "/api/keys/{}/revoke-tokens/", None),
        ("PATCH", "/api/members/{}/", None),
        ("DELETE", "/api/members/{}/", None),
        ("PATCH", "/api/admin/accounts/{}/", ADMIN_TOKEN),
        ("POST", "/api/admin/accounts/{}/credits/", ADMIN_TOKEN),
        ("POST", "/api/admin/accounts/{}/keys/", ADMIN_TOKEN),
    ],
)
def test_validation_path_ids_beyond_64_bits_are_400(
    gateway: Gateway, method: str, template: str, token: str | None
) -> None:
    param = "account_id" if "admin" in template else template.split("/")[2][:-1] + "_id"
    for number in HUGE:
        error = refused(call(gateway, method, template.format(number), token=token, json={}), param)
        assert number not in error["message"]  # the URL is not echoed back


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/audit/?before_id={}", "before_id"),
        ("/api/audit/?limit={}", "limit"),
        ("/api/credits/?before_id={}", "before_id"),
        ("/api/usage/?key_id={}", "key_id"),
        ("/api/usage/?before_id={}", "before_id"),
        ("/api/usage/summary/?key_id={}", "key_id"),
        ("/api/webhooks/deliveries/?limit={}", "limit"),
    ],
)
def test_validation_query_ints_beyond_64_bits_are_400(gateway: Gateway, path: str, param: str) -> None:
    refused(call(gateway, "GET", path.format("9" * 30)), param)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/usage/?model=a%00b", "model"),
        ("/api/usage/?end_user_id=a%00b", "end_user_id"),
        ("/api/usage/summary/?since=a%00b", "since"),
        ("/v1/generation?id=a%00b", "id"),
        ("/v1/videos/a%00b", "video_id"),
        ("/v1/models/fake%00", "slug"),
    ],
)
def test_validation_nul_in_query_and_path_text_is_400(gateway: Gateway, path: str, param: str) -> None:
    refused(call(gateway, "GET", path), param)


def test_validation_nul_in_member_and_login_fields_is_400(gateway: Gateway) -> None:
    member = {"email": "a\u0000@x.test", "role": "member"}
    refused(call(gateway, "POST", "/api/members/", json=member), "email")
    login = {"email": "a@x.test", "password": "p", "account_id": 2**64}
    refused(call(gateway, "POST", "/api/auth/login/", json=login), "account_id")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/api/keys/"])
def test_validation_deeply_nested_json_is_400(gateway: Gateway, path: str) -> None:
    for body in (b"[" * 100_000, b'{"model": "x", "messages": [{"role": "user", "content": ' + b"[" * 100_000):
        response = call(gateway, "POST", path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text[:300]
        assert response.json()["error"]["code"] in ("invalid_json", "invalid_request")
    assert call(gateway, "POST", "/v1/chat/completions", json=CHAT).status_code == 200


# -- /v1 fields stored with the usage record: the pipeline's door (the lead's files) -----------


@pytest.fixture
def chat_gateway(gateway: Gateway) -> Iterator[Gateway]:
    yield gateway
    # Whatever the door let in, billing still works for everyone afterwards.
    assert call(gateway, "POST", "/v1/chat/completions", json=CHAT).status_code == 200
    assert gateway.usage_records()


def test_validation_chat_tool_calls_not_a_list_is_400(chat_gateway: Gateway) -> None:
    body = {**CHAT, "messages": [{"role": "assistant", "content": "x", "tool_calls": 5}]}
    assert call(chat_gateway, "POST", "/v1/chat/completions", json=body).status_code == 400


@pytest.mark.parametrize("user", ["a\u0000b", "u" * 257])
def test_validation_chat_user_beyond_its_column_is_400(chat_gateway: Gateway, user: str) -> None:
    refused(call(chat_gateway, "POST", "/v1/chat/completions", json={**CHAT, "user": user}), "user")

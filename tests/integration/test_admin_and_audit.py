"""The operator's admin API, account status in the chain, and the audit trail."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.cli import main
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, FAKE_MODEL, Gateway

CHAT = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def admin(gateway: Gateway, method: str, path: str, token: str = ADMIN_TOKEN, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, gateway.url + "/api/admin" + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs
    )


def chat(gateway: Gateway) -> httpx.Response:
    return httpx.post(gateway.v1 + "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {gateway.key}"})


@pytest.mark.parametrize("token", ["-", "wrong", ADMIN_TOKEN + "x"])
def test_admin_requires_operator_token(gateway: Gateway, token: str) -> None:
    response = admin(gateway, "GET", "/accounts/", token=token)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_admin_token"


def test_admin_prx_key_is_not_an_operator(gateway: Gateway) -> None:
    assert admin(gateway, "GET", "/accounts/", token=gateway.key).status_code == 401


def test_admin_accounts_and_grants(gateway: Gateway) -> None:
    created = admin(gateway, "POST", "/accounts/", json={"name": "beta", "email": "b@x.test", "credits": "20"})
    assert created.status_code == 201 and created.json()["balance"] == "20"
    assert admin(gateway, "POST", "/accounts/", json={"name": "beta"}).status_code == 409
    names = [a["name"] for a in admin(gateway, "GET", "/accounts/").json()["accounts"]]
    assert names == ["acme", "beta"]
    account_id = created.json()["id"]
    body = {"amount": "5.5", "reason": "promo", "idempotency_key": "promo-1"}
    first = admin(gateway, "POST", f"/accounts/{account_id}/credits/", json=body)
    again = admin(gateway, "POST", f"/accounts/{account_id}/credits/", json=body)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and first.json()["balance"] == "25.5"
    bad = admin(gateway, "POST", f"/accounts/{account_id}/credits/", json={"amount": "0.0000001"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "amount"
    assert admin(gateway, "POST", "/accounts/999/credits/", json={"amount": "1"}).status_code == 404


def test_admin_suspend_and_ban_stop_calls_then_reactivate(gateway: Gateway) -> None:
    assert chat(gateway).status_code == 200
    for status in ("suspended", "banned"):
        response = admin(gateway, "PATCH", f"/accounts/{gateway.account_id}/", json={"status": status})
        assert response.status_code == 200 and response.json()["status"] == status
        refused = chat(gateway)  # the admin call cleared this process's key cache
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_suspended"
        assert status in refused.json()["error"]["message"]
    admin(gateway, "PATCH", f"/accounts/{gateway.account_id}/", json={"status": "active"})
    assert chat(gateway).status_code == 200
    bad = admin(gateway, "PATCH", f"/accounts/{gateway.account_id}/", json={"status": "frozen"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


def test_audit_trail_records_key_changes_without_secrets(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.key}"}
    created = httpx.post(gateway.url + "/api/keys/", json={"name": "audited", "rpm_limit": 5}, headers=headers).json()
    httpx.patch(
        gateway.url + f"/api/keys/{created['id']}/",
        json={"rpm_limit": 9, "allowed_ips": ["10.0.0.0/8"]},
        headers=headers,
    )
    httpx.post(gateway.url + f"/api/keys/{created['id']}/revoke-tokens/", headers=headers)
    httpx.delete(gateway.url + f"/api/keys/{created['id']}/", headers=headers)
    admin(gateway, "PATCH", f"/accounts/{gateway.account_id}/", json={"status": "active"})
    events = httpx.get(gateway.url + "/api/audit/", headers=headers).json()["events"]
    actions = [e["action"] for e in events]
    assert actions == ["account.status", "key.delete", "key.revoke_tokens", "key.update", "key.create"]
    update = events[3]
    assert update["before"] == {"rpm_limit": 5, "allowed_ips": []}
    assert update["after"] == {"rpm_limit": 9, "allowed_ips": ["10.0.0.0/8"]}
    assert update["actor"] == events[4]["actor"] == f"key:{events[4]['actor'].split(':')[1]}"
    assert created["key"] not in str(events) and created["key"][8:] not in str(events)
    page = httpx.get(gateway.url + f"/api/audit/?limit=2&before_id={events[1]['id']}", headers=headers).json()
    assert [e["action"] for e in page["events"]] == ["key.revoke_tokens", "key.update"]


def test_cli_set_status_is_seen_by_a_running_gateway(gateway: Gateway, tmp_path: Any) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(f'database_url = "{gateway.settings.database_url}"\n')
    assert chat(gateway).status_code == 200  # the gateway now has the key (and the account's status) cached
    assert main(["--config", str(config), "accounts", "set-status", str(gateway.account_id), "suspended"]) == 0
    gateway.clock.advance(gateway.settings.key_cache_ttl_s + 0.1)  # the gateway's cached key goes stale
    assert chat(gateway).json()["error"]["code"] == "account_suspended"


def test_admin_grant_idempotency_keys_are_per_account_and_conflicts_are_409(gateway: Gateway) -> None:
    other = admin(gateway, "POST", "/accounts/", json={"name": "beta", "credits": "1"}).json()["id"]
    grant = {"amount": "5", "idempotency_key": "k1"}
    first = admin(gateway, "POST", f"/accounts/{gateway.account_id}/credits/", json=grant)
    assert first.status_code == 201
    # The same key on another account is that account's own grant, not the first account's entry.
    theirs = admin(gateway, "POST", f"/accounts/{other}/credits/", json={"amount": "7", "idempotency_key": "k1"})
    assert theirs.status_code == 201 and theirs.json()["balance"] == "8"
    assert theirs.json()["ledger_id"] != first.json()["ledger_id"]
    again = admin(gateway, "POST", f"/accounts/{gateway.account_id}/credits/", json=grant)
    assert again.status_code == 201 and again.json()["ledger_id"] == first.json()["ledger_id"]  # a safe retry
    for path, body in (
        ("credits", {"amount": "6", "idempotency_key": "k1"}),  # another amount
        ("credits", {"amount": "5", "reason": "other", "idempotency_key": "k1"}),  # another reason
        ("refunds", {"amount": "5", "idempotency_key": "k1"}),  # a grant's key used for a refund
    ):
        conflict = admin(gateway, "POST", f"/accounts/{gateway.account_id}/{path}/", json=body)
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    balances = {a["id"]: a["balance"] for a in admin(gateway, "GET", "/accounts/").json()["accounts"]}
    assert balances[other] == "8" and balances[gateway.account_id] == "505"

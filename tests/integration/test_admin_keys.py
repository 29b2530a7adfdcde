"""The operator lists and revokes any account's keys; an account's own key or session cannot."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.api.deps import OPERATOR
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, FAKE_MODEL, Gateway
from tests.integration.test_dashboard_sessions import signed_in_owner

CHAT = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def admin(gateway: Gateway, method: str, path: str, token: str = ADMIN_TOKEN, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, gateway.url + "/api/admin" + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs
    )


def chat(gateway: Gateway, key: str) -> httpx.Response:
    return httpx.post(gateway.v1 + "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})


def test_admin_lists_and_revokes_another_accounts_key(gateway: Gateway) -> None:
    other = admin(gateway, "POST", "/accounts/", json={"name": "other", "credits": "10"}).json()
    created = admin(gateway, "POST", f"/accounts/{other['id']}/keys/", json={"name": "leaked"}).json()
    manager = admin(gateway, "POST", f"/accounts/{other['id']}/keys/", json={"name": "manager"}).json()["key"]
    assert chat(gateway, created["key"]).status_code == 200

    everyone = admin(gateway, "GET", "/keys/")
    assert everyone.status_code == 200
    listed = everyone.json()["keys"]
    assert {key["account_id"] for key in listed} == {gateway.account_id, other["id"]}
    assert created["key"] not in everyone.text and all("key" not in key for key in listed)
    theirs = admin(gateway, "GET", "/keys/", params={"account_id": other["id"]}).json()["keys"]
    assert [(k["id"], k["name"], k["prefix"], k["is_active"]) for k in theirs] == [
        (created["id"], "leaked", created["prefix"], True),
        (theirs[1]["id"], "manager", theirs[1]["prefix"], True),
    ]

    assert admin(gateway, "DELETE", f"/keys/{created['id']}/").status_code == 204
    refused = chat(gateway, created["key"])  # this process forgot its cached resolution
    assert refused.status_code == 401
    assert [k["name"] for k in admin(gateway, "GET", "/keys/", params={"account_id": other["id"]}).json()["keys"]] == [
        "manager"
    ]
    missing = admin(gateway, "DELETE", f"/keys/{created['id']}/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    # The revocation is in the owning account's audit trail, by the operator.
    events = httpx.get(gateway.url + "/api/audit/", headers={"Authorization": f"Bearer {manager}"}).json()["events"]
    deleted = [e for e in events if e["action"] == "key.delete" and e["target_id"] == str(created["id"])]
    assert [e["actor"] for e in deleted] == [OPERATOR]


def test_admin_keys_refuse_an_account_key_and_a_session(gateway: Gateway) -> None:
    other = admin(gateway, "POST", "/accounts/", json={"name": "other"}).json()
    victim = admin(gateway, "POST", f"/accounts/{other['id']}/keys/", json={"name": "theirs"}).json()
    for method, path in (("GET", "/keys/"), ("DELETE", f"/keys/{victim['id']}/")):
        response = admin(gateway, method, path, token=gateway.key)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_admin_token"
    owner = signed_in_owner(gateway)
    assert owner.request("GET", "/api/admin/keys/").status_code == 401
    assert owner.request("DELETE", f"/api/admin/keys/{victim['id']}/").status_code == 401
    theirs = admin(gateway, "GET", "/keys/", params={"account_id": other["id"]}).json()["keys"]
    assert [key["id"] for key in theirs] == [victim["id"]]

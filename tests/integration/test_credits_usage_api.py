"""The account's money API: balance and ledger, usage pages with filters, grouped summaries,
and the operator's refunds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from tests.fakes.gateway_fixtures import ADMIN_TOKEN, FAKE_MODEL, Gateway, expected_cost_micro


def credits_text(micro: int) -> str:
    return format(Decimal(micro).scaleb(-6).normalize(), "f")


def api(gateway: Gateway, path: str, **params: Any) -> httpx.Response:
    return httpx.get(gateway.url + path, params=params, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10)


def chat(gateway: Gateway, user: str) -> None:
    response = httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {gateway.key}", "X-Tollway-User-Id": user},
        timeout=10,
    )
    assert response.status_code == 200


def test_usage_pages_filters_and_summaries(gateway: Gateway) -> None:
    for user in ("alice", "alice", "bob"):
        chat(gateway, user)
    one_cost = expected_cost_micro(21, 5)
    everything = api(gateway, "/api/usage/").json()
    assert [r["end_user_id"] for r in everything["data"]] == ["bob", "alice", "alice"]  # newest first
    assert everything["data"][0]["credits_used"] == credits_text(one_cost)
    page = api(gateway, "/api/usage/", limit=2).json()
    assert len(page["data"]) == 2 and page["next_before_id"] == page["data"][-1]["id"]
    rest = api(gateway, "/api/usage/", limit=2, before_id=page["next_before_id"]).json()
    assert len(rest["data"]) == 1 and rest["next_before_id"] is None
    alice = api(gateway, "/api/usage/", end_user_id="alice").json()["data"]
    assert len(alice) == 2
    assert api(gateway, "/api/usage/", model="other/model").json()["data"] == []
    future = api(gateway, "/api/usage/", since="2999-01-01T00:00:00Z").json()["data"]
    assert future == []

    by_user = {row["group"]: row for row in api(gateway, "/api/usage/summary/", group_by="end_user").json()["data"]}
    assert by_user["alice"]["requests"] == 2 and by_user["bob"]["requests"] == 1
    assert by_user["alice"]["input_tokens"] == 42 and by_user["alice"]["output_tokens"] == 10
    (by_day,) = api(gateway, "/api/usage/summary/", group_by="day").json()["data"]
    assert by_day["group"] == datetime.now(UTC).date().isoformat() and by_day["requests"] == 3
    (by_model,) = api(gateway, "/api/usage/summary/", group_by="model").json()["data"]
    assert by_model["group"] == FAKE_MODEL and by_model["credits_used"] == credits_text(3 * one_cost)
    (by_key,) = api(gateway, "/api/usage/summary/", group_by="key").json()["data"]
    assert by_key["requests"] == 3

    bad = api(gateway, "/api/usage/summary/", group_by="planet")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
    naive = api(gateway, "/api/usage/", since="2026-01-01T00:00:00")
    assert naive.status_code == 400 and naive.json()["error"]["param"] == "since"
    assert api(gateway, "/api/usage/", limit=0).status_code == 400


def test_credits_show_balance_threshold_and_ledger_with_refunds(gateway: Gateway) -> None:
    chat(gateway, "alice")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    refund = {"amount": "1.5", "reason": "bad answer", "idempotency_key": "ticket-9"}
    first = httpx.post(gateway.url + f"/api/admin/accounts/{gateway.account_id}/refunds/", json=refund, headers=admin)
    again = httpx.post(gateway.url + f"/api/admin/accounts/{gateway.account_id}/refunds/", json=refund, headers=admin)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert first.json()["kind"] == "refund"
    negative = httpx.post(
        gateway.url + f"/api/admin/accounts/{gateway.account_id}/refunds/",
        json={**refund, "amount": "-1", "idempotency_key": "x"},
        headers=admin,
    )
    assert negative.status_code == 400

    credits = api(gateway, "/api/credits/").json()
    expected_balance = 500_000_000 - expected_cost_micro(21, 5) + 1_500_000
    assert credits["balance"] == credits_text(expected_balance)
    assert credits["available"] == credits["balance"]  # nothing in flight
    assert credits["low_credits_threshold"] == "100"
    kinds = [entry["kind"] for entry in credits["ledger"]]
    assert kinds == ["refund", "debit", "grant"]  # newest first; the opening balance was a grant
    assert credits["ledger"][1]["request_id"].startswith("req_")

"""``tollway billing reconcile`` passes on honest books and names each kind of drift."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, update

from billing.models import Account, LedgerEntry
from gateway.cli import main
from tests.fakes.gateway_fixtures import FAKE_MODEL, Gateway, _with_session


def reconcile(gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    settings = gateway.settings
    config = tmp_path / "reconcile.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\nredis_url = "{settings.redis_url}"\n'
        f'redis_prefix = "{settings.redis_prefix}"\n'
    )
    capsys.readouterr()
    code = main(["--config", str(config), "--json", "billing", "reconcile"])
    return code, json.loads(capsys.readouterr().out)


def serve_some(gateway: Gateway, count: int = 3) -> None:
    for _ in range(count):
        response = httpx.post(
            gateway.v1 + "/chat/completions",
            json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {gateway.key}"},
            timeout=10,
        )
        assert response.status_code == 200


def test_honest_books_reconcile(gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serve_some(gateway)
    code, report = reconcile(gateway, tmp_path, capsys)
    assert code == 0 and report["ok"] and report["debits"] == 3 and report["drift"] == []


def test_each_kind_of_drift_is_named(gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serve_some(gateway, 2)
    victim = gateway.usage_records()[0].request_id

    async def lose_a_debit(session: Any) -> None:
        await session.execute(delete(LedgerEntry).where(LedgerEntry.request_id == victim))
        await session.execute(update(Account).values(balance_micro=Account.balance_micro + 7))
        await session.commit()

    gateway.run(_with_session(gateway.settings, lose_a_debit))
    code, report = reconcile(gateway, tmp_path, capsys)
    assert code == 1 and not report["ok"]
    drift = "\n".join(report["drift"])
    assert f"request {victim} was served and billed but never debited" in drift
    assert "but its ledger sums to" in drift
    if gateway.settings.redis_url:
        assert "counter balance" in drift  # Redis still mirrors the honest balance


def test_counters_are_rebuilt_from_postgres_after_redis_loses_them(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not gateway.settings.redis_url:
        pytest.skip("the embedded store lives and dies with its process")
    import asyncio

    import redis.asyncio as aioredis

    headers = {"Authorization": f"Bearer {gateway.key}"}
    capped = httpx.post(
        gateway.url + "/api/keys/", json={"name": "capped", "spending_limit": "10"}, headers=headers
    ).json()
    for _ in range(2):
        response = httpx.post(
            gateway.v1 + "/chat/completions",
            json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {capped['key']}"},
        )
        assert response.status_code == 200
    one = gateway.usage_records()[-1].credits_micro

    async def flush() -> None:
        client = aioredis.Redis.from_url(gateway.settings.redis_url)
        keys = [k async for k in client.scan_iter(match=gateway.settings.redis_prefix + "*")]
        await client.delete(*keys)
        await client.aclose()

    asyncio.run(flush())  # Redis lost everything: balance mirror, spend counters, holds
    response = httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {capped['key']}"},
    )
    assert response.status_code == 200
    view = httpx.get(gateway.url + f"/api/keys/{capped['id']}/", headers=headers).json()
    assert view["spending_current"] == format(Decimal(3 * one).scaleb(-6).normalize(), "f")  # rebuilt, then added
    code, report = reconcile(gateway, tmp_path, capsys)
    assert code == 0, report["drift"]

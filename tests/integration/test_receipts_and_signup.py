"""Receipts in ``/api/credits`` (each account sees its own purchases and reversals with the
money paid) and the sign-up grant (once per account created by the admin API or the CLI, never
for the bootstrap account)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from billing.accounts import create_account
from billing.grants import SIGNUP_KEY, grant_signup_credits
from billing.models import LedgerEntry
from billing.payments.provider import Reversed
from gateway.cli import main
from gateway.db import create_engine, create_sessionmaker
from keys.service import create_key
from tests.fakes.cli_runs import run_json
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.payment_records import PRO, STARTER, buy, give_back, paid


def credits(gateway: Gateway, key: str) -> dict[str, object]:
    answer = httpx.get(gateway.url + "/api/credits/", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200
    return dict(answer.json())


def test_credits_ledger_shows_receipts_of_the_accounts_own_payments(gateway: Gateway) -> None:
    async def record() -> str:
        engine = create_engine(gateway.settings.database_url)
        try:
            sessions = create_sessionmaker(engine)
            async with sessions() as session:
                other = await create_account(session, "beta")
                _, other_key = await create_key(session, other.id, "beta key")
            await buy(sessions, paid(gateway.account_id, "evt_1", "pi_1", STARTER))
            await give_back(sessions, Reversed(event_id="evt_2", reference="pi_1", refunded_total_minor=450))
            await buy(sessions, paid(other.id, "evt_3", "pi_3", PRO))
            return other_key
        finally:
            await engine.dispose()

    other_key = asyncio.run(record())
    ledger = credits(gateway, gateway.key)["ledger"]
    assert isinstance(ledger, list)
    assert [(e["kind"], e["amount"]) for e in ledger] == [
        ("reversal", "-6000"),
        ("purchase", "12000"),
        ("grant", "500"),
    ]
    assert ledger[0]["receipt"] == {
        "provider": "stripe",
        "package_id": "starter",
        "amount_paid_minor": -450,
        "amount_paid": "-4.50",
        "currency": "USD",
        "reference": "pi_1",
    }
    assert ledger[1]["receipt"]["amount_paid"] == "9.00" and ledger[1]["receipt"]["amount_paid_minor"] == 900
    assert ledger[2]["receipt"] is None  # an operator's grant has no payment behind it
    theirs = credits(gateway, other_key)["ledger"]
    assert isinstance(theirs, list)
    assert [(e["kind"], e["receipt"]["reference"]) for e in theirs] == [("purchase", "pi_3")]


def test_signup_credits_granted_once_to_accounts_the_admin_api_creates(
    backend: Backend, fake_openai: FakeOpenAI
) -> None:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai, signup_credits="25.5"), fake_openai)
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        made = httpx.post(
            gateway.url + "/api/admin/accounts/", json={"name": "newco", "credits": "10"}, headers=admin, timeout=10
        )
        assert made.status_code == 201 and made.json()["balance"] == "35.5"
        account_id = made.json()["id"]

        async def retry() -> list[tuple[str, int, str, str | None]]:
            engine = create_engine(gateway.settings.database_url)
            try:
                sessions = create_sessionmaker(engine)
                for _ in range(2):  # a retried grant (a crash between the two steps, run again)
                    entry = await grant_signup_credits(sessions, None, "", account_id, 25_500_000)
                    assert entry is not None and entry.request_id == SIGNUP_KEY
                async with sessions() as session:
                    rows = await session.scalars(
                        select(LedgerEntry).where(LedgerEntry.account_id == account_id).order_by(LedgerEntry.id)
                    )
                    return [(r.kind, r.amount_micro, r.reason, r.request_id) for r in rows]
            finally:
                await engine.dispose()

        assert asyncio.run(retry()) == [
            ("grant", 10_000_000, "opening credits", None),
            ("grant", 25_500_000, "sign-up credits", SIGNUP_KEY),
        ]
        # The account the fixture made directly (not signed up) has only its opening credits.
        assert credits(gateway, gateway.key)["balance"] == "500"
    finally:
        server.stop()


def test_signup_credits_through_the_cli_and_none_by_default(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cli.toml"
    base = f'database_url = "{backend.database_url}"\nredis_url = "{backend.redis_url}"\n'
    path.write_text(base)
    assert main(["--config", str(path), "migrate"]) == 0
    plain = run_json(capsys, "--config", str(path), "--json", "accounts", "create", "plain")
    assert plain["balance"] == "0"  # signup_credits defaults to "0": nothing granted
    path.write_text(base + 'signup_credits = "7"\n')
    signed = run_json(capsys, "--config", str(path), "--json", "accounts", "create", "signed", "--credits", "1")
    assert signed["balance"] == "8"

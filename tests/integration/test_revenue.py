"""The operator's revenue report on both databases: payments recorded as webhooks record them,
in two months and three packages (two currencies), every figure checked; and the same report
through ``tollway billing revenue`` and ``GET /api/admin/revenue/``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.accounts import create_account
from billing.payments.provider import Reversed
from billing.reports import RevenueRow, revenue_report
from gateway.cli import main
from gateway.db import create_engine, create_sessionmaker
from tests.fakes.cli_runs import refused, run_json
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Backend, Gateway, migrate_backend
from tests.fakes.payment_records import EURO, PRO, STARTER, buy, give_back, paid

CREDIT = 1_000_000
OCTOBER_LAST = datetime(2026, 10, 31, 23, 59, 59, 999_000, tzinfo=UTC)  # a month's last moment
NOVEMBER_FIRST = datetime(2026, 11, 1, tzinfo=UTC)  # the next month's first

# (month, package, currency): purchases, gross, refunded, net, credits sold, credits reversed
EXPECTED = {
    ("2026-10", "pro", "USD"): (1, 2900, 0, 2900, 30_000 * CREDIT, 0),
    ("2026-10", "starter", "USD"): (1, 900, 0, 900, 12_000 * CREDIT, 0),
    ("2026-11", "euro", "EUR"): (1, 800, 0, 800, 10_000 * CREDIT, 0),
    # pi_c bought in November; pi_d (October's pro) refunded in full in November
    ("2026-11", "pro", "USD"): (1, 2900, 2900, 0, 30_000 * CREDIT, 30_000 * CREDIT),
    # pi_b bought in November; a third of pi_a (October's starter) refunded, then repeated
    ("2026-11", "starter", "USD"): (1, 900, 300, 600, 12_000 * CREDIT, 4_000 * CREDIT),
}


@pytest.fixture
async def sessions(backend: Backend) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await migrate_backend(backend.database_url)
    engine = create_engine(backend.database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def record_two_months(sessions: async_sessionmaker[AsyncSession], first: int, second: int) -> None:
    """The payments behind :data:`EXPECTED`, for two accounts."""
    await buy(sessions, paid(first, "evt_a", "pi_a", STARTER), OCTOBER_LAST)
    await buy(sessions, paid(second, "evt_d", "pi_d", PRO), datetime(2026, 10, 20, 12, tzinfo=UTC))
    await buy(sessions, paid(second, "evt_b", "pi_b", STARTER), NOVEMBER_FIRST)
    await buy(sessions, paid(first, "evt_c", "pi_c", PRO), datetime(2026, 11, 15, tzinfo=UTC))
    await buy(sessions, paid(first, "evt_e", "pi_e", EURO), datetime(2026, 11, 5, tzinfo=UTC))
    refund = Reversed(event_id="evt_ra", reference="pi_a", refunded_total_minor=300)
    await give_back(sessions, refund, datetime(2026, 11, 2, tzinfo=UTC))
    again = Reversed(event_id="evt_ra2", reference="pi_a", refunded_total_minor=300)  # the same total, new id
    await give_back(sessions, again, datetime(2026, 11, 3, tzinfo=UTC))
    chargeback = Reversed(event_id="evt_rd", reference="pi_d", refunded_total_minor=None, reason="chargeback")
    await give_back(sessions, chargeback, datetime(2026, 11, 30, 23, 59, tzinfo=UTC))


def figures(rows: list[RevenueRow]) -> dict[tuple[str, str, str], tuple[int, ...]]:
    return {
        (r.month, r.package_id, r.currency): (
            r.purchases,
            r.gross_minor,
            r.refunded_minor,
            r.net_minor,
            r.credits_sold_micro,
            r.credits_reversed_micro,
        )
        for r in rows
    }


async def two_accounts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as session:
        first = await create_account(session, "acme")
        second = await create_account(session, "beta")
        return first.id, second.id


async def test_revenue_report_by_month_package_and_currency(sessions: async_sessionmaker[AsyncSession]) -> None:
    await record_two_months(sessions, *await two_accounts(sessions))
    async with sessions() as session:
        everything = await revenue_report(session)
        november = await revenue_report(session, first="2026-11")
        october = await revenue_report(session, last="2026-10")
        none = await revenue_report(session, first="2026-12", last="2027-01")
    assert [(r.month, r.package_id, r.currency) for r in everything] == list(EXPECTED)  # sorted
    assert figures(everything) == EXPECTED
    assert figures(november) == {k: v for k, v in EXPECTED.items() if k[0] == "2026-11"}
    assert figures(october) == {k: v for k, v in EXPECTED.items() if k[0] == "2026-10"}
    assert none == []


def test_revenue_cli_and_admin_api_agree(gateway: Gateway, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    async def record() -> None:
        engine = create_engine(gateway.settings.database_url)
        try:
            sessions = create_sessionmaker(engine)
            async with sessions() as session:
                other = (await create_account(session, "beta")).id
            await record_two_months(sessions, gateway.account_id, other)
        finally:
            await engine.dispose()

    asyncio.run(record())
    path = tmp_path / "cli.toml"
    path.write_text(f'database_url = "{gateway.settings.database_url}"\n')
    config = ["--config", str(path)]
    report = run_json(capsys, *config, "--json", "billing", "revenue", "--from", "2026-11", "--to", "2026-11")
    assert (report["from"], report["to"]) == ("2026-11", "2026-11")
    assert {(r["month"], r["package_id"], r["currency"]): r for r in report["data"]}["2026-11", "starter", "USD"] == {
        "month": "2026-11",
        "package_id": "starter",
        "currency": "USD",
        "purchases": 1,
        "gross_minor": 900,
        "refunded_minor": 300,
        "net_minor": 600,
        "credits_sold_micro": 12_000 * CREDIT,
        "credits_reversed_micro": 4_000 * CREDIT,
    }
    assert len(report["data"]) == 3
    capsys.readouterr()
    assert main([*config, "billing", "revenue", "--to", "2026-10"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "month",
        "package",
        "currency",
        "purchases",
        "gross",
        "refunded",
        "net",
        "credits",
        "sold",
        "reversed",
    ]
    assert [line.split() for line in table[1:]] == [
        ["2026-10", "pro", "USD", "1", "29.00", "0.00", "29.00", "30000", "0"],
        ["2026-10", "starter", "USD", "1", "9.00", "0.00", "9.00", "12000", "0"],
    ]
    assert "YYYY-MM" in refused(capsys, *config, "billing", "revenue", "--from", "2026-1")
    assert "no such month" in refused(capsys, *config, "billing", "revenue", "--to", "2026-13")
    assert "after" in refused(capsys, *config, "billing", "revenue", "--from", "2026-11", "--to", "2026-10")

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = httpx.get(gateway.url + "/api/admin/revenue/", headers=admin, timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["first_month"], body["last_month"]) == (None, None)
    assert {
        (r["month"], r["package_id"], r["currency"]): (
            r["purchases"],
            r["gross_minor"],
            r["refunded_minor"],
            r["net_minor"],
            int(r["credits_sold"]) * CREDIT,
            int(r["credits_reversed"]) * CREDIT,
        )
        for r in body["data"]
    } == EXPECTED
    october = httpx.get(gateway.url + "/api/admin/revenue/", params={"to": "2026-10"}, headers=admin, timeout=10)
    assert [r["month"] for r in october.json()["data"]] == ["2026-10", "2026-10"]
    for params in ({"from": "2026-13"}, {"to": "26-01"}, {"from": "2026-11", "to": "2026-10"}, {"from": "x" * 8}):
        bad = httpx.get(gateway.url + "/api/admin/revenue/", params=params, headers=admin, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error", params
    member = {"Authorization": f"Bearer {gateway.key}"}
    assert httpx.get(gateway.url + "/api/admin/revenue/", headers=member, timeout=10).status_code == 401

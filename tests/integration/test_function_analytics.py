"""``GET /api/projects/{id}/analytics/`` through the real HTTP app, on both backends: exact figures
on a known data set (percentiles checked by hand), narrowing, tenancy, roles, the ledger's rows
reaching it, and the retention command."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from billing.accounts import create_account
from billing.counters import CounterStore, EmbeddedCounterStore, RedisCounterStore
from billing.metering import Meter
from functions.directory import load_function
from functions.invocations import ErrorType
from functions.ledger import FunctionLedger
from functions.models import FunctionInvocation
from gateway.cli import main
from gateway.db import create_engine, create_sessionmaker
from tests.fakes.function_rows import add_function, add_project, fixed_keyring
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Gateway, _with_session
from tests.integration.test_dashboard_sessions import Browser, join, signed_in_owner

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday; November began 17 days before


@dataclass
class DataSet:
    project_id: int
    environments: dict[str, int]  # Development, Staging, Production
    functions: dict[str, str]  # letter → id ("G" was deleted: it has calls but no row)
    other_project_id: int  # the same account's second project
    stranger_account_id: int
    stranger_project_id: int  # another account's


# (function, hours before NOW, status, latency ms, error type); see the expected figures below.
CALLS: list[tuple[str, int, int, int, str]] = [
    *[("A", hours, 200, latency, "") for hours, latency in [(1, 10), (2, 20), (3, 30), (5, 40)]],  # today
    *[("A", hours, 200, latency, "") for hours, latency in [(24, 50), (25, 60), (26, 70)]],  # Nov 17
    *[("A", hours, 200, latency, "") for hours, latency in [(72, 80), (73, 90), (74, 100)]],  # Nov 15
    ("A", 240, 200, 1000, ""),  # Nov 8: outside 7 days, inside the month
    ("A", 241, 200, 1000, ""),
    ("A", 576, 200, 1000, ""),  # Oct 25: outside the month, inside 30 days
    ("B", 1, 502, 300, "unreachable"),
    ("B", 2, 502, 400, "unreachable"),
    ("B", 3, 504, 500, "timeout"),
    ("B", 4, 500, 250, "target_error"),
    ("B", 6, 200, 150, ""),
    *[("G", hours, 200, latency, "") for hours, latency in [(48, 11), (49, 12), (50, 13), (51, 14)]],  # Nov 16
    ("C", 24, 201, 5, ""),
    ("C", 25, 404, 15, ""),
    ("C", 26, 301, 35, ""),
    ("D", 1, 429, 0, "rate_limited"),  # refused: counted as calls, not as invocations
    ("D", 2, 402, 0, "payment_required"),
    ("E", 144, 200, 1, ""),  # Nov 12
    ("F", 145, 200, 3, ""),
]
HOME = {"A": "Production", "B": "Production", "C": "Development", "D": "Staging", "E": "Production"}
HOME |= {"F": "Production", "G": "Production"}


def api(gateway: Gateway, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(
        gateway.url + path, params=params, headers={"Authorization": f"Bearer {key or gateway.key}"}, timeout=30
    )


def analytics(gateway: Gateway, project_id: int, **params: Any) -> dict[str, Any]:
    response = api(gateway, f"/api/projects/{project_id}/analytics/", **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _row(data: DataSet, account_id: int, project_id: int, environment_id: int, function_id: str, **values: Any) -> Any:
    hours = values.pop("hours")
    return {
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
        "account_id": account_id,
        "project_id": project_id,
        "environment_id": environment_id,
        "function_id": function_id,
        "origin": "https://app.example.com",
        "credits_micro": 0,
        "requested_at": NOW - timedelta(hours=hours),
        **values,
    }


def load(gateway: Gateway) -> DataSet:
    async def work(session: Any) -> DataSet:
        ring = fixed_keyring()
        project, environments = await add_project(session, gateway.account_id, "Website")
        by_name = {environment.name: environment for environment in environments}
        functions = {}
        for letter in "ABCDEF":
            row, _token = await add_function(
                session,
                ring,
                by_name[HOME[letter]],
                "https://api.example.com",
                name=f"Fn {letter}",
                slug=f"fn-{letter}",
            )
            functions[letter] = row.id
        functions["G"] = str(uuid.uuid4())  # deleted since: no row, its calls stay
        other, other_environments = await add_project(session, gateway.account_id, "Backoffice")
        h, _token = await add_function(session, ring, other_environments[0], "https://api.example.com")
        stranger = await create_account(session, "stranger", email="s@stranger.test", credits_micro=0)
        strange, strange_environments = await add_project(session, stranger.id, "Theirs")
        x, _token = await add_function(session, ring, strange_environments[0], "https://api.example.com")
        data = DataSet(
            project.id,
            {name: environment.id for name, environment in by_name.items()},
            functions,
            other.id,
            stranger.id,
            strange.id,
        )
        rows = [
            _row(
                data,
                gateway.account_id,
                project.id,
                by_name[HOME[letter]].id,
                functions[letter],
                hours=hours,
                status=status,
                latency_ms=latency,
                error_type=error_type,
            )
            for letter, hours, status, latency, error_type in CALLS
        ]
        for hours in (1, 2, 3):  # the account's other project: in the account's month only
            rows.append(
                _row(data, gateway.account_id, other.id, h.environment_id, h.id, hours=hours, status=200, latency_ms=9)
            )
            rows.append(  # another account's calls: never seen
                _row(data, stranger.id, strange.id, x.environment_id, x.id, hours=hours, status=500, latency_ms=9999)
            )
        rows.append(
            _row(data, stranger.id, strange.id, x.environment_id, functions["A"], hours=1, status=500, latency_ms=1)
        )
        await session.execute(insert(FunctionInvocation), [{"error_type": "", **row} for row in rows])
        await session.commit()
        return data

    gateway.clock.set_now(NOW)
    result: DataSet = gateway.run(_with_session(gateway.settings, work))
    return result


def _fn(data: DataSet, letter: str, calls: int) -> dict[str, Any]:
    deleted = letter == "G"
    return {
        "function_id": data.functions[letter],
        "name": None if deleted else f"Fn {letter}",
        "slug": None if deleted else f"fn-{letter}",
        "environment_id": data.environments[HOME[letter]],
        "calls": calls,
    }


def test_function_analytics_figures_are_exact(gateway: Gateway) -> None:
    data = load(gateway)
    body = analytics(gateway, data.project_id, days=7)
    assert (body["granularity"], body["days"], body["retention_days"]) == ("day", 7, 90)
    assert (body["since"], body["until"]) == ("2026-11-12T00:00:00+00:00", "2026-11-19T00:00:00+00:00")
    # Per day, Nov 12 → Nov 18, zeros included; errors = 4xx and 5xx.
    assert [(bucket["start"][:10], bucket["calls"], bucket["errors"]) for bucket in body["series"]] == [
        ("2026-11-12", 2, 0),  # E, F
        ("2026-11-13", 0, 0),
        ("2026-11-14", 0, 0),
        ("2026-11-15", 3, 0),  # A ×3
        ("2026-11-16", 4, 0),  # G ×4
        ("2026-11-17", 6, 1),  # A ×3, C ×3 (one 404)
        ("2026-11-18", 11, 6),  # A ×4, B ×5 (four 5xx), D ×2 (429, 402)
    ]
    assert body["calls"] == 26
    assert body["status_classes"] == {"2xx": 18, "3xx": 1, "4xx": 3, "5xx": 4, "other": 0}
    # By hand, the 24 forwarded calls' latencies (D's two refusals left out), sorted:
    #   1 3 5 10 11 12 13 14 15 20 30 35 | 40 50 60 70 80 90 100 150 250 300 400 500
    # p50 = rank ⌈0.50 × 24⌉ = 12 → 35;  p95 = rank ⌈0.95 × 24⌉ = ⌈22.8⌉ = 23 → 400.
    assert body["latency_ms"] == {"p50": 35, "p95": 400, "calls": 24}
    # Top 5 by calls; G was deleted but keeps its history (no name); E and F (1 each) miss the cut.
    assert body["top_functions"] == [
        _fn(data, "A", 10),
        _fn(data, "B", 5),
        _fn(data, "G", 4),
        _fn(data, "C", 3),
        _fn(data, "D", 2),
    ]
    assert body["error_types"] == [
        {"error_type": "unreachable", "calls": 2},
        {"error_type": "payment_required", "calls": 1},
        {"error_type": "rate_limited", "calls": 1},
        {"error_type": "target_error", "calls": 1},
        {"error_type": "timeout", "calls": 1},
    ]
    # November so far: A's 10 + its two on Nov 8 (not Oct 25), D's refusals not invocations.
    month = body["month"]
    assert (month["period"], month["invocations"], month["account_invocations"]) == ("2026-11", 26, 29)
    ones = sorted([_fn(data, "E", 1), _fn(data, "F", 1)], key=lambda item: item["function_id"])
    assert month["functions"] == [_fn(data, "A", 12), _fn(data, "B", 5), _fn(data, "G", 4), _fn(data, "C", 3), *ones]


def test_function_analytics_hourly_up_to_two_days(gateway: Gateway) -> None:
    data = load(gateway)
    body = analytics(gateway, data.project_id, days=1)
    assert body["granularity"] == "hour" and len(body["series"]) == 24
    assert (body["series"][0]["start"], body["series"][-1]["start"]) == (
        "2026-11-17T13:00:00+00:00",
        "2026-11-18T12:00:00+00:00",
    )
    busy = {bucket["start"][11:13]: (bucket["calls"], bucket["errors"]) for bucket in body["series"] if bucket["calls"]}
    assert busy == {"11": (3, 2), "10": (3, 2), "09": (2, 1), "08": (1, 1), "07": (1, 0), "06": (1, 0)}
    assert body["calls"] == 11
    # A 10 20 30 40, B 150 250 300 400 500: p50 = rank 5 → 150, p95 = rank ⌈8.55⌉ = 9 → 500.
    assert body["latency_ms"] == {"p50": 150, "p95": 500, "calls": 9}
    assert len(analytics(gateway, data.project_id, days=2)["series"]) == 48


def test_function_analytics_narrows_to_an_environment_or_a_function(gateway: Gateway) -> None:
    data = load(gateway)
    production = analytics(gateway, data.project_id, days=7, environment_id=data.environments["Production"])
    assert production["environment_id"] == data.environments["Production"]
    assert production["calls"] == 21  # A 10, B 5, G 4, E 1, F 1
    assert [item["function_id"] for item in production["top_functions"]][:3] == [
        data.functions["A"],
        data.functions["B"],
        data.functions["G"],
    ]
    assert production["month"]["invocations"] == 23 and production["month"]["account_invocations"] == 29
    one = analytics(gateway, data.project_id, days=30, function_id=data.functions["A"].upper())
    assert one["function_id"] == data.functions["A"]
    # A over 30 days: 10 + Nov 8 ×2 + Oct 25 = 13 calls; latencies 10…100 and 1000 ×3:
    # p50 = rank 7 → 70; p95 = rank ⌈12.35⌉ = 13 → 1000.
    assert one["calls"] == 13 and one["latency_ms"] == {"p50": 70, "p95": 1000, "calls": 13}
    assert one["month"]["invocations"] == 12 and one["top_functions"] == [_fn(data, "A", 13)]
    nothing = analytics(
        gateway, data.project_id, days=7, environment_id=data.environments["Staging"], function_id=data.functions["A"]
    )
    assert nothing["calls"] == 0 and nothing["latency_ms"] == {"p50": None, "p95": None, "calls": 0}


def test_function_analytics_is_the_callers_account_only(gateway: Gateway) -> None:
    data = load(gateway)
    path = f"/api/projects/{data.stranger_project_id}/analytics/"
    refused = api(gateway, path)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "project_not_found"
    missing = api(gateway, "/api/projects/987654/analytics/")  # another's looks like none at all
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "project_not_found"
    assert refused.json()["error"]["message"] == f"project {data.stranger_project_id} not found"
    assert missing.json()["error"]["message"] == "project 987654 not found"
    other_environment = api(
        gateway,
        f"/api/projects/{data.project_id}/analytics/",
        environment_id=data.environments["Production"] + 100,
    )
    assert other_environment.status_code == 404
    assert other_environment.json()["error"]["code"] == "environment_not_found"
    # The stranger's own key sees its project but none of this account's calls, and not ours.
    key = httpx.post(
        gateway.url + f"/api/admin/accounts/{data.stranger_account_id}/keys/",
        json={"name": "k"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()["key"]
    theirs = api(gateway, path, key=key, days=7)
    assert theirs.status_code == 200
    assert theirs.json()["calls"] == 4 and theirs.json()["month"]["account_invocations"] == 4
    assert api(gateway, f"/api/projects/{data.project_id}/analytics/", key=key).status_code == 404
    # Bounded parameters.
    for params in ({"days": 0}, {"days": 91}, {"function_id": "not-a-uuid"}):
        assert api(gateway, f"/api/projects/{data.project_id}/analytics/", **params).status_code == 400


def test_function_analytics_every_role_may_read(gateway: Gateway) -> None:
    async def work(session: Any) -> int:
        project, _environments = await add_project(session, gateway.account_id, "Website")
        await session.commit()
        return project.id

    project_id = gateway.run(_with_session(gateway.settings, work))
    path = f"/api/projects/{project_id}/analytics/"
    owner = signed_in_owner(gateway)
    readers: list[Browser] = [owner]
    for number, role in enumerate(("admin", "member", "viewer")):
        person, _member_id = join(owner, f"{role}{number}@acme.test", role)
        readers.append(person)
    for reader in readers:
        response = reader.request("GET", path)
        assert response.status_code == 200, response.text
        assert response.json()["calls"] == 0
    restricted = httpx.post(
        gateway.url + "/api/keys/",
        json={"name": "narrow", "allowed_models": ["fake/gpt-4o-mini"]},
        headers={"Authorization": f"Bearer {gateway.key}"},
    ).json()["key"]
    assert api(gateway, path, key=restricted).status_code == 200  # a restricted key acts as a member
    assert httpx.get(gateway.url + path).status_code == 401


def test_function_analytics_counts_what_the_ledger_logged(gateway: Gateway) -> None:
    """The write path end to end: calls logged by a ledger (the runtime's seam), written by the
    settlement writer, then read by the analytics of the real app."""
    settings = gateway.settings

    async def work() -> tuple[int, str]:
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        store: CounterStore = (
            RedisCounterStore.from_url(settings.redis_url, prefix=settings.redis_prefix + "e2e:")
            if settings.redis_url
            else EmbeddedCounterStore()
        )
        try:
            async with sessionmaker() as session:
                project, environments = await add_project(session, gateway.account_id, "Website")
                row, _token = await add_function(session, fixed_keyring(), environments[0], "https://api.example.com")
                await session.commit()
                function = await load_function(session, row.id, fixed_keyring())
            assert function is not None
            # Its own key prefix: the gateway's writer must not take these calls before we look.
            meter = Meter(store, engine, sessionmaker, prefix=settings.redis_prefix + "e2e:", refresh_s=60.0)
            priced = FunctionLedger(meter, price_micro=250_000)  # what an operator's price changes
            ticket = await priced.admit(function, "req_e2e_paid")
            await priced.finish(ticket, function, status=201, latency_ms=40, error_type=ErrorType.NONE, origin="")
            ledger = FunctionLedger(meter)
            for number, (status, error_type) in enumerate(
                [(200, ErrorType.NONE), (200, ErrorType.NONE), (504, ErrorType.TIMEOUT)]
            ):
                ticket = await ledger.admit(function, f"req_e2e_{number}")
                await ledger.finish(
                    ticket, function, status=status, latency_ms=10 * (number + 1), error_type=error_type, origin=""
                )
            await ledger.refused(
                function, request_id="req_e2e_429", status=429, error_type=ErrorType.RATE_LIMITED, origin=""
            )
            async with sessionmaker() as session:  # nothing yet: the writer has not run (but the
                # embedded store writes a priced call before it answers, as every settlement there)
                written = await session.scalar(select(func.count()).select_from(FunctionInvocation))
                assert written == (0 if settings.redis_url else 1)
            await meter.write_pending()
            return project.id, function.slug
        finally:
            await store.close()
            await engine.dispose()

    project_id, slug = gateway.run(work())
    body = analytics(gateway, project_id, days=1)
    assert body["calls"] == 5
    assert body["status_classes"] == {"2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1, "other": 0}
    # Forwarded: 10 20 30 40 → p50 = rank 2 → 20, p95 = rank 4 → 40.
    assert body["latency_ms"] == {"p50": 20, "p95": 40, "calls": 4}
    assert body["error_types"] == [{"error_type": "rate_limited", "calls": 1}, {"error_type": "timeout", "calls": 1}]
    assert body["month"]["invocations"] == 4
    # The priced call is in the account's usage, apart from any model's: only it, at its price.
    usage = httpx.get(
        gateway.url + "/api/usage/", params={"model": f"fn/{slug}"}, headers={"Authorization": f"Bearer {gateway.key}"}
    ).json()["data"]
    assert [(u["request_id"], u["provider"], u["credits_used"], u["key_id"]) for u in usage] == [
        ("req_e2e_paid", "fn", "0.25", None)
    ]


def test_function_analytics_prune_keeps_the_retention_window(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def work(session: Any) -> None:
        project, environments = await add_project(session, gateway.account_id, "Website")
        now = datetime.now(UTC)
        rows = [
            {
                "request_id": f"req_prune_{days}",
                "account_id": gateway.account_id,
                "project_id": project.id,
                "environment_id": environments[0].id,
                "function_id": str(uuid.uuid4()),
                "status": 200,
                "latency_ms": 1,
                "error_type": "",
                "origin": "",
                "credits_micro": 0,
                "requested_at": now - timedelta(days=days),
            }
            for days in (1, 89, 91, 200, 365)
        ]
        await session.execute(insert(FunctionInvocation), rows)
        await session.commit()

    gateway.run(_with_session(gateway.settings, work))
    config = tmp_path / "tollway.toml"
    settings = gateway.settings
    config.write_text(
        f'database_url = "{settings.database_url}"\nredis_url = "{settings.redis_url}"\n'
        f'redis_prefix = "{settings.redis_prefix}"\n'
    )
    capsys.readouterr()
    assert main(["--config", str(config), "--json", "functions", "prune-invocations"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 3

    async def left(session: Any) -> list[str]:
        return sorted(await session.scalars(select(FunctionInvocation.request_id)))

    assert gateway.run(_with_session(gateway.settings, left)) == ["req_prune_1", "req_prune_89"]
    assert main(["--config", str(config), "functions", "prune-invocations", "--older-than-days", "0"]) == 2

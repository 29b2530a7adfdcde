"""``tollway functions …`` against a real database, on both backends."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from functions.models import ProxyFunction
from gateway.cli import main
from gateway.settings import load_settings
from keys.audit import list_events
from tests.fakes.function_api import Workspace, make_workspace
from tests.fakes.gateway_fixtures import TEST_SECRET_KEY, Backend, _with_session


@pytest.fixture
def config(backend: Backend, tmp_path: Path) -> str:
    path = tmp_path / "tollway.toml"
    path.write_text(
        f'database_url = "{backend.database_url}"\nredis_url = "{backend.redis_url}"\n'
        f'[function_secret_keys]\ntest = "{TEST_SECRET_KEY}"\n'
    )
    assert main(["--config", str(path), "migrate"]) == 0
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], config: str, *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["--config", config, "--json", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return dict(json.loads(captured.out))


def fails(capsys: pytest.CaptureFixture[str], config: str, *argv: str) -> str:
    capsys.readouterr()
    assert main(["--config", config, *argv]) == 2
    return capsys.readouterr().err


def in_database(config: str, work: Any) -> Any:
    import asyncio

    return asyncio.run(_with_session(load_settings(config), work))


def setup(capsys: pytest.CaptureFixture[str], config: str) -> Workspace:
    account = run_json(capsys, config, "accounts", "create", "acme")

    async def work(session: AsyncSession) -> Workspace:
        return await make_workspace(session, int(account["id"]), "Site")

    made: Workspace = in_database(config, work)
    return made


def test_function_management_cli_manages_a_function(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = setup(capsys, config)
    base = ["--account", str(ws.account_id)]
    made = run_json(
        capsys,
        config,
        "functions",
        "create",
        *base,
        "--environment",
        str(ws.env),
        "--name",
        "Mailer",
        "--target-url",
        "https://api.brevo.com/v3/smtp/email",
        "--header",
        "Accept: application/json",
        "--secret",
        f"{ws.variable}:header:api-key",
        "--origin",
        "https://App.example.com/",
        "--rate-limit",
        "30",
    )
    assert re.fullmatch(r"[0-9a-f]{64}", made["token"])
    assert (made["slug"], made["headers"], made["allowed_origins"]) == (
        "mailer",
        {"Accept": "application/json"},
        ["https://app.example.com"],
    )
    assert made["secret_mappings"] == [
        {"variable_id": ws.variable, "inject_as": "header", "key": "api-key", "template": ""}
    ]
    assert (made["rate_limit_per_minute"], made["created_by"]) == (30, "operator:cli")
    function_id = made["id"]

    stripe = run_json(
        capsys, config, "functions", "create", *base, "--environment", str(ws.env), "--template", "stripe",
        "--secret", str(ws.variable), "--body", '{"description": "charges", "rate_limit_per_minute": 5}',
    )  # fmt: skip
    assert stripe["secret_mappings"][0]["template"] == "Bearer ${value}"
    assert (stripe["description"], stripe["rate_limit_per_minute"], stripe["template_id"]) == ("charges", 5, "stripe")

    listed = run_json(capsys, config, "functions", "list", *base, "--environment", str(ws.env))
    assert [f["id"] for f in listed["functions"]] == [stripe["id"], function_id]
    assert all("token" not in f for f in listed["functions"])
    searched = run_json(capsys, config, "functions", "list", *base, "--environment", str(ws.env), "--q", "BREVO")
    assert [f["id"] for f in searched["functions"]] == [function_id]

    shown = run_json(capsys, config, "functions", "show", *base, function_id)
    assert shown["url_path"] == f"/fn/{function_id}" and "token" not in shown
    assert run_json(capsys, config, "functions", "disable", *base, function_id)["enabled"] is False
    assert run_json(capsys, config, "functions", "enable", *base, function_id)["enabled"] is True

    regenerated = run_json(capsys, config, "functions", "regenerate-token", *base, function_id)
    assert regenerated["token"] != made["token"]

    async def stored_digest(session: AsyncSession) -> str:
        row = await session.get(ProxyFunction, function_id)
        assert row is not None
        return row.token_sha256

    assert in_database(config, stored_digest) == hashlib.sha256(regenerated["token"].encode()).hexdigest()

    capsys.readouterr()
    assert main(["--config", config, "functions", "list", *base, "--environment", str(ws.env)]) == 0
    text = capsys.readouterr().out
    assert "Mailer" in text and function_id in text and made["token"] not in text

    assert run_json(capsys, config, "functions", "delete", *base, function_id) == {"id": function_id, "deleted": True}
    assert "no proxy function" in fails(capsys, config, "functions", "show", *base, function_id)

    async def actions(session: AsyncSession) -> list[tuple[str, str]]:
        events = await list_events(session, ws.account_id)
        return [(e.action, e.actor) for e in reversed(events) if e.target_type == "function"]

    assert in_database(config, actions) == [
        ("function.created", "operator:cli"),
        ("function.created", "operator:cli"),
        ("function.disabled", "operator:cli"),
        ("function.enabled", "operator:cli"),
        ("function.token_regenerated", "operator:cli"),
        ("function.deleted", "operator:cli"),
    ]


def test_function_management_cli_errors_exit_2_with_the_rule(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = setup(capsys, config)
    base = ["functions", "create", "--account", str(ws.account_id), "--environment", str(ws.env)]
    blank = [*base, "--name", "Mailer", "--target-url"]
    assert "must use https" in fails(capsys, config, *blank, "http://api.example.com/x")
    assert "--secret 'abc'" in fails(capsys, config, *blank, "https://api.example.com/x", "--secret", "abc")
    assert "'Name: value'" in fails(capsys, config, *blank, "https://api.example.com/x", "--header", "novalue")
    assert "--body is not valid JSON" in fails(capsys, config, *blank, "https://a.example/x", "--body", "{")
    assert "invalid function" in fails(capsys, config, *blank, "https://a.example/x", "--body", '{"nope": 1}')
    assert main(["--config", config, *blank, "https://api.example.com/x"]) == 0
    assert "A proxy function with this name already exists" in fails(
        capsys, config, *blank, "https://api.example.com/y"
    )
    assert main(["--config", config, "accounts", "create", "someone-else"]) == 0
    other = ["functions", "create", "--account", "someone-else", "--environment", str(ws.env), "--name", "X"]
    other.append("--target-url")
    assert "no environment" in fails(capsys, config, *other, "https://api.example.com/x")
    assert "needs a variable" in fails(capsys, config, *base, "--template", "openai")

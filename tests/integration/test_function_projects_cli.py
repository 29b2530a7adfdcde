"""``tollway projects|environments|variables|secrets`` against a real database, on both backends."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from functions.crypto import new_key_text
from gateway.cli import main
from keys.models import AuditEvent
from tests.fakes.gateway_fixtures import Backend, _with_session

KEY = new_key_text()
SECRET = "sk_cli_SECRET-0123456789"


@pytest.fixture
def config(backend: Backend, tmp_path: Path) -> str:
    path = tmp_path / "tollway.toml"
    path.write_text(
        f'database_url = "{backend.database_url}"\nredis_url = "{backend.redis_url}"\n'
        f'[function_secret_keys]\nk1 = "{KEY}"\n'
    )
    assert main(["--config", str(path), "migrate"]) == 0
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], config: str, *argv: str) -> Any:
    capsys.readouterr()
    assert main(["--config", config, "--json", *argv]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def run_error(capsys: pytest.CaptureFixture[str], config: str, *argv: str) -> str:
    capsys.readouterr()
    assert main(["--config", config, *argv]) == 2
    return capsys.readouterr().err


def test_function_projects_cli_projects_environments_variables(
    config: str, backend: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    account = str(run_json(capsys, config, "accounts", "create", "acme")["id"])
    project = run_json(capsys, config, "projects", "create", "--account", account, "Website", "--description", "d")
    assert [e["name"] for e in project["environments"]] == ["Development", "Staging", "Production"]
    development = str(project["environments"][0]["id"])
    assert "exists already" in run_error(capsys, config, "projects", "create", "--account", account, "Website")

    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    created = run_json(
        capsys,
        config,
        "variables",
        "set",
        "--account",
        account,
        "--environment",
        development,
        "API_KEY",
        "--value-stdin",
    )
    assert (created["key"], created["value"], created["is_secret"]) == ("API_KEY", "••••••••", True)
    region = run_json(
        capsys,
        config,
        "variables",
        "set",
        "--account",
        account,
        "--environment",
        development,
        "REGION",
        "--value",
        "eu",
        "--plain",
    )
    updated = run_json(
        capsys,
        config,
        "variables",
        "set",
        "--account",
        account,
        "--environment",
        development,
        "REGION",
        "--value",
        "us",
    )
    assert (updated["id"], updated["value"], updated["is_secret"]) == (region["id"], "us", False)
    refused = run_error(
        capsys,
        config,
        "variables",
        "set",
        "--account",
        account,
        "--environment",
        development,
        "API_KEY",
        "--value",
        "x",
        "--plain",
    )
    assert "fixed" in refused
    assert "invalid input" in run_error(
        capsys, config, "variables", "set", "--account", account, "--environment", development, "1BAD", "--value", "x"
    )
    listed = run_json(capsys, config, "variables", "list", "--account", account, "--environment", development)
    assert [(v["key"], v["value"]) for v in listed["variables"]] == [("API_KEY", "••••••••"), ("REGION", "us")]

    clone = run_json(capsys, config, "environments", "clone", "--account", account, development, "Preview")
    assert (clone["cloned_from"], clone["variables_copied"], clone["functions_copied"]) == (int(development), 2, 0)
    added = run_json(capsys, config, "environments", "add", "--account", account, "--project", str(project["id"]), "QA")
    renamed = run_json(capsys, config, "environments", "rename", "--account", account, str(added["id"]), "Test")
    assert renamed["name"] == "Test"
    run_json(capsys, config, "environments", "delete", "--account", account, str(added["id"]))
    names = run_json(capsys, config, "environments", "list", "--account", account, "--project", str(project["id"]))
    assert [e["name"] for e in names["environments"]] == ["Development", "Staging", "Production", "Preview"]
    run_json(capsys, config, "variables", "delete", "--account", account, str(updated["id"]))
    assert "not found" in run_error(capsys, config, "variables", "delete", "--account", account, str(updated["id"]))

    assert run_json(capsys, config, "projects", "list", "--account", account)["projects"][0]["name"] == "Website"
    other = str(run_json(capsys, config, "accounts", "create", "other")["id"])
    assert "not found" in run_error(capsys, config, "projects", "delete", "--account", other, str(project["id"]))
    assert "no account" in run_error(capsys, config, "projects", "list", "--account", "999999")
    run_json(capsys, config, "projects", "delete", "--account", account, str(project["id"]))
    assert run_json(capsys, config, "projects", "list", "--account", account)["projects"] == []

    async def events(session: Any) -> list[AuditEvent]:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.id)))

    from gateway.settings import load_settings

    trail = _run(_with_session(load_settings(config), events))
    assert {e.actor for e in trail if e.action.split(".")[0] in ("project", "environment", "variable")} == {
        "operator:cli"
    }
    assert SECRET not in str([(e.before, e.after) for e in trail])
    assert SECRET not in capsys.readouterr().out


def test_function_projects_cli_secrets_check_names_the_missing_key(
    config: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, backend: Backend
) -> None:
    account = str(run_json(capsys, config, "accounts", "create", "acme")["id"])
    project = run_json(capsys, config, "projects", "create", "--account", account, "Website")
    environment = str(project["environments"][0]["id"])
    run_json(
        capsys, config, "variables", "set", "--account", account, "--environment", environment, "K", "--value", "v"
    )
    assert run_json(capsys, config, "secrets", "check")["current_key_id"] == "k1"

    other = tmp_path / "other.toml"
    other.write_text(
        f'database_url = "{backend.database_url}"\nredis_url = "{backend.redis_url}"\n'
        f'[function_secret_keys]\nk2 = "{new_key_text()}"\n'
    )
    refused = run_error(capsys, str(other), "secrets", "check")
    assert "'k1'" in refused and "restore that key" in refused
    assert "'k1'" in run_error(capsys, str(other), "secrets", "rotate")
    assert "function_secret_keys" in run_error(capsys, str(other), "secrets", "rotate", "--new-key")


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)

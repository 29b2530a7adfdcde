"""``tollway config check``: the configuration ``serve`` would run with, secrets masked."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from gateway.cli import main

SECRETS = ("sk-upstream-secret", "hunter2", "x" * 32, "y" * 32, "Bearer header-secret", "redispass")

CONFIG = f"""
database_url = "postgresql+asyncpg://tollway:hunter2@db:5432/tollway"
redis_url = "redis://:redispass@cache:6379/0"
admin_token = "{"x" * 32}"

[providers.up]
kind = "openai"
api_key = "sk-upstream-secret"
headers = {{ X-Extra-Auth = "Bearer header-secret" }}

[models."up/chat"]
provider = "up"
upstream_model = "gpt-4o-mini"
input_per_mtok = "0.15"
output_per_mtok = "0.60"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOLLWAY_SESSION_SECRET", "y" * 32)
    monkeypatch.setenv("TOLLWAY_RETRY_ATTEMPTS", "5")
    path = tmp_path / "tollway.toml"
    path.write_text(CONFIG)
    return path


def test_cli_config_check_prints_toml_with_secrets_masked(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert not [secret for secret in SECRETS if secret in out]
    printed = tomllib.loads(out)
    assert printed["retry_attempts"] == 5  # the environment wins over the file, as for serve
    assert printed["database_url"] == "postgresql+asyncpg://tollway:********@db:5432/tollway"
    assert printed["redis_url"] == "redis://:********@cache:6379/0"
    assert (printed["admin_token"], printed["session_secret"]) == ("********", "********")
    assert printed["providers"]["up"]["api_key"] == "********"
    assert printed["providers"]["up"]["headers"] == {"X-Extra-Auth": "********"}
    assert printed["models"]["up/chat"]["input_per_mtok"] == "0.15"


def test_cli_config_check_json_reports_ok(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "--json", "config", "check"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert (report["ok"], report["errors"]) == (True, [])
    assert report["config"]["providers"]["up"]["api_key"] == "********"
    assert not [secret for secret in SECRETS if secret in out]


def test_cli_config_check_refuses_an_unpriced_model(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text(CONFIG + '\n[models."up/free"]\nprovider = "up"\nupstream_model = "not-in-any-list"\n')
    assert main(["--config", str(config), "--json", "config", "check"]) == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False
    assert [error for error in report["errors"] if "up/free" in error and "no price" in error]
    assert "up/free" in captured.err


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("TOLLWAY_RETRY_ATTEMPTS", "0", "TOLLWAY_RETRY_ATTEMPTS"),
        ("TOLLWAY_WORKERS", "2", "needs Redis"),
        ("TOLLWAY_PROVIDERS", '{"up": {"kind": "unknown-kind"}}', "unknown provider kind 'unknown-kind'"),
    ],
)
def test_cli_config_check_exits_2_on_bad_settings(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    needle: str,
) -> None:
    monkeypatch.setenv(variable, value)
    if variable == "TOLLWAY_WORKERS":
        config.write_text(CONFIG.replace('redis_url = "redis://:redispass@cache:6379/0"', ""))
    assert main(["--config", str(config), "config", "check"]) == 2
    captured = capsys.readouterr()
    assert needle in captured.err and captured.out == ""


def test_cli_config_check_warns_of_an_unset_key_variable(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPSTREAM_KEY_FOR_TEST", raising=False)
    config.write_text(CONFIG.replace('api_key = "sk-upstream-secret"', 'api_key_env = "UPSTREAM_KEY_FOR_TEST"'))
    assert main(["--config", str(config), "config", "check"]) == 0
    assert "$UPSTREAM_KEY_FOR_TEST is not set" in capsys.readouterr().err

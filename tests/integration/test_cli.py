"""The ``tollway`` CLI against a real database, on both backends."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from tests.fakes.cli_runs import run_json
from tests.fakes.gateway_fixtures import Backend, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI


def test_cli_accounts_keys_and_credits(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    account = run_json(capsys, "--config", config, "--json", "accounts", "create", "acme", "--credits", "12.5")
    assert (account["name"], account["balance"]) == ("acme", "12.5")
    account_id = str(account["id"])

    key = run_json(capsys, "keys", "create", "--account", account_id, "--name", "ci", "--config", config, "--json")
    assert str(key["key"]).startswith("prx-") and key["prefix"] == str(key["key"])[:8]

    granted = run_json(
        capsys, "--config", config, "--json", "credits", "grant", account_id, "100", "--reason", "top-up"
    )
    assert (granted["amount"], granted["balance"]) == ("100", "112.5")

    listed = run_json(capsys, "--config", config, "--json", "accounts", "list")
    assert [(a["name"], a["balance"]) for a in listed["accounts"]] == [("acme", "112.5")]


def test_cli_grant_idempotency_key_grants_once(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    account = run_json(capsys, "--config", config, "--json", "accounts", "create", "acme")
    args = ["--config", config, "--json", "credits", "grant", str(account["id"]), "5", "--idempotency-key", "order-1"]
    first = run_json(capsys, *args)
    second = run_json(capsys, *args)
    assert first == second
    assert first["balance"] == "5"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["accounts", "create", "acme", "--credits", "1.0000001"], "6 decimal places"),
        (["keys", "create", "--account", "999", "--name", "x"], "no account"),
        (["credits", "grant", "999", "5"], "no account"),
        (["credits", "grant", "acme", "0"], "zero"),
    ],
)
def test_cli_errors_exit_2_with_message(
    config: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["--config", config, "accounts", "create", "acme"]) == 0  # accounts are resolved first
    assert main(["--config", config, *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_duplicate_account_is_refused(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", config, "accounts", "create", "acme"]) == 0
    assert main(["--config", config, "accounts", "create", "acme"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_cli_serve_refuses_workers_without_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tollway.toml"
    path.write_text(f'database_url = "sqlite+aiosqlite:///{tmp_path}/t.db"\n')
    assert main(["--config", str(path), "serve", "--workers", "2"]) == 2
    assert "needs Redis" in capsys.readouterr().err


def test_cli_members_add_reads_the_password_from_stdin(
    config: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = str(run_json(capsys, "--config", config, "--json", "accounts", "create", "acme")["id"])
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
    added = run_json(
        capsys,
        "--config",
        config,
        "--json",
        "members",
        "add",
        "--account",
        account_id,
        "--email",
        "Owner@Acme.test",
        "--password-stdin",
    )
    assert (added["email"], added["role"]) == ("owner@acme.test", "owner")
    assert "correct horse" not in json.dumps(added)

    # Adding the same person again, or a new person without a password, is refused with a message.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    capsys.readouterr()
    assert main(["--config", config, "members", "add", "--account", account_id, "--email", "owner@acme.test"]) == 2
    assert "already a member" in capsys.readouterr().err
    assert main(["--config", config, "members", "add", "--account", account_id, "--email", "new@acme.test"]) == 2
    assert "initial password" in capsys.readouterr().err
    assert main(["--config", config, "members", "add", "--account", "999", "--email", "x@acme.test"]) == 2


def test_cli_grant_reaches_the_mirror_at_once(
    backend: Backend, fake_openai: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A grant from the CLI used to reach the database only: the credits page showed the old
    ``available`` and reconcile failed until the account's next request (refresh_s is long here)."""
    if backend.name == "sqlite":
        pytest.skip("the embedded mirror lives inside the gateway process: it follows on its refresh")
    gateway, server = start_gateway(gateway_settings(backend, fake_openai, balance_refresh_s=3600.0), fake_openai)
    try:
        headers = {"Authorization": f"Bearer {gateway.key}"}
        before = httpx.get(gateway.url + "/api/credits/", headers=headers, timeout=10).json()  # loads the mirror
        path = tmp_path / "cli.toml"
        path.write_text(
            f'database_url = "{backend.database_url}"\nredis_url = "{backend.redis_url}"\n'
            f'redis_prefix = "{backend.redis_prefix}"\n'
        )
        granted = run_json(capsys, "--config", str(path), "--json", "credits", "grant", str(gateway.account_id), "10")
        after = httpx.get(gateway.url + "/api/credits/", headers=headers, timeout=10).json()
        assert Decimal(after["available"]) == Decimal(before["available"]) + 10 == Decimal(str(granted["balance"]))
        capsys.readouterr()
        assert main(["--config", str(path), "billing", "reconcile"]) == 0, capsys.readouterr().out
    finally:
        server.stop()


def test_cli_grant_idempotency_keys_are_per_account(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    first_id = str(run_json(capsys, "--config", config, "--json", "accounts", "create", "acme")["id"])
    second_id = str(run_json(capsys, "--config", config, "--json", "accounts", "create", "beta")["id"])
    key = ["--idempotency-key", "order-1"]
    run_json(capsys, "--config", config, "--json", "credits", "grant", first_id, "5", *key)
    theirs = run_json(capsys, "--config", config, "--json", "credits", "grant", second_id, "7", *key)
    assert (theirs["account_id"], theirs["balance"]) == (int(second_id), "7")
    assert main(["--config", config, "credits", "grant", first_id, "6", *key]) == 2
    assert "idempotency key" in capsys.readouterr().err

"""The operator's CLI: ``--version``, ``keys list`` / ``keys revoke``, accounts by name, and no
empty database made by accident. On both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from tests.fakes.cli_runs import refused, run_json
from tests.fakes.gateway_fixtures import Backend


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == "tollway 0.1.0"


def test_cli_keys_list_shows_prefixes_never_keys(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    acme = run_json(capsys, "--config", config, "--json", "accounts", "create", "acme")
    beta = run_json(capsys, "--config", config, "--json", "accounts", "create", "beta")
    first = run_json(capsys, "--config", config, "--json", "keys", "create", "--account", "acme", "--name", "ci")
    second = run_json(capsys, "--config", config, "--json", "keys", "create", "--account", "beta", "--name", "web")
    assert (first["account_id"], second["account_id"]) == (acme["id"], beta["id"])

    listed = run_json(capsys, "--config", config, "--json", "keys", "list")
    assert [(k["id"], k["account"], k["name"], k["prefix"], k["status"]) for k in listed["keys"]] == [
        (first["id"], "acme", "ci", first["prefix"], "active"),
        (second["id"], "beta", "web", second["prefix"], "active"),
    ]
    assert all("key" not in entry for entry in listed["keys"])
    only_beta = run_json(capsys, "--config", config, "--json", "keys", "list", "--account", "beta")
    assert [k["id"] for k in only_beta["keys"]] == [second["id"]]

    capsys.readouterr()
    assert main(["--config", config, "keys", "list"]) == 0
    table = capsys.readouterr().out
    assert "PREFIX" in table.splitlines()[0] and first["prefix"] in table and second["prefix"] in table
    assert first["key"] not in table and second["key"] not in table


def test_cli_keys_revoke_by_prefix_id_or_whole_key(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "--config", config, "accounts", "create", "acme", "--json")
    keys = [
        run_json(capsys, "--config", config, "--json", "keys", "create", "--account", "acme", "--name", f"k{i}")
        for i in range(3)
    ]
    if len({key["prefix"] for key in keys}) < 3:
        pytest.skip("two random keys share a display prefix")  # 1 in ~20,000
    by_prefix = run_json(capsys, "--config", config, "--json", "keys", "revoke", keys[0]["prefix"])
    assert by_prefix["revoked"]["id"] == keys[0]["id"]
    by_id = run_json(capsys, "--config", config, "--json", "keys", "revoke", str(keys[1]["id"]))
    assert by_id["revoked"]["id"] == keys[1]["id"]
    capsys.readouterr()
    assert main(["--config", config, "keys", "revoke", keys[2]["key"]]) == 0
    said = capsys.readouterr().out
    assert f"revoked key {keys[2]['id']}" in said and keys[2]["key"] not in said
    assert run_json(capsys, "--config", config, "--json", "keys", "list")["keys"] == []

    error = refused(capsys, "--config", config, "keys", "revoke", keys[2]["key"])
    assert "no key matches the given key" in error and keys[2]["key"] not in error
    assert "no key matches '999999'" in refused(capsys, "--config", config, "keys", "revoke", "999999")


def test_cli_keys_revoke_refuses_an_ambiguous_prefix(
    config: str, capsys: pytest.CaptureFixture[str], backend: Backend
) -> None:
    run_json(capsys, "--config", config, "accounts", "create", "acme", "--json")
    keys = [
        run_json(capsys, "--config", config, "--json", "keys", "create", "--account", "acme", "--name", f"k{i}")
        for i in range(2)
    ]
    # Sixteen possible first characters for two keys: give them the same one by hand.
    import asyncio

    from sqlalchemy import update

    from gateway.db import create_engine
    from keys.models import ApiKey

    async def same_prefix() -> None:
        engine = create_engine(backend.database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(update(ApiKey).values(prefix="prx-abcd"))
        finally:
            await engine.dispose()

    asyncio.run(same_prefix())
    error = refused(capsys, "--config", config, "keys", "revoke", "prx-ab")
    assert "matches 2 keys" in error and "give the key id" in error
    assert len(run_json(capsys, "--config", config, "--json", "keys", "list")["keys"]) == len(keys)


def test_cli_account_by_name_or_id_and_clear_errors(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    acme = run_json(capsys, "--config", config, "--json", "accounts", "create", "acme", "--credits", "3")
    granted = run_json(capsys, "--config", config, "--json", "credits", "grant", "acme", "2")
    assert granted["account_id"] == acme["id"] and granted["balance"] == "5"
    status = run_json(capsys, "--config", config, "--json", "accounts", "set-status", "ACME", "suspended")
    assert status["id"] == acme["id"]  # a name in another case, when only one account has it
    by_id = run_json(
        capsys, "--config", config, "--json", "keys", "create", "--account", str(acme["id"]), "--name", "x"
    )
    assert by_id["account_id"] == acme["id"]

    assert "no account with id or name 'nobody'" in refused(
        capsys, "--config", config, "keys", "create", "--account", "nobody", "--name", "x"
    )
    # An account whose name is another account's id, and two names that differ only in case.
    run_json(capsys, "--config", config, "--json", "accounts", "create", str(acme["id"]))
    error = refused(capsys, "--config", config, "members", "setup-link", "--account", str(acme["id"]))
    assert "ambiguous" in error and "give the id" in error
    run_json(capsys, "--config", config, "--json", "accounts", "create", "Beta")
    run_json(capsys, "--config", config, "--json", "accounts", "create", "BETA")
    assert "ambiguous" in refused(capsys, "--config", config, "keys", "list", "--account", "beta")
    exact = run_json(capsys, "--config", config, "--json", "keys", "list", "--account", "Beta")
    assert exact["keys"] == []


def test_cli_refuses_to_create_an_empty_database_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("TOLLWAY_CONFIG", "TOLLWAY_DATABASE_URL", "TOLLWAY_REDIS_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    for argv in (["keys", "list"], ["accounts", "list"], ["keys", "create", "--account", "1", "--name", "x"]):
        error = refused(capsys, *argv)
        assert f"no database at {tmp_path.resolve() / 'tollway.db'}" in error
        assert "run from the directory where you ran `tollway serve`" in error
        assert "TOLLWAY_DATABASE_URL" in error
    assert not (tmp_path / "tollway.db").exists()
    # migrate (like serve) may create it; then the same command works.
    assert main(["migrate"]) == 0
    capsys.readouterr()
    assert main(["keys", "list"]) == 0 and capsys.readouterr().out.strip() == "no keys"

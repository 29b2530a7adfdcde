"""Running the ``tollway`` CLI in-process against a test backend: a config file naming the
backend's database and Redis (migrated), and helpers that capture a command's JSON or refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from tests.fakes.gateway_fixtures import Backend


@pytest.fixture
def config(backend: Backend, tmp_path: Path) -> str:
    path = tmp_path / "tollway.toml"
    path.write_text(f'database_url = "{backend.database_url}"\nredis_url = "{backend.redis_url}"\n')
    assert main(["--config", str(path), "migrate"]) == 0
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return dict(json.loads(capsys.readouterr().out))


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The command exits 2 with its reason on stderr and nothing on stdout."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err

"""``tollway serve`` tells the truth at startup: one line and a non-zero exit for what stops it,
a warning for what it serves anyway, and the banner only once its URL answers. The real process,
because a traceback or a premature banner is what an operator would see."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_serve_first_run import REPO, stop
from tests.fakes.servers import free_port

STARTUP_FAILURE = 3


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update({"PYTHONPATH": str(REPO), **extra})
    return env


def serve_failing(workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``tollway serve`` expecting it to give up on its own."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=workdir,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tollway: ")
    return lines[0]


def test_startup_port_in_use_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_failing(tmp_path, TOLLWAY_PORT=str(port))
    assert result.returncode == STARTUP_FAILURE
    assert f"127.0.0.1:{port}" in one_line(result) and "already in use" in result.stderr
    # The port is checked first: no database was made, so no first-run key was spent unseen.
    assert not (tmp_path / "tollway.db").exists()
    assert result.stdout == ""


def test_startup_unreachable_database_is_one_line(tmp_path: Path) -> None:
    closed = free_port()
    result = serve_failing(
        tmp_path,
        TOLLWAY_PORT=str(free_port()),
        TOLLWAY_DATABASE_URL=f"postgresql+asyncpg://tollway:s3cret-pw@127.0.0.1:{closed}/tollway",
    )
    assert result.returncode == STARTUP_FAILURE
    line = one_line(result)
    assert "cannot reach the database" in line and f"127.0.0.1:{closed}" in line
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_startup_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    closed = free_port()
    result = serve_failing(
        tmp_path, TOLLWAY_PORT=str(free_port()), TOLLWAY_REDIS_URL=f"redis://:r3dis-pw@127.0.0.1:{closed}/0"
    )
    assert result.returncode == STARTUP_FAILURE
    line = one_line(result)
    assert "cannot reach Redis" in line and f"127.0.0.1:{closed}" in line
    assert "r3dis-pw" not in result.stderr + result.stdout
    assert result.stdout == ""  # no banner, no key


def test_startup_unreachable_redis_cluster_is_one_line(tmp_path: Path) -> None:
    """Every seed of a cluster URL closed: redis-py's own exception (not a RedisError) is still
    the one line, not a traceback."""
    closed, also_closed = free_port(), free_port()
    url = f"redis+cluster://:r3dis-pw@127.0.0.1:{closed},127.0.0.1:{also_closed}"
    result = serve_failing(tmp_path, TOLLWAY_PORT=str(free_port()), TOLLWAY_REDIS_URL=url)
    assert result.returncode == STARTUP_FAILURE
    line = one_line(result)
    assert "cannot reach Redis" in line and f"127.0.0.1:{closed}" in line
    assert "r3dis-pw" not in result.stderr + result.stdout


def test_startup_bad_log_level_is_one_line(tmp_path: Path) -> None:
    result = serve_failing(tmp_path, TOLLWAY_PORT=str(free_port()), TOLLWAY_LOG_LEVEL="loud")
    assert result.returncode == 2
    line = one_line(result)
    assert "log_level" in line and "'loud'" in line


# --- a server that starts ------------------------------------------------------------------


class Served:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []
        self.health_when_announced: int | None = None


def _start(workdir: Path, port: int, banner: str, *args: str, **env: str) -> Served:
    """Start ``tollway serve``; when the line containing ``banner`` is read, ask /healthz at once."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args, "serve"],
        cwd=workdir,
        env=_env(TOLLWAY_PORT=str(port), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one pipe keeps uvicorn's log lines and the banner in order
        text=True,
    )
    served = Served(process, port)
    announced = threading.Event()

    def read() -> None:
        for line in process.stdout or ():
            served.lines.append(line)
            if banner in line and not announced.is_set():
                try:
                    served.health_when_announced = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code
                finally:
                    announced.set()
        announced.set()

    threading.Thread(target=read, daemon=True).start()
    if not announced.wait(120) or served.health_when_announced is None:
        process.kill()
        pytest.fail("no banner:\n" + "".join(served.lines))
    return served


@pytest.fixture
def stopping() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            stop(process)


def _startup_completions_before(lines: list[str], banner: str) -> int:
    text = "".join(lines)
    return text[: text.index(banner)].count("Application startup complete")


def test_startup_banner_comes_after_the_server_answers(tmp_path: Path, stopping: list[subprocess.Popen[str]]) -> None:
    served = _start(tmp_path, free_port(), "Tollway is ready")
    stopping.append(served.process)
    assert served.health_when_announced == 200
    # The banner follows the app's startup (lifespan done, socket served), never precedes it.
    assert _startup_completions_before(served.lines, "Tollway is ready") == 1
    text = "".join(served.lines)
    assert f"Database: {(tmp_path / 'tollway.db').resolve()}" in text


def test_startup_banner_waits_for_every_worker(
    tmp_path: Path, postgres_url: str, redis_url: str, stopping: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "{postgres_url}"\nredis_url = "{redis_url}"\nredis_prefix = "twtest:{port}:"\nworkers = 2\n'
    )
    served = _start(tmp_path, port, '"key"', "--config", str(config), "--json")
    stopping.append(served.process)
    assert served.health_when_announced == 200
    assert _startup_completions_before(served.lines, '"key"') == 2


def test_startup_warns_of_unpriced_models_unset_keys_and_the_demo(
    tmp_path: Path, stopping: list[subprocess.Popen[str]]
) -> None:
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path}/tollway.db"\nbootstrap = false\n\n'
        '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key_env = "TOLLWAY_TEST_NEVER_SET_KEY"\n\n'
        '[models."up/mystery"]\nprovider = "up"\nupstream_model = "mystery-model-without-a-price"\n\n'
        '[models."up/priced"]\nprovider = "up"\nupstream_model = "gpt-4o-mini"\n'
        'input_per_mtok = "0.15"\noutput_per_mtok = "0.60"\n'
    )
    served = _start(tmp_path, free_port(), "Tollway listening", "--config", str(config))
    stopping.append(served.process)
    # The first three are the configuration's (a first start also notes the key file it made).
    warnings = [line for line in served.lines if line.startswith("tollway: warning: ")][:3]
    assert len(warnings) == 3, "".join(served.lines)
    assert "models.'up/mystery'" in warnings[0] and "hidden" in warnings[0]
    assert "$TOLLWAY_TEST_NEVER_SET_KEY is not set" in warnings[1]
    assert "demo_provider is on next to real providers (up)" in warnings[2]
    # And the server serves anyway: the unpriced model is hidden, the priced one listed.
    assert served.health_when_announced == 200

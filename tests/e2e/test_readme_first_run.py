"""The README's first command, as a newcomer runs it: a fresh venv, install, serve, one call.

The command is read from the README itself, so the test fails if the README drifts. It
installs the project into a new virtual environment (minutes, not seconds: marked slow) and
runs in an empty directory, exactly like a first run on a fresh machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.DOTALL)[:2]


def test_readme_starts_with_install_and_test_commands() -> None:
    first, second = readme_commands()
    assert "tollway serve" in first and "pip install" in first
    assert second == "bash scripts/test"
    script = (REPO / "scripts" / "test").read_text()
    assert "pip install" in script and "pytest" in script and "npm ci" in script


@pytest.mark.slow
def test_readme_first_command_serves_a_real_call(tmp_path: Path) -> None:
    first = readme_commands()[0]
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    # A newcomer runs it inside a checkout; copy the tracked sources instead of building in place.
    checkout = workdir / "tollway"
    shutil.copytree(
        REPO,
        checkout,
        ignore=shutil.ignore_patterns(".git", ".venv", "venv", "*.db*", "__pycache__", ".*_cache", "node_modules"),
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update({"TOLLWAY_PORT": str(port), "PYTHON": sys.executable})
    command = first.replace("python3 ", f"{sys.executable} ", 1)
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        key = _wait_for_key(process, output, deadline=time.monotonic() + 480)
        # Keep reading so the server never blocks on a full pipe.
        threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True).start()
        _wait_until_up(port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="demo/echo", messages=[{"role": "user", "content": "Hello, Tollway"}]
        )
        assert reply.choices[0].message.content == "Hello, Tollway"
        assert float(reply.model_extra["_tollway"]["credits_used"]) > 0  # type: ignore[index]
        assert (checkout / "tollway.db").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _wait_for_key(process: subprocess.Popen[str], output: list[str], deadline: float) -> str:
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                pytest.fail("the README command exited:\n" + "".join(output[-60:]))
            continue
        output.append(line)
        match = re.search(r"\b(prx-[0-9a-f]{48})\b", line)
        if match:
            return match.group(1)
    pytest.fail("no key printed in time:\n" + "".join(output[-60:]))


def _wait_until_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("the gateway did not come up")

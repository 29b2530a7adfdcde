"""``tollway serve`` on an empty directory: migrate, bootstrap, print a working key once."""

from __future__ import annotations

import os
import re
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


def serve(workdir: Path, port: int, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``tollway [args] serve`` in ``workdir`` and wait until it answers /healthz."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update({"TOLLWAY_PORT": str(port), "PYTHONPATH": str(REPO)})
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args, "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("tollway serve did not come up:\n" + "".join(lines))
    # The banner follows the server's readiness (with workers: every worker's), so it may come
    # a moment after the first answer.
    while time.monotonic() < deadline:
        if any(line.startswith(("Tollway ", '{"url"')) for line in lines):
            return process, lines
        time.sleep(0.05)
    process.kill()
    pytest.fail("tollway serve announced nothing:\n" + "".join(lines))


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_serve_first_run_bootstraps_and_prints_key_once(tmp_path: Path) -> None:
    port = free_port()
    process, lines = serve(tmp_path, port)
    try:
        text = "".join(lines)
        key = re.search(r"prx-[0-9a-f]{48}", text)
        assert key is not None, text
        assert "curl" in text and "OpenAI(" in text and "500 credits" in text
        # Next to the key: the one-time link where the owner chooses a dashboard sign-in.
        setup = re.search(rf"http://127\.0\.0\.1:{port}/setup\?token=twinv_[\w-]+", text)
        assert setup is not None, text
        page = httpx.get(setup.group(0))
        assert page.status_code == 200 and 'name="password_again"' in page.text
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(0), max_retries=0)
        stream = client.chat.completions.create(
            model="demo/lorem", messages=[{"role": "user", "content": "write"}], max_tokens=12, stream=True
        )
        words = "".join(c.choices[0].delta.content or "" for c in stream if c.choices).split()
        assert words[:3] == ["Lorem", "ipsum", "dolor"] and len(words) == 12
    finally:
        stop(process)
    assert (tmp_path / "tollway.db").exists()

    process, lines = serve(tmp_path, port)  # second start: same database, no new key
    try:
        time.sleep(0.2)
        assert not re.search(r"prx-[0-9a-f]{48}", "".join(lines))
        assert "listening" in "".join(lines)
    finally:
        stop(process)


def test_serve_two_workers_share_postgres_and_redis(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    """``--workers 2`` on Postgres + Redis: the workers serve calls with the bootstrap key."""
    port = free_port()
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "{postgres_url}"\nredis_url = "{redis_url}"\nredis_prefix = "twtest:{port}:"\nworkers = 2\n'
    )
    process, lines = serve(tmp_path, port, "--config", str(config), "--json")
    try:
        announced = next(line for line in lines if '"key"' in line)
        assert '"setup_url": "http://' in announced
        key = re.search(r"prx-[0-9a-f]{48}", announced)
        assert key is not None, "".join(lines)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(0), max_retries=3)
        replies = [
            client.chat.completions.create(model="demo/echo", messages=[{"role": "user", "content": f"n{i}"}])
            for i in range(20)
        ]
        assert [r.choices[0].message.content for r in replies] == [f"n{i}" for i in range(20)]
    finally:
        stop(process)

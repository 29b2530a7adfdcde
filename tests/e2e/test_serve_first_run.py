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


def serve(workdir: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update({"TOLLWAY_PORT": str(port), "PYTHONPATH": str(REPO)})
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
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
                return process, lines
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("tollway serve did not come up:\n" + "".join(lines))


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

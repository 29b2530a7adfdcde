"""Two gateway processes on one Postgres and one Redis: revocations reach both within a second."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.gateway_fixtures import ADMIN_TOKEN
from tests.fakes.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CHAT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def two_gateways(tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str) -> Iterator[list[str]]:
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "{postgres_url}"\nredis_url = "{redis_url}"\nredis_prefix = "{redis_prefix}"\n'
        f'bootstrap = false\nadmin_token = "{ADMIN_TOKEN}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env["PYTHONPATH"] = str(REPO)
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("gateways did not start")
                time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_refused(url: str, key: str, seconds: float) -> float:
    """Poll until ``key`` is refused on ``url``; return how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if httpx.post(url + "/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 401:
            return time.monotonic() - started
        time.sleep(0.02)
    pytest.fail(f"still accepted after {seconds} s")


def test_two_processes_deleted_key_and_its_tokens_die_everywhere(two_gateways: list[str]) -> None:
    first, second = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    account = httpx.post(first + "/api/admin/accounts/", json={"name": "acme", "credits": "50"}, headers=admin).json()
    assert account["balance"] == "50"
    # A key to manage with, and the key we will delete, with a browser token minted from it.
    manager = httpx.post(
        first + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "backend"}, headers=admin
    ).json()["key"]
    victim = httpx.post(first + "/api/keys/", json={"name": "victim"}, headers=auth(manager)).json()
    token = httpx.post(
        first + "/api/keys/ephemeral/", json={"key_id": victim["id"], "ttl": 600}, headers=auth(manager)
    ).json()["data"]["token"]
    for url in two_gateways:  # both processes have resolved (and cached) the key and the token
        for credential in (victim["key"], token):
            response = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=auth(credential))
            assert response.status_code == 200, response.text
    assert httpx.delete(first + f"/api/keys/{victim['id']}/", headers=auth(manager)).status_code == 204
    assert wait_refused(second, victim["key"], seconds=1.5) <= 1.05
    assert wait_refused(second, token, seconds=1.5) <= 1.05
    assert wait_refused(first, token, seconds=0.5) <= 0.5


def test_two_processes_a_price_override_reaches_both_and_bills_at_once(two_gateways: list[str]) -> None:
    first, second = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    account = httpx.post(first + "/api/admin/accounts/", json={"name": "acme", "credits": "50"}, headers=admin).json()
    key = httpx.post(first + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "k"}, headers=admin).json()

    def echo_price(url: str) -> str:
        return str(
            httpx.get(url + "/v1/models/demo/echo", headers=auth(key["key"])).json()["pricing"]["input_per_mtok"]
        )

    assert echo_price(first) == echo_price(second) == "150"
    bad = httpx.put(first + "/api/admin/models/demo/echo", json={"input_per_mtok": "x"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input_per_mtok"
    partial = httpx.put(first + "/api/admin/models/demo/echo", json={"input_per_mtok": "1"}, headers=admin)
    assert partial.status_code == 400  # a text model needs an output price too
    assert httpx.put(first + "/api/admin/models/nope/x", json={}, headers=admin).status_code == 400
    changed = httpx.put(
        first + "/api/admin/models/demo/echo", json={"input_per_mtok": "2", "output_per_mtok": "4"}, headers=admin
    )
    assert changed.status_code == 200 and changed.json()["pricing"]["input_per_mtok"] == "2000"
    assert echo_price(first) == "2000"  # the process that took the change applies it at once
    started = time.monotonic()
    while echo_price(second) != "2000":
        assert time.monotonic() - started < 6, "the other process never saw the new price"
        time.sleep(0.1)
    listing = httpx.get(first + "/api/admin/models/", headers=admin).json()["models"]
    assert {m["id"]: m["price_override"] for m in listing}["demo/echo"] is True
    assert httpx.delete(first + "/api/admin/models/demo/echo", headers=admin).status_code == 204
    assert echo_price(first) == "150"

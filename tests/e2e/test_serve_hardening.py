"""``tollway serve`` as shipped: what uvicorn itself must not do (trust forwarded headers, wait
for ever for slow headers). These run the real process because that is where the bugs lived."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_serve_first_run import serve, stop
from tests.fakes.gateway_fixtures import ADMIN_TOKEN
from tests.fakes.servers import free_port

CHAT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path}/tollway.db"\nbootstrap = false\n'
        f'admin_token = "{ADMIN_TOKEN}"\nheader_timeout_s = 1.0\n'
    )
    process, _lines = serve(tmp_path, port, "--config", str(config))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def _key_limited_to(url: str, manager: str, address: str) -> str:
    created = httpx.post(
        url + "/api/keys/",
        json={"name": f"only {address}", "allowed_ips": [address]},
        headers={"Authorization": f"Bearer {manager}"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def test_serve_ignores_x_forwarded_for_without_trusted_proxies(served: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    account = httpx.post(served + "/api/admin/accounts/", json={"name": "acme", "credits": "50"}, headers=admin).json()
    manager = httpx.post(
        served + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "backend"}, headers=admin
    ).json()["key"]
    elsewhere = _key_limited_to(served, manager, "10.9.9.9")
    local = _key_limited_to(served, manager, "127.0.0.1")

    def chat(key: str, **headers: str) -> httpx.Response:
        return httpx.post(
            served + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}", **headers}
        )

    # trusted_proxies = []: the header is the caller's own claim, and the peer is 127.0.0.1.
    forged = chat(elsewhere, **{"X-Forwarded-For": "10.9.9.9"})
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "ip_not_allowed"
    assert chat(local, **{"X-Forwarded-For": "10.9.9.9"}).status_code == 200
    assert chat(local).status_code == 200


def _closed_within(sock: socket.socket, seconds: float, drip: bytes) -> bool:
    """Send ``drip`` a byte at a time until the server closes the connection or time runs out."""
    sock.settimeout(0.2)
    started = time.monotonic()
    for byte in drip:
        if time.monotonic() - started > seconds:
            return False
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            return True
    return False


def test_serve_cuts_off_a_client_that_sends_headers_slowly(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        # header_timeout_s is 1 s; allow ten times that on a busy machine, then call it a hang.
        assert _closed_within(sock, 10.0, b"X-Slow: " + b"a" * 1000)
    # A prompt client on a fresh connection is served, and a keep-alive connection that idles
    # between two prompt requests is not mistaken for a slow one.
    with httpx.Client(base_url=served) as client:
        assert client.get("/healthz").status_code == 200
        time.sleep(0.3)
        assert client.get("/healthz").status_code == 200


def test_serve_refuses_oversized_headers(served: str) -> None:
    response = httpx.get(served + "/healthz", headers={"X-Big": "a" * 70_000})
    assert response.status_code == 431

"""A real browser: Debian's Chromium, driven by Playwright, runs the official ``openai`` JS package.

The page is served from one 127.0.0.1 port and calls the gateway on another with a ``bt-``
token minted by a "backend" (this test), exactly as docs/product-rules.md's browser flow describes. The
call succeeds from an allowed origin, fails from a disallowed one, and after the token expires
the page sees a 401 it can read (CORS on errors) and act on.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_fixtures import Gateway
from tests.fakes.servers import free_port

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def page_server() -> Iterator[int]:
    if not (BROWSER_DIR / "node_modules" / "openai" / "index.mjs").exists():
        pytest.fail("tests/browser/node_modules is missing: run `npm ci` in tests/browser (CI does)")
    port = free_port()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(_PageHandler, directory=str(BROWSER_DIR))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield port
    finally:
        server.shutdown()


@pytest.fixture
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed (apt-get install chromium; CI does)")
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield instance
        finally:
            instance.close()


def open_page(browser: Any, url: str) -> Any:
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("window.callGateway !== undefined", timeout=15_000)
    return page


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_browser_bt_token_allowed_origin_disallowed_origin_and_expiry(
    gateway: Gateway, page_server: int, browser: Any
) -> None:
    headers = {"Authorization": f"Bearer {gateway.key}"}
    parent = httpx.post(
        gateway.url + "/api/keys/",
        json={"name": "browser", "allowed_origins": [f"127.0.0.1:{page_server}"], "allowed_models": ["demo/echo"]},
        headers=headers,
    ).json()

    def mint(ttl: int) -> str:
        response = httpx.post(
            gateway.url + "/api/keys/ephemeral/", json={"key_id": parent["id"], "ttl": ttl}, headers=headers
        )
        return str(response.json()["data"]["token"])

    query = f"?gateway={gateway.url}"
    allowed = open_page(browser, f"http://127.0.0.1:{page_server}/index.html{query}")
    # Same files, another origin: the key allows 127.0.0.1 on the page's port, not localhost.
    other = open_page(browser, f"http://localhost:{page_server}/index.html{query}")

    token = mint(ttl=60)  # a minute: "still valid" holds on a busy machine; the clock skips the rest
    ok = allowed.evaluate("token => window.callGateway(token)", token)
    assert ok == {"ok": True, "content": "hello from the browser", "credits": ok["credits"]}
    assert float(ok["credits"]) > 0

    refused = other.evaluate("token => window.callGateway(token)", token)
    assert (refused["ok"], refused["status"], refused["code"]) == (False, 403, "origin_not_allowed")

    gateway.clock.advance(60.1)
    expired = allowed.evaluate("token => window.callGateway(token)", token)
    assert (expired["ok"], expired["status"], expired["code"]) == (False, 401, "token_expired")
    fresh = allowed.evaluate("token => window.callGateway(token)", mint(ttl=60))
    assert fresh["ok"] is True

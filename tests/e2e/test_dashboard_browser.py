"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, through the real app.

One gateway and one browser for the module (SQLite + embedded counters: the pages are the same
on both backends, and the non-browser tests in tests/integration/test_dashboard_pages.py run on
both). The tests run in file order and build on each other like a person would: the owner signs
in, creates a key and calls it with the official OpenAI SDK, restricts it and sees the call
refused, mints a test token, watches usage and balance move, invites a viewer; the viewer sees no
management buttons and the server refuses the forced requests. Then axe-core checks every page
in both themes, and the main pages are photographed at desktop and phone width into
``$TOLLWAY_SCREENSHOTS`` (default: a temporary directory; ``scripts/screenshots`` points it at
docs/screenshots/).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from billing.models import UsageRecord
from tests.fakes.gateway_fixtures import (
    ADMIN_TOKEN,
    FAKE_MODEL,
    Backend,
    Gateway,
    _with_session,
    gateway_settings,
    start_gateway,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

pytestmark = pytest.mark.slow

AXE = Path(__file__).resolve().parents[1] / "browser" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OWNER = ("owner@acme.test", "correct horse battery staple")
VIEWER = ("viewer@acme.test", "a viewer's long passphrase")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
MAIN_PAGES = ["keys", "usage", "credits", "models", "team"]


@dataclass
class Dashboard:
    gateway: Gateway
    browser: Any
    owner: Any = None  # the owner's page (one browser context, signed in)
    viewer: Any = None
    shared: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.gateway.url + path


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed (apt-get install chromium; CI does)")
    if not AXE.exists():
        pytest.fail("tests/browser/node_modules is missing: run `npm ci` in tests/browser (CI does)")
    fake = FakeOpenAI()
    upstream = ThreadedServer(fake).start()
    fake.url = upstream.url  # type: ignore[attr-defined]
    directory = tmp_path_factory.mktemp("dashboard")
    backend = Backend("sqlite", f"sqlite+aiosqlite:///{directory}/tollway.db", "", "dash:")
    # Plain http on 127.0.0.1: cookies without Secure, as an operator developing locally sets it.
    settings = gateway_settings(backend, fake, session_cookie_secure=False)
    gateway, server = start_gateway(settings, fake)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            )
            try:
                yield Dashboard(gateway, browser)
            finally:
                browser.close()
    finally:
        server.stop()
        upstream.stop()


def new_page(dashboard: Dashboard, **options: Any) -> Any:
    context = dashboard.browser.new_context(
        viewport=DESKTOP, bypass_csp=True, permissions=["clipboard-read", "clipboard-write"], **options
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    return page


def sign_in(page: Any, base: str, email: str, password: str) -> None:
    page.goto(base + "/keys")
    assert "/login" in page.url  # not signed in yet: the page sends us to sign in
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/keys$"))


def sdk(dashboard: Dashboard, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=dashboard.gateway.v1, api_key=key, max_retries=0, timeout=20)


def key_row(page: Any, name: str) -> Any:
    return page.locator("#keys-table tbody tr", has=page.locator(".key-name", has_text=name))


def test_dashboard_sign_in_create_a_key_and_call_it_with_the_openai_sdk(dashboard: Dashboard) -> None:
    added = httpx.post(
        dashboard.url(f"/api/admin/accounts/{dashboard.gateway.account_id}/members/"),
        json={"email": OWNER[0], "password": OWNER[1]},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert added.status_code == 201, added.text
    page = dashboard.owner = new_page(dashboard)
    sign_in(page, dashboard.gateway.url, *OWNER)
    assert page.get_by_role("heading", level=1).inner_text() == "Keys"

    page.get_by_role("link", name="Create key").click()
    dialog = page.locator("dialog#modal")
    dialog.get_by_label("Name").fill("sdk key")
    dialog.get_by_role("button", name="Create key").click()
    shown = dialog.locator("#new-key")
    key = shown.input_value()
    assert key.startswith("prx-")
    dialog.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == key
    dialog.get_by_role("button", name="Done").click()
    assert not dialog.is_visible()
    key_row(page, "sdk key").wait_for()  # the table refreshed itself
    dashboard.shared["key"] = key

    reply = sdk(dashboard, key).chat.completions.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": "hello from the dashboard"}]
    )
    assert reply.choices[0].message.content


def test_dashboard_restricting_a_key_refuses_the_call_and_shows_field_errors(dashboard: Dashboard) -> None:
    page = dashboard.owner
    dialog = page.locator("dialog#modal")
    key_row(page, "sdk key").get_by_role("link", name="Settings").click()
    # A wrong value: the service's message appears next to its field, nothing is saved.
    dialog.locator("input.chip-input").first.wait_for()  # the list fields became chips
    ips = dialog.get_by_label("Allowed IPs")
    ips.fill("not-an-ip")
    ips.press("Enter")
    dialog.get_by_role("button", name="Save").click()
    error = dialog.locator("#e-allowed_ips")
    error.wait_for()
    assert "not-an-ip" in error.inner_text() or "IP" in error.inner_text()
    dialog.get_by_role("button", name="Remove not-an-ip").click()

    models = dialog.get_by_label("Allowed models")
    models.fill("fake/some-other-model")
    models.press("Enter")
    assert dialog.locator(".chip", has_text="fake/some-other-model").is_visible()
    dialog.get_by_role("button", name="Save").click()
    page.locator("#flash", has_text="Saved").wait_for()
    assert not dialog.is_visible()

    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(dashboard, dashboard.shared["key"]).chat.completions.create(
            model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.code == "model_not_allowed"


def test_dashboard_mints_a_test_token_with_a_browser_snippet(dashboard: Dashboard) -> None:
    page = dashboard.owner
    dialog = page.locator("dialog#modal")
    key_row(page, "test key").get_by_role("link", name="Test token").click()
    dialog.get_by_label("Valid for").select_option("600")
    dialog.get_by_role("button", name="Mint token").click()
    token = dialog.locator("#bt-token").input_value()
    assert re.fullmatch(r"bt-[0-9a-f]+", token)
    assert token in dialog.locator("#bt-snippet").input_value()
    reply = sdk(dashboard, token).chat.completions.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    dialog.press("Escape")  # the native dialog closes with Escape, focus returns to the opener
    assert not dialog.is_visible()
    # Focus comes back with the dialog's close, a moment after it hides on a loaded machine (CI
    # once read <body> in between): waited for, not read once.
    page.wait_for_function("document.activeElement && document.activeElement.textContent === 'Test token'")


def test_dashboard_usage_row_and_balance_move_after_a_call(dashboard: Dashboard) -> None:
    page = dashboard.owner
    page.goto(dashboard.url("/credits"))
    before = page.locator("#balance").inner_text()
    client = sdk(dashboard, dashboard.gateway.key)
    client.chat.completions.create(
        model=FAKE_MODEL,
        messages=[{"role": "user", "content": "metered"}],
        extra_headers={"X-Tollway-User-Id": "customer-42"},
    )
    page.reload()
    assert page.locator("#balance").inner_text() != before
    page.goto(dashboard.url("/usage"))
    rows = page.locator("#usage-table tbody tr")
    newest = rows.first
    assert newest.locator(".end-user").inner_text() == "customer-42"
    assert FAKE_MODEL in newest.inner_text()
    assert rows.nth(1).locator(".end-user").inner_text() == "—"  # the earlier calls sent no end user
    assert page.locator("figure.chart svg").count() == 2
    page.get_by_label("End user").fill("customer-42")
    page.get_by_role("button", name="Apply").click()
    assert page.locator("#usage-table tbody tr").count() == 1


def test_dashboard_invite_a_viewer_who_sees_no_management_and_is_refused(dashboard: Dashboard) -> None:
    page = dashboard.owner
    page.goto(dashboard.url("/team"))
    page.get_by_label("Email").fill(VIEWER[0])
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Invite").click()
    link = page.locator("#invite-link").input_value()
    assert "/invite?token=twinv_" in link

    viewer = dashboard.viewer = new_page(dashboard)
    viewer.goto(link)
    viewer.get_by_label("Password").fill(VIEWER[1])
    viewer.get_by_role("button", name="Accept the invitation").click()
    viewer.wait_for_url(re.compile(r"/keys$"))
    assert viewer.locator(".badge", has_text="viewer").is_visible()
    for label in ("Create key", "Settings", "Delete", "Test token"):
        assert viewer.get_by_role("link", name=label).count() == 0, label
    viewer.goto(dashboard.url("/team"))
    assert viewer.get_by_role("button", name="Invite").count() == 0
    assert viewer.get_by_role("button", name="Change").count() == 0
    viewer.goto(dashboard.url("/credits"))
    assert viewer.get_by_role("button", name="Save").count() == 0

    # Forcing the requests with the viewer's own session and CSRF token: the server refuses.
    csrf = next(c["value"] for c in viewer.context.cookies() if c["name"] == "tw_csrf")
    api = viewer.context.request
    forced = {
        "/keys/": {"name": "sneaky", "_csrf": csrf},
        "/keys/1/settings": {"name": "renamed", "_csrf": csrf},
        "/keys/1/delete": {"_csrf": csrf},
        "/keys/1/token": {"ttl": "60", "_csrf": csrf},
        "/team/invite": {"email": "x@acme.test", "role": "admin", "_csrf": csrf},
        "/credits/threshold": {"low_credits_threshold": "1", "_csrf": csrf},
        "/credits/webhook-secret/rotate": {"_csrf": csrf},
    }
    for path, form in forced.items():
        answer = api.post(dashboard.url(path), form=form, max_redirects=0)
        assert answer.status == 403, (path, answer.status, answer.text()[:200])
    as_api = api.post(dashboard.url("/api/keys/"), data={"name": "sneaky"}, headers={"x-csrf-token": csrf})
    assert as_api.status == 403
    # Without the CSRF token even the owner's forms are refused.
    owner_api = dashboard.owner.context.request
    assert owner_api.post(dashboard.url("/keys/"), form={"name": "no csrf"}, max_redirects=0).status == 403


def test_dashboard_models_are_searched_as_you_type(dashboard: Dashboard) -> None:
    page = dashboard.owner
    page.goto(dashboard.url("/models"))
    rows = page.locator("#models-rows tr")
    assert rows.count() >= 3
    page.get_by_role("searchbox", name="Search").fill("lorem")  # htmx asks the server for the matching rows
    page.wait_for_function("document.querySelectorAll('#models-rows tr').length === 1")
    assert "demo/lorem" in rows.first.inner_text() and "text" in rows.first.inner_text()


def test_dashboard_reads_and_writes_with_javascript_off(dashboard: Dashboard) -> None:
    page = new_page(dashboard, java_script_enabled=False)
    sign_in(page, dashboard.gateway.url, *OWNER)
    for name in MAIN_PAGES:
        page.goto(dashboard.url(f"/{name}"))
        assert page.get_by_role("heading", level=1).inner_text() == name.capitalize()
    assert page.locator("figure.chart svg").count() == 0  # on /team; the charts are on /usage
    page.goto(dashboard.url("/usage"))
    assert page.locator("figure.chart svg").count() == 2
    page.goto(dashboard.url("/keys"))
    key_row(page, "test key").get_by_role("link", name="Settings").click()  # a page of its own
    page.wait_for_url(re.compile(r"/keys/\d+/settings$"))
    page.get_by_label("Description").fill("Used by the backend")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/keys$"))
    assert "Used by the backend" in key_row(page, "test key").inner_text()
    page.context.close()


def _serious(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_dashboard_pages_have_no_serious_accessibility_violations(dashboard: Dashboard, scheme: str) -> None:
    page = dashboard.owner
    page.emulate_media(color_scheme=scheme)
    found: dict[str, list[str]] = {}
    for path in [f"/{name}" for name in MAIN_PAGES] + ["/keys/new", "/keys/1/settings", "/credits/webhook-secret"]:
        page.goto(dashboard.url(path))
        assert page.evaluate("getComputedStyle(document.body).colorScheme") == scheme
        found[path] = _serious(page)
    # A dialog, open over the page.
    page.goto(dashboard.url("/keys"))
    key_row(page, "sdk key").get_by_role("link", name="Settings").click()
    page.locator("dialog#modal[open]").wait_for()
    found["/keys (settings dialog)"] = _serious(page)
    page.keyboard.press("Escape")
    signed_out = new_page(dashboard, color_scheme=scheme)
    signed_out.goto(dashboard.url("/login"))
    found["/login"] = _serious(signed_out)
    signed_out.context.close()
    assert {path: v for path, v in found.items() if v} == {}


def _seed_usage(gateway: Gateway) -> None:
    """A month of synthetic usage so the charts in the screenshots have something to draw."""

    async def work(session: Any) -> None:
        now = datetime.now(UTC)
        models = [FAKE_MODEL, "demo/echo", "openai/gpt-4o-mini"]
        for day in range(29, -1, -1):  # oldest first, so ids grow with time as they do live
            for i, model in enumerate(models):
                for n in range((day * (i + 2)) % 7 + 1):
                    session.add(
                        UsageRecord(
                            request_id=f"seed-{day}-{i}-{n}",
                            account_id=gateway.account_id,
                            key_id=1,
                            model=model,
                            provider="fake",
                            input_tokens=400 + 50 * n,
                            output_tokens=300 + 20 * i,
                            credits_micro=(i + 1) * 180_000 + n * 9_000,
                            latency_ms=300 + 40 * n,
                            end_user_id=f"user-{n}" if n % 2 else "",
                            created_at=now - timedelta(days=day, minutes=7 * n + i),
                        )
                    )
        await session.commit()

    # Playwright's sync API keeps an event loop running on this thread: seed from another one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _with_session(gateway.settings, work)).result()


def test_dashboard_screenshots_of_the_main_pages(dashboard: Dashboard) -> None:
    target = Path(os.environ.get("TOLLWAY_SCREENSHOTS") or dashboard.gateway.settings.database_url.split("///")[-1])
    if target.suffix == ".db":
        target = target.parent / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    _seed_usage(dashboard.gateway)
    page = dashboard.owner
    page.emulate_media(color_scheme="light")
    for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        for name in MAIN_PAGES:
            page.goto(dashboard.url(f"/{name}"))
            page.screenshot(path=str(target / f"{name}-{width_name}.png"))
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="dark")
    page.goto(dashboard.url("/usage"))
    page.screenshot(path=str(target / "usage-desktop-dark.png"))
    page.goto(dashboard.url("/keys"))
    key_row(page, "sdk key").get_by_role("link", name="Settings").click()
    page.locator("dialog#modal[open]").wait_for()
    page.screenshot(path=str(target / "key-settings-desktop-dark.png"))
    page.keyboard.press("Escape")
    page.emulate_media(color_scheme="light")
    shots = sorted(p.name for p in target.glob("*.png"))
    assert len(shots) >= 2 * len(MAIN_PAGES) + 2, shots

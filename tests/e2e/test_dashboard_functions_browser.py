"""The proxy-function pages in a real browser: Debian's Chromium, driven by Playwright, through the
real app (SQLite + embedded counters; tests/integration/test_dashboard_function_pages.py runs the
same pages on both backends without a browser).

The tests run in file order and build on each other: the owner creates a project, adds a secret
variable, creates a proxy function from the Brevo template pointed at the fake third-party API
(tests/fakes/third_party.py, which records what it receives), copies its URL and token from the
page, tests it from the Test drawer, downloads its code, disables it (``/fn`` refuses it),
regenerates its token (the old one is refused, the new one works); a viewer sees no management
button and the server refuses the forced requests; axe-core checks every new page (and the
drawer with a result) in both themes; the main pages are photographed at desktop and phone
width into ``$TOLLWAY_SCREENSHOTS``; last, the function is deleted through its confirmation dialog.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_dashboard_browser import AXE, CHROMIUM, DESKTOP, PHONE, Dashboard, _serious, new_page, sign_in
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Backend, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer
from tests.fakes.third_party import ThirdParty, start_third_party

pytestmark = pytest.mark.slow

OWNER = ("owner@shop.test", "correct horse battery staple")
VIEWER = ("viewer@shop.test", "a viewer's long passphrase")
SECRET = "xkeysib-0123456789abcdef"
TARGET_PATH = "/v3/smtp/email"  # on the fake third-party API, which the test settings allow


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
    third_party, third_party_server = start_third_party()
    directory = tmp_path_factory.mktemp("dashboard-fn")
    backend = Backend("sqlite", f"sqlite+aiosqlite:///{directory}/tollway.db", "", "dashfn:")
    settings = gateway_settings(backend, fake, session_cookie_secure=False)
    gateway, server = start_gateway(settings, fake)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            )
            try:
                yield Dashboard(gateway, browser, shared={"third_party": third_party})
            finally:
                browser.close()
    finally:
        server.stop()
        upstream.stop()
        third_party.release_stream()
        third_party_server.stop()


def _member(dashboard: Dashboard, email: str, password: str, role: str) -> None:
    added = httpx.post(
        dashboard.url(f"/api/admin/accounts/{dashboard.gateway.account_id}/members/"),
        json={"email": email, "password": password, "role": role},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert added.status_code == 201, added.text


def _open_menu(page: Any, name: str) -> Any:
    page.get_by_role("button", name=f"Actions for {name}").click()
    return page.get_by_role("menu", name=f"Actions for {name}")


def test_dashboard_functions_create_from_a_template(dashboard: Dashboard) -> None:
    _member(dashboard, *OWNER, "owner")
    page = dashboard.owner = new_page(dashboard)
    sign_in(page, dashboard.gateway.url, *OWNER)
    page.get_by_role("link", name="Proxy functions").click()
    page.get_by_label("Name").fill("Web shop")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/projects/\d+$"))
    tabs = page.get_by_role("navigation", name="Environments").get_by_role("listitem")
    assert tabs.all_inner_texts() == ["Development", "Production", "Staging"]
    assert page.get_by_text("No proxy functions yet").is_visible()
    dashboard.shared["project"] = page.url

    page.get_by_role("link", name="Variables").click()
    page.get_by_label("Key").fill("BREVO_API_KEY")
    page.get_by_label("Value").fill(SECRET)
    page.get_by_role("button", name="Add variable").click()
    page.locator("#variables-table", has_text="BREVO_API_KEY").wait_for()
    assert SECRET not in page.content() and "••••••••" in page.locator("#variables-table").inner_text()
    page.get_by_role("button", name="Reveal BREVO_API_KEY").click()
    assert page.locator("dialog#modal #revealed-value").input_value() == SECRET
    page.keyboard.press("Escape")

    page.goto(dashboard.shared["project"])
    page.get_by_role("link", name="Create Proxy", exact=True).click()
    page.get_by_role("searchbox", name="Search templates").fill("brevo")
    page.wait_for_function("document.querySelectorAll('#template-cards li').length === 1")
    page.get_by_role("link", name=re.compile("^Brevo")).click()
    assert page.get_by_label("Target URL").input_value() == "https://api.brevo.com/v3/smtp/email"
    page.get_by_label("Target URL").fill(dashboard.shared["third_party"].url + TARGET_PATH)
    page.get_by_label("Variable").first.select_option(label="BREVO_API_KEY")
    # A body template with a mistake: the page says so while typing.
    page.get_by_label("Pass the caller's body through as it is").uncheck()
    page.get_by_label("Body template (JSON, used when not passing through)").fill('{"sender": ')
    assert page.locator("#e-body_template").is_visible()
    page.get_by_label("Body template (JSON, used when not passing through)").fill("")
    page.get_by_label("Pass the caller's body through as it is").check()
    page.get_by_label("Limit calls per minute").check()
    page.get_by_role("button", name="Create Proxy").click()
    page.wait_for_url(re.compile(r"/projects/\d+\?env=\d+$"))
    row = page.locator("tr[data-function-id]", has_text="Brevo")
    assert "60/min" in row.inner_text() and "Template" in row.inner_text() and "Active" in row.inner_text()
    dashboard.shared["function"] = row.get_attribute("data-function-id")
    found = re.search(r"env=(\d+)", page.url)
    assert found
    dashboard.shared["env"] = found.group(1)


def test_dashboard_functions_copy_url_and_token(dashboard: Dashboard) -> None:
    page = dashboard.owner
    function_id = dashboard.shared["function"]
    page.get_by_role("button", name="Copy URL of Brevo").click()
    page.locator("#flash", has_text="Proxy URL copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == f"{dashboard.gateway.url}/fn/{function_id}"

    menu = _open_menu(page, "Brevo")
    assert menu.get_by_role("menuitem").all_inner_texts() == [
        "Edit", "Disable", "Copy Token", "Download Code", "Regenerate Token", "Delete",
    ]  # fmt: skip
    page.keyboard.press("Escape")  # closes the menu, focus back on its button
    assert page.evaluate("document.activeElement.getAttribute('aria-haspopup')") == "menu"
    _open_menu(page, "Brevo").get_by_role("menuitem", name="Copy Token").click()
    dialog = page.locator("dialog#modal")
    token = dialog.locator("#function-token").input_value()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    dialog.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == token
    dialog.get_by_role("button", name="Done").click()
    dashboard.shared["token"] = token


def _fn_call(dashboard: Dashboard, token: str) -> httpx.Response:
    """A direct call of the function, as a site's page would make it (the origins list has ``*``)."""
    return httpx.post(
        dashboard.url(f"/fn/{dashboard.shared['function']}"),
        json={"to": [{"email": "direct@example.com"}]},
        headers={"x-proxy-token": token},
    )


def _send_test(page: Any, body: str) -> Any:
    """Open the Test drawer of Brevo, send ``body``, wait for the answer; the open dialog."""
    page.get_by_role("link", name="Test Brevo").click()
    drawer = page.locator("dialog#modal[open]")
    drawer.get_by_role("heading", name="Test Proxy").wait_for()
    drawer.get_by_label("Request body (JSON)").fill(body)
    drawer.get_by_role("button", name="Send Test Request").click()
    drawer.locator("#test-status").wait_for()
    return drawer


def test_dashboard_functions_test_drawer_calls_the_third_party(dashboard: Dashboard) -> None:
    page = dashboard.owner
    fake: ThirdParty = dashboard.shared["third_party"]
    function_id = dashboard.shared["function"]
    page.get_by_role("link", name="Test Brevo").click()
    drawer = page.locator("dialog#modal[open]")
    drawer.get_by_role("heading", name="Test Proxy").wait_for()
    assert "drawer" in (drawer.get_attribute("class") or "")
    box = drawer.bounding_box()
    viewport = page.viewport_size
    assert box and viewport and abs(box["x"] + box["width"] - viewport["width"]) <= 1  # held to the right edge
    assert drawer.locator("#test-url").inner_text() == f"{dashboard.gateway.url}/fn/{function_id}"
    assert "POST" in drawer.inner_text() and "x-proxy-token: ••••••••" in drawer.inner_text()
    assert dashboard.shared["token"] not in page.content() and SECRET not in page.content()

    # Not JSON: the drawer says so and sends nothing.
    body = drawer.get_by_label("Request body (JSON)")
    body.fill('{"to": ')
    drawer.get_by_role("button", name="Send Test Request").click()
    drawer.get_by_text("Invalid JSON in request body").wait_for()
    assert body.get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "test-body"
    assert fake.received == [] and drawer.locator("#test-status").count() == 0

    body.fill('{"to": [{"email": "ada@example.com"}], "subject": "Hello"}')
    assert drawer.get_by_text("Invalid JSON in request body").is_hidden()
    drawer.get_by_role("button", name="Send Test Request").click()
    drawer.locator("#test-status").wait_for()
    assert drawer.locator("#test-status").inner_text() == "200 OK"
    assert re.fullmatch(r"\d+ ms", drawer.locator("#test-duration").inner_text())
    assert "application/json" in drawer.locator("#test-headers").inner_text()
    shown = drawer.locator("#test-response").inner_text()
    assert shown == '{\n  "ok": true,\n  "path": "/v3/smtp/email"\n}'  # the fake's answer, pretty
    # What the fake received: the body as typed, and the secret the function injected.
    assert len(fake.received) == 1
    assert fake.last.method == "POST" and fake.last.path == TARGET_PATH
    assert fake.last.json == {"to": [{"email": "ada@example.com"}], "subject": "Hello"}
    assert fake.last.headers["api-key"] == SECRET
    assert SECRET not in page.content() and dashboard.shared["token"] not in page.content()

    # Escape closes it; focus goes back to the Test button of the row.
    page.keyboard.press("Escape")
    page.locator("dialog#modal[open]").wait_for(state="detached")
    assert page.evaluate("document.activeElement.textContent") == "Test Brevo"


def test_dashboard_functions_download_code(dashboard: Dashboard) -> None:
    page = dashboard.owner
    _open_menu(page, "Brevo").get_by_role("menuitem", name="Download Code").click()
    dialog = page.locator("dialog#modal")
    dialog.get_by_role("link", name="Netlify Edge Functions").click()
    dialog.locator("a[aria-current=true]", has_text="Netlify").wait_for()
    preview = dialog.locator("#code-preview").input_value()
    assert "BREVO_API_KEY" in preview and SECRET not in preview and dashboard.shared["token"] not in preview
    with page.expect_download() as download_info:
        dialog.get_by_role("link", name="Download").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".ts")
    assert Path(download.path()).read_text() == preview
    page.keyboard.press("Escape")


def test_dashboard_functions_disable_and_regenerate_the_token(dashboard: Dashboard) -> None:
    page = dashboard.owner
    _open_menu(page, "Brevo").get_by_role("menuitem", name="Disable").click()
    page.locator("tr[data-function-id]", has_text="Disabled").wait_for()
    page.locator("#flash", has_text="rejects all incoming requests").wait_for()
    refused = _fn_call(dashboard, dashboard.shared["token"])
    assert refused.status_code == 404 and refused.json() == {"error": "Not found"}

    _open_menu(page, "Brevo").get_by_role("menuitem", name="Regenerate Token").click()
    dialog = page.locator("dialog#modal")
    assert dialog.get_by_role("heading").inner_text() == "Regenerate Token"
    assert "stop working immediately" in dialog.inner_text()
    dialog.get_by_role("button", name="Regenerate").click()
    dialog.get_by_role("heading", name="Secret token regenerated").wait_for()
    new_token = dialog.locator("#function-token").input_value()
    assert re.fullmatch(r"[0-9a-f]{64}", new_token) and new_token != dashboard.shared["token"]
    dialog.get_by_role("button", name="Done").click()
    old_token, dashboard.shared["token"] = dashboard.shared["token"], new_token

    # Edit: the form is pre-filled, with the code preview; enable it again from the menu.
    _open_menu(page, "Brevo").get_by_role("menuitem", name="Edit").click()
    page.get_by_text("Code Preview").wait_for()
    assert f"/fn/{dashboard.shared['function']}" in page.locator("#preview-url").input_value()
    page.get_by_label("Description").fill("Order confirmations")
    page.get_by_role("button", name="Update Proxy").click()
    page.wait_for_url(re.compile(r"\?env=\d+$"))
    _open_menu(page, "Brevo").get_by_role("menuitem", name="Enable").click()
    page.locator("tr[data-function-id]", has_text="Order confirmations").locator(".status.ok").wait_for()

    # Active again: the token from before Regenerate is refused, the new one goes through.
    fake: ThirdParty = dashboard.shared["third_party"]
    received = len(fake.received)
    old = _fn_call(dashboard, old_token)
    assert old.status_code == 401 and "error" in old.json()
    assert len(fake.received) == received
    works = _fn_call(dashboard, new_token)
    assert works.status_code == 200 and works.json() == {"ok": True, "path": TARGET_PATH}
    assert fake.last.headers["api-key"] == SECRET and fake.last.json == {"to": [{"email": "direct@example.com"}]}


def test_dashboard_functions_viewer_sees_no_management_and_is_refused(dashboard: Dashboard) -> None:
    _member(dashboard, *VIEWER, "viewer")
    viewer = dashboard.viewer = new_page(dashboard)
    sign_in(viewer, dashboard.gateway.url, *VIEWER)
    viewer.goto(dashboard.shared["project"])
    for label in ("Create Proxy", "Add environment", "Rename", "Clone", "Delete project"):
        assert viewer.get_by_role("link", name=label, exact=True).count() == 0, label
    menu = _open_menu(viewer, "Brevo")
    assert menu.get_by_role("menuitem").all_inner_texts() == ["Copy Token", "Download Code"]
    assert viewer.get_by_role("link", name="Test Brevo").is_visible()  # testing is for every role
    assert viewer.get_by_role("link", name="Audit log").count() == 0

    function_id = dashboard.shared["function"]
    project_id = int(dashboard.shared["project"].rsplit("/", 1)[-1])
    csrf = next(c["value"] for c in viewer.context.cookies() if c["name"] == "tw_csrf")
    api = viewer.context.request
    forced = {
        f"/functions/{function_id}/disable": {},
        f"/functions/{function_id}/regenerate": {},
        f"/functions/{function_id}/delete": {},
        f"/functions/{function_id}/edit": {"name": "hijacked"},
        f"/projects/{project_id}/delete": {},
        "/projects": {"name": "sneaky"},
    }
    for path, form in forced.items():
        answer = api.post(dashboard.url(path), form={**form, "_csrf": csrf}, max_redirects=0)
        assert answer.status == 403, (path, answer.status)
    as_api = api.post(dashboard.url(f"/api/functions/{function_id}/disable/"), headers={"x-csrf-token": csrf})
    assert as_api.status == 403
    assert api.get(dashboard.url("/audit"), max_redirects=0).status == 403


PAGES = {
    "projects": "/projects",
    "project": "{project}",
    "variables": "/environments/{env}/variables",
    "function-templates": "/environments/{env}/functions/new",
    "function-form": "/functions/{function}/edit",
    "analytics": "{project}/analytics",
    "audit": "/audit",
}


def _paths(dashboard: Dashboard) -> dict[str, str]:
    project = dashboard.shared["project"].removeprefix(dashboard.gateway.url)
    values = {"project": project, "env": dashboard.shared["env"], "function": dashboard.shared["function"]}
    return {name: path.format(**values) for name, path in PAGES.items()}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_dashboard_functions_pages_have_no_serious_accessibility_violations(dashboard: Dashboard, scheme: str) -> None:
    page = dashboard.owner
    paths = _paths(dashboard)
    page.emulate_media(color_scheme=scheme)
    found: dict[str, list[str]] = {}
    for name, path in paths.items():
        page.goto(dashboard.url(path))
        found[name] = _serious(page)
    page.goto(dashboard.shared["project"])
    _open_menu(page, "Brevo")
    found["project (menu open)"] = _serious(page)
    page.keyboard.press("Escape")
    for item in ("Download Code", "Delete"):
        _open_menu(page, "Brevo").get_by_role("menuitem", name=item).click()
        page.locator("dialog#modal[open]").wait_for()
        found[f"project ({item} dialog)"] = _serious(page)
        page.keyboard.press("Escape")
    _send_test(page, '{"subject": "axe"}')
    found["project (Test drawer with a result)"] = _serious(page)
    page.keyboard.press("Escape")
    page.emulate_media(color_scheme="light")
    assert {name: v for name, v in found.items() if v} == {}


def test_dashboard_functions_screenshots(dashboard: Dashboard) -> None:
    target = Path(os.environ.get("TOLLWAY_SCREENSHOTS") or dashboard.gateway.settings.database_url.split("///")[-1])
    if target.suffix == ".db":
        target = target.parent / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    page = dashboard.owner
    paths = _paths(dashboard)
    page.emulate_media(color_scheme="light")
    for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        for name in ("project", "function-form", "function-templates", "variables", "audit", "analytics"):
            page.goto(dashboard.url(paths[name]))
            page.screenshot(path=str(target / f"fn-{name}-{width_name}.png"), full_page=name == "function-form")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="dark")
    page.goto(dashboard.shared["project"])
    _open_menu(page, "Brevo")
    page.screenshot(path=str(target / "fn-project-menu-desktop-dark.png"))
    page.keyboard.press("Escape")
    page.emulate_media(color_scheme="light")
    _send_test(page, '{\n  "to": [{"email": "ada@example.com"}],\n  "subject": "Order #1042 confirmed"\n}')
    page.locator("#test-response").scroll_into_view_if_needed()  # the answer's body in the picture
    page.screenshot(path=str(target / "fn-test-drawer-desktop.png"))
    page.keyboard.press("Escape")
    assert len(list(target.glob("fn-*.png"))) >= 14


def test_dashboard_functions_delete_with_confirmation(dashboard: Dashboard) -> None:
    page = dashboard.owner
    page.goto(dashboard.shared["project"])
    _open_menu(page, "Brevo").get_by_role("menuitem", name="Delete").click()
    dialog = page.locator("dialog#modal")
    assert dialog.get_by_role("heading").inner_text() == "Delete Proxy Function"
    assert "Are you sure you want to delete 'Brevo'?" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    assert page.locator("tr[data-function-id]").count() == 1
    _open_menu(page, "Brevo").get_by_role("menuitem", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    page.get_by_text("No proxy functions yet").wait_for()
    page.locator("#flash", has_text="Deleted Brevo").wait_for()
    page.goto(dashboard.url("/audit?target_type=function"))
    audit = page.locator("#audit-table").inner_text()
    for action in ("function.created", "function.disabled", "function.token_regenerated", "function.deleted"):
        assert action in audit, action
    assert dashboard.shared["token"] not in page.content() and SECRET not in page.content()

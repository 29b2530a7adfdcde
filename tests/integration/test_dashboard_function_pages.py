"""The proxy-function pages of the dashboard over real HTTP, without a browser, on both backends:
projects, environments (never the last), variables (masked, reveal audited), functions (create
from a template, edit, toggle, copy and regenerate the token, download code, delete), the audit
log; the Test drawer (every role, against the fake third-party API); the role checks the server
makes whatever a page shows; the form errors of the services shown next to their fields."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Gateway
from tests.fakes.third_party import ThirdParty, running_third_party
from tests.integration.test_dashboard_pages import PASSWORD, Visitor, add_member

TARGET = "https://127.0.0.1:9/v3/smtp/email"


@pytest.fixture
def third_party() -> Iterator[ThirdParty]:
    yield from running_third_party()


def _project(owner: Visitor, name: str = "Shop") -> tuple[int, list[int]]:
    """A project made through the page: its id and its environments' ids (sorted by name)."""
    made = owner.post("/projects", {"name": name, "description": "the web shop"})
    assert made.status_code == 303, made.text[:300]
    project_id = int(made.headers["location"].rsplit("/", 1)[-1])
    page = owner.get(f"/projects/{project_id}").text
    environments = [int(found) for found in re.findall(rf'href="/projects/{project_id}\?env=(\d+)"', page)]
    return project_id, list(dict.fromkeys(environments))


def _variable(owner: Visitor, environment_id: int, key: str = "BREVO_API_KEY", value: str = "xkeysib-secret") -> int:
    made = owner.post(f"/environments/{environment_id}/variables", {"key": key, "value": value, "is_secret": "on"})
    assert made.status_code == 303, made.text[:300]
    page = owner.get(f"/environments/{environment_id}/variables").text
    assert value not in page and "••••••••" in page
    found = re.search(r"/variables/(\d+)/edit", page)
    assert found
    return int(found.group(1))


def _function_form(variable_id: int, **overrides: str) -> dict[str, str]:
    form = {
        "template": "brevo",
        "name": "Send mail",
        "description": "transactional email",
        "target_url": TARGET,
        "method": "POST",
        "header_name": "Accept",
        "header_value": "application/json",
        "map_variable": str(variable_id),
        "map_inject_as": "header",
        "map_key": "api-key",
        "map_template": "",
        "allowed_origins": "*",
        "pass_through_body": "on",
        "timeout_ms": "5000",
    }
    form.update(overrides)
    return form


def _function_id(owner: Visitor, project_id: int, environment_id: int, name: str) -> str:
    page = owner.get(f"/projects/{project_id}?env={environment_id}&q={name}").text
    found = re.search(r'data-function-id="([0-9a-f-]{36})"', page)
    assert found, page[:2000]
    return found.group(1)


def test_dashboard_functions_owner_manages_projects_environments_and_functions(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    assert "Proxy functions" in owner.get("/keys").text  # the nav entry
    project_id, environments = _project(owner)
    assert len(environments) == 3  # Development, Production, Staging: tabs sorted by name
    page = owner.get(f"/projects/{project_id}").text
    assert page.index(">Development<") < page.index(">Production<") < page.index(">Staging<")
    assert "No proxy functions yet" in page and "Create Proxy Function" in page
    development = environments[0]

    variable_id = _variable(owner, development)
    templates = owner.get(f"/environments/{development}/functions/new?q=mail").text
    assert "Brevo" in templates and "Skip / Custom" in templates
    form = owner.get(f"/environments/{development}/functions/new?template=brevo").text
    assert "suggested: BREVO_API_KEY" in form and "https://api.brevo.com/v3/smtp/email" in form

    # The service's messages come back next to their fields; a bad body template is caught first.
    bad_url = owner.post(f"/environments/{development}/functions", _function_form(variable_id, target_url="ftp://x"))
    assert bad_url.status_code == 422 and 'id="e-target_url"' in bad_url.text
    bad_json = owner.post(
        f"/environments/{development}/functions",
        _function_form(variable_id, pass_through_body="", body_template="{not json"),
    )
    assert bad_json.status_code == 422 and "Invalid JSON" in bad_json.text

    created = owner.post(
        f"/environments/{development}/functions",
        _function_form(variable_id, rate_limited="on", rate_limit_per_minute="30"),
    )
    assert created.status_code == 303, created.text[:500]
    listing = owner.get(created.headers["location"]).text
    assert "Send mail" in listing and "30/min" in listing and ">Template<" in listing and "Active" in listing
    function_id = _function_id(owner, project_id, development, "mail")
    assert f"/fn/{function_id}" in listing
    assert 'No proxies matching "zzz"' in owner.get(f"/projects/{project_id}?env={development}&q=zzz").text

    token_page = owner.get(f"/functions/{function_id}/token").text
    token = re.search(r'id="function-token" type="text" value="([0-9a-f]{64})"', token_page)
    assert token
    regenerated = owner.post(f"/functions/{function_id}/regenerate", {})
    assert regenerated.status_code == 200 and "The previous token no longer works" in regenerated.text
    assert token.group(1) not in regenerated.text

    edit = owner.get(f"/functions/{function_id}/edit").text
    assert "Code Preview" in edit and f"/fn/{function_id}" in edit and "Update Proxy" in edit
    assert token.group(1) not in edit
    saved = owner.post(f"/functions/{function_id}/edit", _function_form(variable_id, name="Send mail v2"))
    assert saved.status_code == 303
    assert owner.post(f"/functions/{function_id}/disable", {}).status_code == 303
    assert "Disabled" in owner.get(f"/projects/{project_id}?env={development}").text

    code = owner.get(f"/functions/{function_id}/code?platform=netlify").text
    assert "Netlify" in code and "BREVO_API_KEY" in code and "xkeysib-secret" not in code

    revealed = owner.post(f"/variables/{variable_id}/reveal", {})
    assert revealed.status_code == 200 and "xkeysib-secret" in revealed.text

    cloned = owner.post(f"/projects/{project_id}/environments", {"name": "Preview", "clone_from": str(development)})
    assert cloned.status_code == 303
    assert "Send mail v2" in owner.get(cloned.headers["location"]).text

    assert owner.post(f"/functions/{function_id}/delete", {}).status_code == 303
    assert "No proxy functions yet" in owner.get(f"/projects/{project_id}?env={development}").text

    audit = owner.get("/audit?target_type=function").text
    for action in ("function.created", "function.updated", "function.disabled", "function.token_regenerated"):
        assert action in audit, action
    assert "function.deleted" in audit and "xkeysib-secret" not in audit and token.group(1) not in audit
    assert "variable.revealed" in owner.get("/audit?target_type=variable").text

    # Environments: renamed, deleted, never the last.
    renamed = owner.post(f"/environments/{environments[2]}/rename", {"name": "Stage"})
    assert renamed.status_code == 303
    second, _ = _project(owner, "Tiny")
    tiny_envs = re.findall(rf'href="/projects/{second}\?env=(\d+)"', owner.get(f"/projects/{second}").text)
    tiny = list(dict.fromkeys(int(e) for e in tiny_envs))
    for environment_id in tiny[:-1]:
        assert owner.post(f"/environments/{environment_id}/delete", {}).status_code == 303
    last = owner.post(f"/environments/{tiny[-1]}/delete", {})
    assert last.status_code == 409 and "last" in last.text
    assert owner.post(f"/projects/{second}/delete", {}).status_code == 303
    assert owner.get(f"/projects/{second}").status_code == 404


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_dashboard_functions_the_server_refuses_what_a_role_may_not_do(gateway: Gateway, role: str) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    project_id, environments = _project(owner)
    development = environments[0]
    variable_id = _variable(owner, development)
    created = owner.post(f"/environments/{development}/functions", _function_form(variable_id))
    assert created.status_code == 303
    function_id = _function_id(owner, project_id, development, "mail")

    visitor = add_member(gateway, f"{role}@acme.test", role)
    manager = role == "admin"
    listing = visitor.get(f"/projects/{project_id}?env={development}").text
    for label in ("Create Proxy", "Delete environment", ">Edit<", ">Disable<", "Regenerate Token", ">Delete<"):
        assert (label in listing) is manager, (role, label)
    for label in ("Copy URL", "Copy Token", "Download Code"):  # every role
        assert label in listing, (role, label)
    assert ("Reveal" in visitor.get(f"/environments/{development}/variables").text) is manager
    assert visitor.get(f"/functions/{function_id}/token").status_code == 200
    assert visitor.get(f"/functions/{function_id}/code").status_code == 200
    assert visitor.get("/audit").status_code == (200 if manager else 403)
    analytics = visitor.get(f"/projects/{project_id}/analytics?environment_id={development}&days=7")
    assert analytics.status_code == 200 and "Invocation trends (last 7 days)" in analytics.text
    assert visitor.get(f"/projects/{project_id}/analytics?function_id={function_id}&days=90").status_code == 200

    refused = 303 if manager else 403
    attempts = {
        "/projects": {"name": f"by {role}"},
        f"/projects/{project_id}/edit": {"name": "Shop 2"},
        f"/projects/{project_id}/environments": {"name": f"env {role}"},
        f"/environments/{environments[1]}/rename": {"name": f"renamed {role}"},
        f"/environments/{development}/variables": {"key": f"K_{role}", "value": "v", "is_secret": "on"},
        f"/variables/{variable_id}/edit": {"description": "x"},
        f"/environments/{development}/functions": _function_form(variable_id, name=f"fn {role}"),
        f"/functions/{function_id}/edit": _function_form(variable_id, name=f"edited {role}"),
        f"/functions/{function_id}/disable": {},
        f"/functions/{function_id}/enable": {},
    }
    for path, form in attempts.items():
        answer = visitor.post(path, form)
        assert answer.status_code == refused, (role, path, answer.status_code, answer.text[:300])
    # A refused role gets 403 even for a form the page would show errors for (never the form).
    for path in (f"/functions/{function_id}/edit", f"/environments/{development}/variables", "/projects"):
        assert visitor.post(path, {}).status_code == (422 if manager else 403), (role, path)
    assert visitor.post(f"/variables/{variable_id}/reveal", {}).status_code == (200 if manager else 403)
    assert visitor.post(f"/functions/{function_id}/regenerate", {}).status_code == (200 if manager else 403)
    for path in (
        f"/environments/{development}/functions/new",
        f"/functions/{function_id}/edit",
        f"/projects/{project_id}/edit",
    ):
        assert visitor.get(path).status_code == (200 if manager else 403), (role, path)
    assert visitor.post(f"/functions/{function_id}/delete", {}).status_code == refused
    assert visitor.post(f"/environments/{environments[1]}/delete", {}).status_code == refused
    assert visitor.post(f"/projects/{project_id}/delete", {}).status_code == refused


def test_dashboard_functions_another_accounts_ids_are_not_found(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    project_id, environments = _project(owner)
    variable_id = _variable(owner, environments[0])
    made = httpx.post(
        gateway.url + "/api/admin/accounts/", json={"name": "other"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert made.status_code == 201, made.text
    added = httpx.post(
        gateway.url + f"/api/admin/accounts/{made.json()['id']}/members/",
        json={"email": "stranger@other.test", "password": PASSWORD, "role": "owner"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert added.status_code == 201, added.text
    stranger = Visitor(gateway)
    assert stranger.sign_in("stranger@other.test").status_code == 303
    for path in (
        f"/projects/{project_id}",
        f"/environments/{environments[0]}/variables",
        f"/projects/{project_id}/edit",
    ):
        assert stranger.get(path).status_code == 404, path
    for path in (
        f"/variables/{variable_id}/reveal",
        f"/projects/{project_id}/delete",
        f"/environments/{environments[0]}/delete",
    ):
        assert stranger.post(path, {}).status_code == 404, path
    assert owner.get(f"/projects/{project_id}").status_code == 200


def _stranger(gateway: Gateway) -> Visitor:
    """The owner of another account, signed in."""
    made = httpx.post(
        gateway.url + "/api/admin/accounts/", json={"name": "other"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert made.status_code == 201, made.text
    added = httpx.post(
        gateway.url + f"/api/admin/accounts/{made.json()['id']}/members/",
        json={"email": "stranger@other.test", "password": PASSWORD, "role": "owner"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert added.status_code == 201, added.text
    stranger = Visitor(gateway)
    assert stranger.sign_in("stranger@other.test").status_code == 303
    return stranger


def test_dashboard_functions_test_drawer_works_for_a_viewer_and_not_across_accounts(
    gateway: Gateway, third_party: ThirdParty
) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    project_id, environments = _project(owner)
    development = environments[0]
    variable_id = _variable(owner, development, value="xkeysib-injected")
    form = _function_form(variable_id, target_url=f"{third_party.url}/json", allowed_origins="https://shop.test")
    assert owner.post(f"/environments/{development}/functions", form).status_code == 303
    function_id = _function_id(owner, project_id, development, "mail")
    token = re.search(r'value="([0-9a-f]{64})"', owner.get(f"/functions/{function_id}/token").text)
    assert token

    viewer = add_member(gateway, "viewer@acme.test", "viewer")
    listing = viewer.get(f"/projects/{project_id}?env={development}").text
    assert f'href="/functions/{function_id}/test"' in listing  # the quick action, for every role
    drawer = viewer.get(f"/functions/{function_id}/test")
    assert drawer.status_code == 200 and "Test Proxy" in drawer.text and "Send Test Request" in drawer.text
    assert f"/fn/{function_id}" in drawer.text and "x-proxy-token: ••••••••" in drawer.text
    assert token.group(1) not in drawer.text and "xkeysib-injected" not in drawer.text

    # Not JSON: said next to the box, and nothing is sent.
    bad = viewer.post(f"/functions/{function_id}/test", {"body": '{"to": '})
    assert bad.status_code == 422 and "Invalid JSON in request body" in bad.text
    assert third_party.received == []

    # Without scripts: the whole drawer again, with the answer (the origin list does not matter).
    sent = viewer.post(f"/functions/{function_id}/test", {"body": '{"to": "ada@example.com"}'})
    assert sent.status_code == 200, sent.text[:500]
    assert "200 OK" in sent.text and " ms<" in sent.text and "Send Test Request" in sent.text
    assert "&#34;ok&#34;: true" in sent.text or "&quot;ok&quot;: true" in sent.text  # pretty JSON, escaped
    assert third_party.last.method == "POST" and third_party.last.json == {"to": "ada@example.com"}
    assert third_party.last.headers["api-key"] == "xkeysib-injected"
    assert "xkeysib-injected" not in sent.text and token.group(1) not in sent.text
    # htmx: only the result, for #test-result.
    partial = viewer.post(f"/functions/{function_id}/test", {"body": ""}, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and 'id="test-status"' in partial.text
    assert "Send Test Request" not in partial.text and "<html" not in partial.text
    assert len(third_party.received) == 2

    # Another account's function is not found, whatever the role there; CSRF is still checked.
    stranger = _stranger(gateway)
    assert stranger.get(f"/functions/{function_id}/test").status_code == 404
    assert stranger.post(f"/functions/{function_id}/test", {"body": "{}"}).status_code == 404
    assert viewer.post(f"/functions/{function_id}/test", {"body": "{}"}, csrf=False).status_code == 403
    assert len(third_party.received) == 2

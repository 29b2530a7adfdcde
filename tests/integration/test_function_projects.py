"""Projects, environments and variables of proxy functions through the real app, on both backends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from billing.accounts import create_account
from functions.directory import FunctionDirectory, load_function, token_of
from functions.models import ProxyFunction
from functions.variables import VariableUpdate, update_variable
from tests.fakes.function_rows import add_function, add_project, add_variable, fixed_keyring
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Backend, Gateway, _with_session, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

SECRET = "sk_live_SECRET-VALUE-must-never-leak-0123456789"
PLAIN = "https://plain.example.test/value"
MASK = "••••••••"
BEARER = "Bearer ${value}"


def api(gateway: Gateway, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gateway.key}", **kwargs.pop("headers", {})}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=30, **kwargs)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def new_project(gateway: Gateway, name: str = "Website", **fields: Any) -> dict[str, Any]:
    return dict(ok(api(gateway, "POST", "/api/projects/", json={"name": name, **fields}), 201))


def new_variable(gateway: Gateway, environment_id: int, key: str, value: str, **fields: Any) -> dict[str, Any]:
    body = {"key": key, "value": value, **fields}
    return dict(ok(api(gateway, "POST", f"/api/environments/{environment_id}/variables/", json=body), 201))


def audit(gateway: Gateway) -> list[dict[str, Any]]:
    return list(ok(api(gateway, "GET", "/api/audit/", params={"limit": "500"}))["events"])


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error), error
    return dict(error)


class Person:
    """A dashboard user of the gateway's account, signed in with its session cookie."""

    def __init__(self, gateway: Gateway, role: str) -> None:
        self.gateway = gateway
        email, password = f"{role}@acme.test", "a long enough passphrase 42"
        added = httpx.post(
            gateway.url + f"/api/admin/accounts/{gateway.account_id}/members/",
            json={"email": email, "password": password, "role": role},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert added.status_code == 201, added.text
        login = httpx.post(gateway.url + "/api/auth/login/", json={"email": email, "password": password}, timeout=30)
        assert login.status_code == 200, login.text
        self.cookies = dict(login.cookies)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "X-CSRF-Token": self.cookies.get("tw_csrf", ""),
        }
        return httpx.request(method, self.gateway.url + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of the gateway (the app replaces the root handlers when it starts, so the
    capture handler is attached again, to the root, once it runs)."""
    root = logging.getLogger()
    root.addHandler(caplog.handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        root.setLevel(previous)
        root.removeHandler(caplog.handler)


# --- projects and environments ------------------------------------------------------------------


def test_function_projects_create_list_rename_delete_with_audit(gateway: Gateway) -> None:
    project = new_project(gateway, description="marketing site")
    assert [e["name"] for e in project["environments"]] == ["Development", "Staging", "Production"]
    assert (project["name"], project["description"]) == ("Website", "marketing site")

    listed = ok(api(gateway, "GET", "/api/projects/"))["projects"]
    assert [(p["id"], len(p["environments"])) for p in listed] == [(project["id"], 3)]
    assert ok(api(gateway, "GET", f"/api/projects/{project['id']}/"))["environments"] == project["environments"]

    duplicate = error_of(api(gateway, "POST", "/api/projects/", json={"name": "Website"}), 409)
    assert duplicate["code"] == "project_exists"
    renamed = ok(api(gateway, "PATCH", f"/api/projects/{project['id']}/", json={"name": "Site"}))
    assert (renamed["name"], renamed["description"]) == ("Site", "marketing site")
    new_project(gateway, "Other")
    clash = api(gateway, "PATCH", f"/api/projects/{project['id']}/", json={"name": "Other"})
    assert error_of(clash, 409)["code"] == "project_exists"

    assert api(gateway, "DELETE", f"/api/projects/{project['id']}/").status_code == 204
    assert error_of(api(gateway, "GET", f"/api/projects/{project['id']}/"), 404)["code"] == "project_not_found"
    events = {e["action"]: e for e in audit(gateway)}
    assert events["project.created"]["after"]["environments"] == ["Development", "Staging", "Production"]
    assert events["project.updated"]["before"] == {"name": "Website"}
    assert events["project.updated"]["after"] == {"name": "Site"}
    assert events["project.deleted"]["before"]["name"] == "Site"
    assert all(e["actor"].startswith("key:") for e in events.values())


def test_function_projects_environments_add_rename_and_never_delete_the_last(gateway: Gateway) -> None:
    project = new_project(gateway)
    base = f"/api/projects/{project['id']}/environments/"
    added = ok(api(gateway, "POST", base, json={"name": "QA"}), 201)
    assert (added["name"], added["cloned_from"]) == ("QA", None)
    assert error_of(api(gateway, "POST", base, json={"name": "QA"}), 409)["code"] == "environment_exists"
    assert error_of(api(gateway, "POST", base, json={"name": "   "}), 400)["param"] == "name"
    renamed = ok(api(gateway, "PATCH", f"/api/environments/{added['id']}/", json={"name": "Preview"}))
    assert renamed["name"] == "Preview"
    taken = api(gateway, "PATCH", f"/api/environments/{added['id']}/", json={"name": "Staging"})
    assert error_of(taken, 409)["code"] == "environment_exists"

    environments = ok(api(gateway, "GET", base))["environments"]
    assert [e["name"] for e in environments] == ["Development", "Staging", "Production", "Preview"]
    for environment in environments[:-1]:
        assert api(gateway, "DELETE", f"/api/environments/{environment['id']}/").status_code == 204
    last = error_of(api(gateway, "DELETE", f"/api/environments/{environments[-1]['id']}/"), 409)
    assert last["code"] == "last_environment" and "last" in last["message"]
    assert [e["name"] for e in ok(api(gateway, "GET", base))["environments"]] == ["Preview"]
    actions = [e["action"] for e in audit(gateway)]
    assert actions.count("environment.deleted") == 3
    assert {"environment.created", "environment.renamed"} <= set(actions)


def test_function_projects_clone_copies_variables_and_functions_with_new_tokens(gateway: Gateway) -> None:
    project = new_project(gateway)
    development = project["environments"][0]["id"]
    secret = new_variable(gateway, development, "STRIPE_SECRET_KEY", SECRET)
    plain = new_variable(gateway, development, "PUBLIC_URL", PLAIN, is_secret=False)
    ring = fixed_keyring()

    async def add(session: Any) -> tuple[str, str]:
        from functions.models import Environment

        environment = await session.get(Environment, development)
        row, token = await add_function(
            session,
            ring,
            environment,
            "https://127.0.0.1:9/v1/charges",
            slug="stripe",
            headers={"Content-Type": "application/json"},
            secret_mappings=[
                {
                    "variable_id": secret["id"],
                    "inject_as": "header",
                    "key": "Authorization",
                    "template": "Bearer ${value}",
                },
                {"variable_id": plain["id"], "inject_as": "query", "key": "return_to", "template": ""},
            ],
        )
        await session.commit()
        return row.id, token

    source_id, source_token = gateway.run(_with_session(gateway.settings, add))
    cloned = ok(
        api(
            gateway,
            "POST",
            f"/api/projects/{project['id']}/environments/",
            json={"name": "Preview", "clone_from": development},
        ),
        201,
    )
    assert (cloned["cloned_from"], cloned["variables_copied"], cloned["functions_copied"]) == (development, 2, 1)

    copies = {v["key"]: v for v in ok(api(gateway, "GET", f"/api/environments/{cloned['id']}/variables/"))["variables"]}
    assert (copies["STRIPE_SECRET_KEY"]["value"], copies["PUBLIC_URL"]["value"]) == (MASK, PLAIN)
    assert {copies["STRIPE_SECRET_KEY"]["id"], copies["PUBLIC_URL"]["id"]}.isdisjoint({secret["id"], plain["id"]})
    revealed = ok(api(gateway, "POST", f"/api/variables/{copies['STRIPE_SECRET_KEY']['id']}/reveal/"))
    assert revealed["value"] == SECRET

    async def inspect(session: Any) -> tuple[ProxyFunction, str, Any]:
        (row,) = await session.scalars(select(ProxyFunction).where(ProxyFunction.environment_id == cloned["id"]))
        return row, token_of(row, ring), await load_function(session, row.id, ring)

    row, token, resolved = gateway.run(_with_session(gateway.settings, inspect))
    assert row.id != source_id and row.slug == "stripe" and row.project_id == project["id"]
    assert len(token) == 64 and token != source_token
    assert resolved is not None and not resolved.unresolved
    assert resolved.token_matches(token) and not resolved.token_matches(source_token)
    assert [m["variable_id"] for m in row.secret_mappings] == [
        copies["STRIPE_SECRET_KEY"]["id"],
        copies["PUBLIC_URL"]["id"],
    ]
    assert [(i.key, i.value) for i in resolved.injections] == [
        ("Authorization", f"Bearer {SECRET}"),
        ("return_to", PLAIN),
    ]
    assert row.headers == {"Content-Type": "application/json"}
    (event,) = [e for e in audit(gateway) if e["action"] == "environment.cloned"]
    assert event["after"] == {
        "name": "Preview",
        "project_id": project["id"],
        "cloned_from": development,
        "variables_copied": 2,
        "functions_copied": 1,
    }


def test_function_projects_clone_source_must_be_of_the_same_project(gateway: Gateway) -> None:
    first, second = new_project(gateway, "One"), new_project(gateway, "Two")
    response = api(
        gateway,
        "POST",
        f"/api/projects/{first['id']}/environments/",
        json={"name": "X", "clone_from": second["environments"][0]["id"]},
    )
    assert error_of(response, 404)["param"] == "clone_from"


# --- variables ----------------------------------------------------------------------------------


def test_function_projects_variables_masked_revealed_audited_and_never_leaked(
    gateway: Gateway, captured: pytest.LogCaptureFixture
) -> None:
    environment = new_project(gateway)["environments"][0]["id"]
    answers: list[httpx.Response] = []

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = api(gateway, method, path, **kwargs)
        answers.append(response)
        return response

    created = ok(
        call(
            "POST",
            f"/api/environments/{environment}/variables/",
            json={"key": "API_KEY", "value": SECRET, "description": "the key"},
        ),
        201,
    )
    assert (created["value"], created["is_secret"]) == (MASK, True)
    plain = ok(
        call(
            "POST",
            f"/api/environments/{environment}/variables/",
            json={"key": "REGION", "value": "eu-west-1", "is_secret": False},
        ),
        201,
    )
    assert plain["value"] == "eu-west-1"
    taken = call("POST", f"/api/environments/{environment}/variables/", json={"key": "API_KEY", "value": "x"})
    assert error_of(taken, 409)["code"] == "variable_exists"
    listed = ok(call("GET", f"/api/environments/{environment}/variables/"))["variables"]
    assert [(v["key"], v["value"]) for v in listed] == [("API_KEY", MASK), ("REGION", "eu-west-1")]

    fixed = call("PATCH", f"/api/variables/{created['id']}/", json={"is_secret": False})
    assert error_of(fixed, 400)["param"] == "is_secret"
    updated = ok(call("PATCH", f"/api/variables/{created['id']}/", json={"value": SECRET + "-v2"}))
    assert (updated["value"], updated["description"]) == (MASK, "the key")
    revealed = api(gateway, "POST", f"/api/variables/{created['id']}/reveal/")
    assert ok(revealed) == {"id": created["id"], "key": "API_KEY", "value": SECRET + "-v2"}
    assert revealed.headers["cache-control"] == "no-store"
    assert call("DELETE", f"/api/variables/{plain['id']}/").status_code == 204
    assert error_of(call("POST", f"/api/variables/{plain['id']}/reveal/"), 404)["code"] == "variable_not_found"

    events = audit(gateway)
    actions = [e["action"] for e in events]
    assert {"variable.created", "variable.updated", "variable.revealed", "variable.deleted"} <= set(actions)
    (update,) = [e for e in events if e["action"] == "variable.updated"]
    assert update["before"]["key"] == "API_KEY" and update["after"]["value_changed"] is True
    (reveal,) = [e for e in events if e["action"] == "variable.revealed"]
    assert reveal["target_id"] == str(created["id"]) and reveal["actor"].startswith("key:")
    everything = " ".join(r.text for r in answers) + str(events) + captured.text
    assert SECRET not in everything and "eu-west-1" not in str(events)


def test_function_projects_variable_change_is_seen_after_forget(gateway: Gateway) -> None:
    """Updating a mapped variable returns the functions that map it; once forgotten, the
    directory resolves the new value (the controller forgets them in its own process)."""
    ring = fixed_keyring()

    async def scenario(session: Any) -> None:
        account = await create_account(session, "directory")
        _project, environments = await add_project(session, account.id)
        variable = await add_variable(session, ring, environments[0], "TOKEN", "first")
        row, _token = await add_function(
            session,
            ring,
            environments[0],
            "https://127.0.0.1:9/",
            secret_mappings=[{"variable_id": variable.id, "inject_as": "header", "key": "X-Key"}],
        )
        await add_function(session, ring, environments[0], "https://127.0.0.1:9/other")  # maps nothing
        await session.commit()
        from gateway.db import create_engine, create_sessionmaker

        engine = create_engine(gateway.settings.database_url)
        # A clock that stands still: the entry never expires by itself, only by forget().
        directory = FunctionDirectory(create_sessionmaker(engine), ring, ttl_s=1.0, clock=lambda: 0.0)
        try:
            first = await directory.get(row.id)
            assert first is not None and first.injections[0].value == "first"
            _read, mapped = await update_variable(
                session, ring, account.id, variable.id, VariableUpdate(value="second"), actor="test"
            )
            assert mapped == [row.id]
            cached = await directory.get(row.id)
            assert cached is not None and cached.injections[0].value == "first"  # within its TTL
            for function_id in mapped:
                directory.forget(function_id)
            fresh = await directory.get(row.id)
            assert fresh is not None and fresh.injections[0].value == "second"
        finally:
            await engine.dispose()

    gateway.run(_with_session(gateway.settings, scenario))


def test_function_projects_deletes_return_the_functions_to_forget(gateway: Gateway) -> None:
    project = new_project(gateway)
    development, staging = project["environments"][0]["id"], project["environments"][1]["id"]
    variable = new_variable(gateway, development, "K", "v")
    ring = fixed_keyring()

    async def add(session: Any) -> list[str]:
        from functions.models import Environment

        ids = []
        for environment_id, mappings in (
            (development, [{"variable_id": variable["id"], "inject_as": "header", "key": "X"}]),
            (staging, []),
        ):
            row, _token = await add_function(
                session,
                ring,
                await session.get(Environment, environment_id),
                "https://127.0.0.1:9/",
                secret_mappings=mappings,
            )
            ids.append(row.id)
        await session.commit()
        return ids

    mapped_id, staging_id = gateway.run(_with_session(gateway.settings, add))

    async def functions_left(session: Any) -> set[str]:
        return set(await session.scalars(select(ProxyFunction.id)))

    assert api(gateway, "DELETE", f"/api/variables/{variable['id']}/").status_code == 204

    async def unresolved(session: Any) -> bool:
        resolved = await load_function(session, mapped_id, ring)
        return resolved is not None and resolved.unresolved

    assert gateway.run(_with_session(gateway.settings, unresolved))
    assert api(gateway, "DELETE", f"/api/environments/{staging}/").status_code == 204
    assert gateway.run(_with_session(gateway.settings, functions_left)) == {mapped_id}
    events = {e["action"]: e for e in audit(gateway)}
    assert events["variable.deleted"]["before"]["mapped_by"] == [mapped_id]
    assert events["environment.deleted"]["before"]["functions"] == [staging_id]
    assert api(gateway, "DELETE", f"/api/projects/{project['id']}/").status_code == 204
    assert gateway.run(_with_session(gateway.settings, functions_left)) == set()
    assert {e["action"]: e for e in audit(gateway)}["project.deleted"]["before"]["functions"] == [mapped_id]


# --- who may do what ------------------------------------------------------------------------------


def test_function_projects_roles_members_and_viewers_only_look(gateway: Gateway) -> None:
    project = new_project(gateway)
    environment = project["environments"][0]["id"]
    variable = new_variable(gateway, environment, "SECRET_KEY", SECRET)
    admin = Person(gateway, "admin")
    for role in ("member", "viewer"):
        person = Person(gateway, role)
        for path in (
            "/api/projects/",
            f"/api/projects/{project['id']}/",
            f"/api/projects/{project['id']}/environments/",
            f"/api/environments/{environment}/variables/",
        ):
            response = person.request("GET", path)
            assert response.status_code == 200, (role, path, response.text)
            assert SECRET not in response.text
        for method, path, body in (
            ("POST", "/api/projects/", {"name": "Mine"}),
            ("PATCH", f"/api/projects/{project['id']}/", {"name": "Renamed"}),
            ("DELETE", f"/api/projects/{project['id']}/", None),
            ("POST", f"/api/projects/{project['id']}/environments/", {"name": "QA"}),
            ("POST", f"/api/projects/{project['id']}/environments/", {"name": "QA", "clone_from": environment}),
            ("PATCH", f"/api/environments/{environment}/", {"name": "Dev"}),
            ("DELETE", f"/api/environments/{environment}/", None),
            ("POST", f"/api/environments/{environment}/variables/", {"key": "NEW", "value": "v"}),
            ("PATCH", f"/api/variables/{variable['id']}/", {"value": "changed"}),
            ("DELETE", f"/api/variables/{variable['id']}/", None),
            ("POST", f"/api/variables/{variable['id']}/reveal/", None),
        ):
            response = person.request(method, path, json=body)
            assert error_of(response, 403)["code"] == "insufficient_role", (role, method, path)
    revealed = admin.request("POST", f"/api/variables/{variable['id']}/reveal/")
    assert ok(revealed)["value"] == SECRET
    assert ok(admin.request("PATCH", f"/api/environments/{environment}/", json={"name": "Dev"}))["name"] == "Dev"
    (reveal,) = [e for e in audit(gateway) if e["action"] == "variable.revealed"]
    assert reveal["actor"].startswith("user:")
    assert ok(api(gateway, "GET", f"/api/projects/{project['id']}/"))["name"] == "Website"


def test_function_projects_a_restricted_key_acts_as_a_member(gateway: Gateway) -> None:
    restricted = ok(api(gateway, "POST", "/api/keys/", json={"name": "narrow", "rpm_limit": 5}), 201)["key"]
    assert api(gateway, "GET", "/api/projects/", key=restricted).status_code == 200
    assert error_of(api(gateway, "POST", "/api/projects/", key=restricted, json={"name": "x"}), 403)


def test_function_projects_other_accounts_ids_are_404(gateway: Gateway) -> None:
    ring = fixed_keyring()

    async def theirs(session: Any) -> tuple[int, int, int]:
        account = await create_account(session, "other")
        project, environments = await add_project(session, account.id, "Theirs")
        variable = await add_variable(session, ring, environments[0], "THEIR_KEY", SECRET)
        await session.commit()
        return project.id, environments[0].id, variable.id

    project_id, environment_id, variable_id = gateway.run(_with_session(gateway.settings, theirs))
    mine = new_project(gateway)
    for method, path, body in (
        ("GET", f"/api/projects/{project_id}/", None),
        ("PATCH", f"/api/projects/{project_id}/", {"name": "mine now"}),
        ("DELETE", f"/api/projects/{project_id}/", None),
        ("GET", f"/api/projects/{project_id}/environments/", None),
        ("POST", f"/api/projects/{project_id}/environments/", {"name": "QA"}),
        ("PATCH", f"/api/environments/{environment_id}/", {"name": "QA"}),
        ("DELETE", f"/api/environments/{environment_id}/", None),
        ("GET", f"/api/environments/{environment_id}/variables/", None),
        ("POST", f"/api/environments/{environment_id}/variables/", {"key": "K", "value": "v"}),
        ("PATCH", f"/api/variables/{variable_id}/", {"value": "v"}),
        ("DELETE", f"/api/variables/{variable_id}/", None),
        ("POST", f"/api/variables/{variable_id}/reveal/", None),
        ("POST", f"/api/projects/{mine['id']}/environments/", {"name": "QA", "clone_from": environment_id}),
    ):
        response = api(gateway, method, path, json=body)
        error = error_of(response, 404)
        assert error["type"] == "not_found_error" and SECRET not in response.text, (method, path)
    assert [p["id"] for p in ok(api(gateway, "GET", "/api/projects/"))["projects"]] == [mine["id"]]


# --- no key ring, hostile input -------------------------------------------------------------------


def test_function_projects_without_a_key_ring_secrets_answer_503(backend: Backend, fake_openai: FakeOpenAI) -> None:
    """A Postgres deployment with no keys configured has no ring (SQLite always has its key
    file): the running app is given none, as that deployment's lifespan would."""
    gateway, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai)
    try:
        state = server.app.state.gateway
        state.functions = FunctionDirectory(state.sessionmaker, None)
        _no_ring_answers(gateway)
    finally:
        server.stop()


def _no_ring_answers(gateway: Gateway) -> None:
    project = new_project(gateway)  # projects need no key
    environment = project["environments"][0]["id"]
    refused = api(gateway, "POST", f"/api/environments/{environment}/variables/", json={"key": "K", "value": "v"})
    error = error_of(refused, 503)
    assert error["code"] == "secret_keys_unavailable" and "function_secret_keys" in error["message"]
    assert ok(api(gateway, "GET", f"/api/environments/{environment}/variables/"))["variables"] == []
    empty_clone = api(
        gateway, "POST", f"/api/projects/{project['id']}/environments/", json={"name": "QA", "clone_from": environment}
    )
    assert ok(empty_clone, 201)["variables_copied"] == 0


HOSTILE: list[tuple[str, str, Any]] = [
    ("POST", "/api/projects/", {"name": "a\x00b"}),
    ("POST", "/api/projects/", {"name": "x" * 201}),
    ("POST", "/api/projects/", {"name": "ok", "description": "d" * 1001}),
    ("POST", "/api/projects/", {"name": "ok", "description": "nul\x00"}),
    ("POST", "/api/projects/", {"name": "line\nbreak"}),
    ("POST", "/api/projects/", {"name": "ok", "owner": "me"}),
    ("PATCH", "/api/projects/{project}/", {"name": ""}),
    ("POST", "/api/projects/{project}/environments/", {"name": "e" * 101}),
    ("POST", "/api/projects/{project}/environments/", {"name": "QA", "clone_from": 2**63}),
    ("POST", "/api/projects/{project}/environments/", {"name": "QA", "clone_from": 0}),
    ("PATCH", "/api/environments/{environment}/", {"name": "\x00"}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "1ABC", "value": "v"}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "A-B", "value": "v"}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "K" * 201, "value": "v"}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "K\n", "value": "v"}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "K", "value": "a\x00b"}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "K", "value": "v" * (64 * 1024 + 1)}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "K", "value": 5}),
    ("POST", "/api/environments/{environment}/variables/", {"key": "K"}),
    ("PATCH", "/api/variables/{variable}/", {"key": "RENAMED"}),
    ("PATCH", "/api/variables/{variable}/", {"value": "\x00"}),
]


def test_function_projects_hostile_input_is_a_400_in_the_openai_shape(gateway: Gateway) -> None:
    project = new_project(gateway)
    environment = project["environments"][0]["id"]
    variable = new_variable(gateway, environment, "KEEP", "v")
    ids = {"project": project["id"], "environment": environment, "variable": variable["id"]}
    for method, path, body in HOSTILE:
        response = api(gateway, method, path.format(**ids), json=body)
        error = error_of(response, 400)
        assert error["type"] == "invalid_request_error", (method, path, body, error)
    assert error_of(api(gateway, "GET", "/api/projects/99999999999999999999/"), 400)["param"] == "project_id"
    assert api(gateway, "GET", "/api/environments/0/variables/").status_code == 400

    huge = api(
        gateway,
        "POST",
        f"/api/environments/{environment}/variables/",
        content=b'{"key": "BIG", "value": "' + b"v" * (10 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert error_of(huge, 413)["code"] == "request_too_large"
    listed = ok(api(gateway, "GET", f"/api/environments/{environment}/variables/"))["variables"]
    assert [v["key"] for v in listed] == ["KEEP"]

"""Who may manage proxy functions, whose functions they reach, what the audit trail and the logs
keep of it, and how fast a change reaches the process's function directory; both backends."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import msgspec
import pytest
from litestar import Litestar
from sqlalchemy import update

from functions.directory import FunctionDirectory
from functions.models import ProxyFunction
from gateway.app import create_app
from gateway.state import GatewayState
from tests.fakes.function_api import (
    FAKE_TARGET,
    Person,
    api,
    create,
    make_workspace,
    other_account_workspace,
    workspace,
)
from tests.fakes.gateway_fixtures import Backend, Gateway, _prepare, gateway_settings
from tests.fakes.openai_upstream import FakeOpenAI


def fn_path(function_id: str, tail: str = "") -> str:
    return f"/api/functions/{function_id}/{tail}"


def test_function_management_members_and_viewers_only_look(gateway: Gateway) -> None:
    ws = workspace(gateway)
    made = create(gateway, ws.env)
    function_id, token = made["id"], made["token"]
    for role in ("member", "viewer"):
        person = Person(gateway, role)
        refused = [
            ("POST", f"/api/environments/{ws.env}/functions/", {"name": f"By {role}", "target_url": FAKE_TARGET}),
            ("PATCH", fn_path(function_id), {"name": "Renamed"}),
            ("POST", fn_path(function_id, "enable/"), None),
            ("POST", fn_path(function_id, "disable/"), None),
            ("POST", fn_path(function_id, "regenerate-token/"), None),
            ("DELETE", fn_path(function_id), None),
        ]
        for method, path, body in refused:
            response = person.request(method, path, json=body)
            assert response.status_code == 403, (role, method, path, response.text)
            assert response.json()["error"]["code"] == "insufficient_role"
        listed = person.request("GET", f"/api/environments/{ws.env}/functions/")
        assert listed.status_code == 200 and [f["id"] for f in listed.json()["functions"]] == [function_id]
        assert person.request("GET", fn_path(function_id)).json()["name"] == "Mailer"
        copied = person.request("GET", fn_path(function_id, "token/"))
        assert copied.status_code == 200 and copied.json()["token"] == token
        assert person.request("GET", "/api/function-templates/").status_code == 200
    # Nothing they tried happened.
    after = api(gateway, "GET", fn_path(function_id)).json()
    assert (after["name"], after["enabled"]) == ("Mailer", True)
    assert api(gateway, "GET", fn_path(function_id, "token/")).json()["token"] == token


def test_function_management_owners_and_admins_manage(gateway: Gateway) -> None:
    ws = workspace(gateway)
    for role in ("owner", "admin"):
        person = Person(gateway, role)
        made = person.request(
            "POST", f"/api/environments/{ws.env}/functions/", json={"name": f"By {role}", "target_url": FAKE_TARGET}
        )
        assert made.status_code == 201, made.text
        assert made.json()["created_by"].startswith("user:")
        function_id = made.json()["id"]
        for method, tail, body, status in (
            ("PATCH", "", {"description": "ok"}, 200),
            ("POST", "disable/", None, 200),
            ("POST", "enable/", None, 200),
            ("POST", "regenerate-token/", None, 200),
            ("DELETE", "", None, 204),
        ):
            response = person.request(method, fn_path(function_id, tail), json=body)
            assert response.status_code == status, (role, method, tail, response.text)


def test_function_management_other_accounts_are_not_found(gateway: Gateway) -> None:
    mine = workspace(gateway)
    theirs = other_account_workspace(gateway)
    their_function = create(gateway, theirs.env, key=theirs.key)
    their_id = their_function["id"]
    for method, tail, body in (
        ("GET", "", None),
        ("PATCH", "", {"name": "Stolen"}),
        ("DELETE", "", None),
        ("POST", "enable/", None),
        ("POST", "disable/", None),
        ("POST", "regenerate-token/", None),
        ("GET", "token/", None),
    ):
        response = api(gateway, method, fn_path(their_id, tail), json=body)
        assert response.status_code == 404, (method, tail, response.text)
        assert response.json()["error"]["code"] == "function_not_found"
        assert their_function["token"] not in response.text
    for method in ("GET", "POST"):
        response = api(
            gateway, method, f"/api/environments/{theirs.env}/functions/", json={"name": "X", "target_url": FAKE_TARGET}
        )
        assert response.status_code == 404 and response.json()["error"]["code"] == "environment_not_found"
    # A mapping may only name a variable of the function's own environment (and account).
    for variable in (theirs.variable, mine.variables[1]):
        response = api(
            gateway,
            "POST",
            f"/api/environments/{mine.env}/functions/",
            json={
                "name": "Borrow",
                "target_url": FAKE_TARGET,
                "secret_mappings": [{"variable_id": variable, "inject_as": "header", "key": "X-Key"}],
            },
        )
        assert response.status_code == 400 and f"no variable {variable}" in response.json()["error"]["message"]
    mine_made = create(gateway, mine.env)
    patched = api(
        gateway,
        "PATCH",
        fn_path(mine_made["id"]),
        json={"secret_mappings": [{"variable_id": theirs.variable, "inject_as": "query", "key": "k"}]},
    )
    assert patched.status_code == 400
    # Theirs is untouched and still theirs; mine never lists it.
    intact = api(gateway, "GET", fn_path(their_id), key=theirs.key).json()
    assert (intact["name"], intact["enabled"]) == ("Mailer", True)
    assert api(gateway, "GET", fn_path(their_id, "token/"), key=theirs.key).json()["token"] == their_function["token"]
    listed = api(gateway, "GET", f"/api/environments/{mine.env}/functions/").json()["functions"]
    assert [f["id"] for f in listed] == [mine_made["id"]]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + (self.format(record) if record.exc_info else ""))


@pytest.fixture
def captured_logs() -> Iterator[Captured]:
    """Every record the process logs at INFO and above while the test runs, as a deployment logs
    (a database driver's DEBUG lines echo SQL parameters, which is the operator's choice to enable)."""
    handler = Captured()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def test_function_management_audit_keeps_no_secret(gateway: Gateway, captured_logs: Captured) -> None:
    ws = workspace(gateway)
    header_secret, header_secret_2, body_secret = "hdr-" + "a1" * 16, "hdr-" + "b2" * 16, "bdy-" + "c3" * 16
    made = create(
        gateway,
        ws.env,
        headers={"X-Static-Auth": header_secret},
        secret_mappings=[
            {"variable_id": ws.variable, "inject_as": "header", "key": "Authorization", "template": "Bearer ${value}"}
        ],
        body_template={"auth": body_secret},
        pass_through_body=False,
        rate_limit_per_minute=10,
    )
    function_id, first_token = made["id"], made["token"]
    path = fn_path(function_id)
    assert api(
        gateway, "PATCH", path, json={"name": "Mailer 2", "headers": {"X-Static-Auth": header_secret_2}}
    ).is_success
    assert api(gateway, "PATCH", path, json={"headers": {"X-Static-Auth": header_secret}}).is_success  # value only
    assert api(gateway, "POST", fn_path(function_id, "disable/")).is_success
    assert api(gateway, "PATCH", path, json={"enabled": True}).is_success
    second_token = api(gateway, "POST", fn_path(function_id, "regenerate-token/")).json()["token"]
    assert api(gateway, "GET", fn_path(function_id, "token/")).json()["token"] == second_token
    refused = api(gateway, "PATCH", path, json={"headers": {"X-Static-Auth": header_secret + "\r\n"}})
    assert refused.status_code == 400 and header_secret not in refused.text
    assert api(gateway, "DELETE", path).status_code == 204

    audit = api(gateway, "GET", "/api/audit/", params={"limit": 100})
    assert audit.status_code == 200
    events = [e for e in audit.json()["events"] if e["target_type"] == "function"][::-1]
    assert [e["action"] for e in events] == [
        "function.created",
        "function.updated",
        "function.updated",
        "function.disabled",
        "function.enabled",
        "function.token_regenerated",
        "function.deleted",
    ]
    assert all(e["target_id"] == function_id and e["actor"].startswith("key:") for e in events)
    created, renamed, revalued, disabled, enabled, regenerated, deleted = events
    assert created["after"] == {
        "name": "Mailer",
        "slug": "mailer",
        "target_url": FAKE_TARGET,
        "method": "POST",
        "enabled": True,
        "allowed_origins": ["*"],
        "header_names": ["X-Static-Auth"],
        "secret_mappings": [
            {"variable_id": ws.variable, "inject_as": "header", "key": "Authorization", "templated": True}
        ],
        "rate_limit_per_minute": 10,
        "pass_through_body": False,
        "has_body_template": True,
        "forward_path": False,
        "forward_query": False,
        "timeout_ms": 25_000,
        "template_id": "",
    }
    assert (renamed["before"]["name"], renamed["after"]["name"], renamed["after"]["slug"]) == (
        "Mailer",
        "Mailer 2",
        "mailer-2",
    )
    assert renamed["after"]["changed"] == ["headers", "name"]
    assert revalued["after"]["changed"] == ["headers"]  # a value change is recorded, the value is not
    assert (disabled["before"]["enabled"], disabled["after"]["enabled"]) == (True, False)
    assert (enabled["before"]["enabled"], enabled["after"]["enabled"]) == (False, True)
    assert regenerated["after"] == {"name": "Mailer 2", "slug": "mailer-2"}
    assert deleted["before"]["name"] == "Mailer 2" and deleted["after"] == {}

    logging.getLogger("tollway.functions").info("capture works")  # the handler sees the gateway's loggers
    assert "capture works" in captured_logs.lines
    everything = audit.text + "\n".join(captured_logs.lines)
    for secret in (first_token, second_token, header_secret, header_secret_2, body_secret, *ws.secret_values):
        assert secret not in everything
    assert "Bearer" not in audit.text  # a mapping's template is not kept either


# -- in this process: the directory sees a change at once ------------------------------------------


@asynccontextmanager
async def in_process(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan and its requests on the test's own event loop, so the test can call the
    app's directory directly (asyncpg connections belong to the loop that opened them)."""
    transport = httpx.ASGITransport(app=cast(Any, app))  # Litestar's typed scopes vs httpx's plain dicts
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client


async def test_function_management_changes_reach_this_process_at_once(
    backend: Backend, fake_openai: FakeOpenAI
) -> None:
    """The /fn runtime reads functions from the directory. With a TTL that never passes here,
    only the controller's forget() can make it see a change: the old token stops matching on
    the very next lookup, in the process that made the change."""
    settings = gateway_settings(backend, fake_openai)
    account_id, key = await _prepare(settings, 10**9)
    app = create_app(settings, env={})
    headers = {"Authorization": f"Bearer {key}"}
    async with in_process(app) as client:
        state: GatewayState = app.state.gateway
        assert state.functions is not None
        directory = FunctionDirectory(state.sessionmaker, state.functions.keyring, ttl_s=3600)
        state.functions = directory
        async with state.sessionmaker() as session:
            ws = await make_workspace(session, account_id, "In process")
        made = (
            await client.post(
                f"/api/environments/{ws.env}/functions/",
                json={"name": "Live", "target_url": FAKE_TARGET},
                headers=headers,
            )
        ).json()
        function_id, old_token = made["id"], made["token"]
        before = await directory.get(function_id)
        assert before is not None and before.token_matches(old_token)

        # The TTL really holds: a change behind the controller's back is not seen...
        async with state.sessionmaker() as session:
            await session.execute(update(ProxyFunction).where(ProxyFunction.id == function_id).values(name="Sneaky"))
            await session.commit()
        assert (await directory.get(function_id)) is before

        # ...but the controller's changes are, on the next lookup.
        regenerated = await client.post(fn_path(function_id, "regenerate-token/"), headers=headers)
        new_token = regenerated.json()["token"]
        after = await directory.get(function_id)
        assert after is not None and after.token_matches(new_token) and not after.token_matches(old_token)
        assert after.token_sha256 == hashlib.sha256(new_token.encode()).digest()

        await client.post(fn_path(function_id, "disable/"), headers=headers)
        disabled = await directory.get(function_id)
        assert disabled is not None and disabled.enabled is False
        await client.patch(fn_path(function_id), json={"target_url": FAKE_TARGET + "/v2"}, headers=headers)
        patched = await directory.get(function_id)
        assert patched is not None and patched.target_url == FAKE_TARGET + "/v2"
        assert (await client.delete(fn_path(function_id), headers=headers)).status_code == 204
        assert await directory.get(function_id) is None


async def test_function_management_without_key_ring_is_a_clear_503(backend: Backend, fake_openai: FakeOpenAI) -> None:
    settings = gateway_settings(backend, fake_openai)
    account_id, key = await _prepare(settings, 10**9)
    app = create_app(settings, env={})
    headers = {"Authorization": f"Bearer {key}"}
    async with in_process(app) as client:
        state: GatewayState = app.state.gateway
        async with state.sessionmaker() as session:
            ws = await make_workspace(session, account_id, "No keys")
        body = {"name": "Sealed", "target_url": FAKE_TARGET}
        made = await client.post(f"/api/environments/{ws.env}/functions/", json=body, headers=headers)
        assert made.status_code == 201
        function_id = made.json()["id"]
        state.functions = FunctionDirectory(state.sessionmaker, None)  # as Postgres with no keys configured

        def refused(response: Any) -> None:
            assert response.status_code == 503, response.text
            error = msgspec.json.decode(response.content)["error"]
            assert error["code"] == "secret_keys_unavailable" and "function_secret_keys" in error["message"]

        refused(
            await client.post(f"/api/environments/{ws.env}/functions/", json={**body, "name": "Two"}, headers=headers)
        )
        refused(await client.post(fn_path(function_id, "regenerate-token/"), headers=headers))
        refused(await client.get(fn_path(function_id, "token/"), headers=headers))
        assert (await client.get(fn_path(function_id), headers=headers)).status_code == 200
        listed = await client.get(f"/api/environments/{ws.env}/functions/", headers=headers)
        assert [f["name"] for f in listed.json()["functions"]] == ["Sealed"]

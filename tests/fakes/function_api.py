"""Calling the proxy-function management API in tests, on a project made straight in the database.

Projects, environments and variables are another helper's API; these tests make them with
:mod:`tests.fakes.function_rows` and then go through HTTP for everything about functions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from billing.accounts import create_account
from keys.service import create_key
from tests.fakes.function_rows import add_project, add_variable, fixed_keyring
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Gateway, _with_session

FAKE_TARGET = "https://api.example.com/v1/send"


@dataclass
class Workspace:
    """One project of an account: its three environments and a secret variable in each."""

    account_id: int
    project_id: int
    environments: list[int]  # Development, Staging, Production
    variables: list[int]  # one per environment, in the same order
    secret_values: list[str] = field(default_factory=list)
    key: str = ""  # a prx- key of the account (set for other accounts)

    @property
    def env(self) -> int:
        return self.environments[0]

    @property
    def variable(self) -> int:
        return self.variables[0]


def api(gateway: Gateway, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gateway.key}", **kwargs.pop("headers", {})}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=15, **kwargs)


async def make_workspace(session: AsyncSession, account_id: int, name: str) -> Workspace:
    ring = fixed_keyring()
    project, environments = await add_project(session, account_id, name)
    values = [f"sk_live_{secrets.token_hex(12)}" for _ in environments]
    variables = [
        await add_variable(session, ring, environment, "API_KEY", value)
        for environment, value in zip(environments, values, strict=True)
    ]
    await session.commit()
    return Workspace(account_id, project.id, [e.id for e in environments], [v.id for v in variables], values)


def workspace(gateway: Gateway, name: str = "Website") -> Workspace:
    async def work(session: AsyncSession) -> Workspace:
        return await make_workspace(session, gateway.account_id, name)

    result: Workspace = gateway.run(_with_session(gateway.settings, work))
    return result


def other_account_workspace(gateway: Gateway) -> Workspace:
    """Another tenant, with its own key, project and variables."""

    async def work(session: AsyncSession) -> Workspace:
        account = await create_account(session, "other", credits_micro=1_000_000)
        _key, plaintext = await create_key(session, account.id, "theirs")
        made = await make_workspace(session, account.id, "Theirs")
        made.key = plaintext
        return made

    result: Workspace = gateway.run(_with_session(gateway.settings, work))
    return result


def create(gateway: Gateway, environment_id: int, key: str | None = None, **body: Any) -> dict[str, Any]:
    """Create a function (blank unless ``template`` is given); asserts it worked."""
    fields = dict(body) if "template" in body else {"name": "Mailer", "target_url": FAKE_TARGET, **body}
    response = api(gateway, "POST", f"/api/environments/{environment_id}/functions/", key=key, json=fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


PASSWORD = "correct horse battery staple"


class Person:
    """A dashboard user of the gateway's account with a role, signed in: cookies and the CSRF token."""

    def __init__(self, gateway: Gateway, role: str) -> None:
        self.gateway = gateway
        self.role = role
        self.cookies: dict[str, str] = {}
        email = f"{role}-{secrets.token_hex(4)}@acme.test"
        added = httpx.post(
            f"{gateway.url}/api/admin/accounts/{gateway.account_id}/members/",
            json={"email": email, "password": PASSWORD, "role": role},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=15,
        )
        assert added.status_code == 201, added.text
        signed_in = self.request("POST", "/api/auth/login/", json={"email": email, "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            headers["X-CSRF-Token"] = self.cookies.get("tw_csrf", "")
        response = httpx.request(method, self.gateway.url + path, headers=headers, timeout=15, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                self.cookies[name] = morsel.value
        return response

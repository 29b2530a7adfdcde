"""Download Code through the real app: ``GET /api/functions/{id}/code/{platform}/``.

The JSON answer and the ``?download=1`` attachment, for every platform; every role may
download; another account's function, an unknown id or platform is a 404 in the OpenAI error
shape; no secret and no token in any answer. That the files *behave* like the hosted runtime
is test_function_codegen_node.py's business (it runs them).
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from billing.accounts import create_account
from functions.codegen import FunctionUnresolved, Platform, UnusableVariableKey, file_slug, generate, js_literal
from functions.config import Injection, ResolvedFunction
from functions.directory import load_function
from functions.models import HttpMethod, InjectAs
from tests.fakes.function_rows import add_function, add_project, add_variable, fixed_keyring
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Gateway, _with_session

SECRET = "sk-live-never-in-the-file-0123456789"
PASSWORD = "a long enough passphrase 42"
PATHS = {
    Platform.VERCEL: "api/proxy-brevo-email.ts",
    Platform.NETLIFY: "netlify/edge-functions/proxy-brevo-email.ts",
    Platform.CLOUDFLARE: "src/proxy-brevo-email.ts",
    Platform.LAMBDA: "lambda/proxy-brevo-email.mjs",
}


def api(gateway: Gateway, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gateway.key}", **kwargs.pop("headers", {})}
    return httpx.get(gateway.url + path, headers=headers, timeout=10, **kwargs)


def make_function(gateway: Gateway, account_id: int | None = None, **fields: Any) -> tuple[str, str]:
    """A function with two mappings of one secret variable, in ``account_id`` (the gateway's by
    default); its id and token."""

    async def work(session: Any) -> tuple[str, str]:
        ring = fixed_keyring()
        owner = account_id if account_id is not None else gateway.account_id
        _project, environments = await add_project(session, owner, f"Site {fields.get('name', '')}")
        variable = await add_variable(session, ring, environments[2], "BREVO_API_KEY", SECRET)
        mappings = [
            {"variable_id": variable.id, "inject_as": "header", "key": "api-key", "template": ""},
            {"variable_id": variable.id, "inject_as": "body", "key": "auth.key", "template": "k ${value}"},
        ]
        values = {"name": "Brevo email", "slug": "brevo-email", "secret_mappings": mappings, **fields}
        row, token = await add_function(session, ring, environments[2], "https://api.brevo.com/v3/smtp/email", **values)
        await session.commit()
        return row.id, token

    result: tuple[str, str] = gateway.run(_with_session(gateway.settings, work))
    return result


def expected_content(gateway: Gateway, function_id: str, platform: Platform) -> str:
    async def work(session: Any) -> str:
        function = await load_function(session, function_id, fixed_keyring())
        assert function is not None
        return generate(function, platform, max_body_bytes=gateway.settings.function_max_body_bytes).content

    result: str = gateway.run(_with_session(gateway.settings, work))
    return result


def error_of(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


def test_function_codegen_api_answers_the_file_and_how_to_deploy_it(gateway: Gateway) -> None:
    function_id, token = make_function(gateway)
    for platform in Platform:
        response = api(gateway, f"/api/functions/{function_id}/code/{platform.value}/")
        assert response.status_code == 200, response.text
        code = response.json()
        assert set(code) == {"platform", "filename", "path", "instructions", "content", "env"}
        assert code["platform"] == platform.value
        assert code["path"] == PATHS[platform] and code["path"].endswith("/" + code["filename"])
        assert code["filename"] in code["instructions"] and "PROXY_TOKEN" in code["instructions"]
        assert [var["name"] for var in code["env"]] == ["PROXY_TOKEN", "BREVO_API_KEY"]
        assert code["env"][1]["description"] == 'injected as header "api-key"; body "auth.key" as "k ${value}"'
        assert code["content"] == expected_content(gateway, function_id, platform)
        assert '"BREVO_API_KEY"' in code["content"] and "PROXY_TOKEN" in code["content"]
        assert SECRET not in response.text and token not in response.text


def test_function_codegen_api_download_is_the_file_as_an_attachment(gateway: Gateway) -> None:
    function_id, token = make_function(gateway)
    for platform in Platform:
        listed = api(gateway, f"/api/functions/{function_id}/code/{platform.value}/").json()
        response = api(gateway, f"/api/functions/{function_id}/code/{platform.value}/", params={"download": "1"})
        assert response.status_code == 200, response.text
        assert response.headers["content-disposition"] == f'attachment; filename="{listed["filename"]}"'
        expected_type = "text/javascript" if platform is Platform.LAMBDA else "text/typescript"
        assert response.headers["content-type"].startswith(expected_type)
        assert response.text == listed["content"]
        assert SECRET not in response.text and token not in response.text
    refused = api(gateway, f"/api/functions/{function_id}/code/vercel/", params={"download": "yes"})
    assert refused.status_code == 400 and error_of(refused)["type"] == "invalid_request_error"


def test_function_codegen_api_unknown_platform_or_function_is_a_404(gateway: Gateway) -> None:
    function_id, _token = make_function(gateway)
    unknown = api(gateway, f"/api/functions/{function_id}/code/heroku/")
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "unknown_platform" and "vercel" in error_of(unknown)["message"]

    other_account = gateway.run(
        _with_session(gateway.settings, lambda session: create_account(session, "elsewhere", email="o@else.test"))
    ).id
    foreign_id, _foreign_token = make_function(gateway, account_id=other_account)
    for missing in (foreign_id, "00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        response = api(gateway, f"/api/functions/{missing}/code/vercel/")
        assert response.status_code == 404, missing
        assert error_of(response)["code"] == "function_not_found"
        assert "Brevo" not in response.text


def test_function_codegen_api_refuses_a_mapping_to_a_deleted_variable(gateway: Gateway) -> None:
    function_id, _token = make_function(gateway)

    async def drop_variable(session: Any) -> None:
        from sqlalchemy import delete

        from functions.models import Variable

        await session.execute(delete(Variable).where(Variable.account_id == gateway.account_id))
        await session.commit()

    gateway.run(_with_session(gateway.settings, drop_variable))
    response = api(gateway, f"/api/functions/{function_id}/code/lambda/")
    assert response.status_code == 400 and error_of(response)["code"] == "function_unresolved"


def _signed_in(gateway: Gateway, role: str) -> dict[str, str]:
    """Cookie headers of a dashboard user of the gateway's account with ``role``."""
    email = f"{role}@acme.test"
    added = httpx.post(
        gateway.url + f"/api/admin/accounts/{gateway.account_id}/members/",
        json={"email": email, "password": PASSWORD, "role": role},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert added.status_code == 201, added.text
    login = httpx.post(gateway.url + "/api/auth/login/", json={"email": email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    jar: SimpleCookie = SimpleCookie()
    for header in login.headers.get_list("set-cookie"):
        jar.load(header)
    return {"Cookie": "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())}


def test_function_codegen_api_every_role_may_download(gateway: Gateway) -> None:
    function_id, _token = make_function(gateway)
    path = f"/api/functions/{function_id}/code/cloudflare/"
    for role in ("viewer", "member", "admin"):
        response = httpx.get(gateway.url + path, headers=_signed_in(gateway, role), timeout=10)
        assert response.status_code == 200, (role, response.text)
    restricted = httpx.post(
        gateway.url + "/api/keys/",
        json={"name": "narrow", "allowed_models": ["fake/gpt-4o-mini"]},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=10,
    ).json()["key"]
    assert api(gateway, path, headers={"Authorization": f"Bearer {restricted}"}).status_code == 200
    anonymous = httpx.get(gateway.url + path, timeout=10)
    assert anonymous.status_code == 401 and error_of(anonymous)["type"] == "authentication_error"


# -- the generator itself (no app) --------------------------------------------------------------


def resolved(**fields: Any) -> ResolvedFunction:
    values: dict[str, Any] = {
        "id": "0b5e6c1e-6a8e-4b43-9a43-8f1e0d3b1a11",
        "account_id": 1,
        "project_id": 1,
        "environment_id": 1,
        "name": "Brevo",
        "slug": "brevo",
        "enabled": True,
        "target_url": "https://api.brevo.com/v3/smtp/email",
        "method": HttpMethod.POST,
        "headers": {},
        "injections": (
            Injection(inject_as=InjectAs.HEADER, key="api-key", value=SECRET, variable_key="BREVO_API_KEY"),
        ),
        "allowed_origins": ("*",),
        "pass_through_body": True,
        "body_template": None,
        "rate_limit_per_minute": None,
        "forward_path": False,
        "forward_query": False,
        "timeout_s": 25.0,
        "token_sha256": bytes(32),
    }
    values.update(fields)
    return ResolvedFunction(**values)


def test_function_codegen_js_literal_is_one_safe_line() -> None:
    text = 'a"\n\r\u2028\u2029</script><!-- ü \\ ${x} `'
    literal = js_literal(text)
    assert literal.isascii() and literal.isprintable()
    assert "</" not in literal and "\u2028" not in literal
    assert json.loads(literal) == text


def test_function_codegen_user_text_never_becomes_code() -> None:
    """Every value from the function reaches the file as a JSON string literal and nowhere else
    (the Node test runs such a function); marker-like text in it is left alone."""
    hostile = '"; process.exit(1); // __BASE_PATH__ __NETLIFY_PATH__\n*/'
    url = "https://x.test/?q=" + hostile
    function = resolved(name=hostile, slug=hostile, target_url=url, forward_path=True)
    for platform in Platform:
        code = generate(function, platform)
        assert f'"name": {js_literal(hostile)},' in code.content
        assert "process.exit" not in code.content.replace(js_literal(hostile), "").replace(js_literal(url), "")
        assert code.filename.startswith("proxy-process-exit-1-base-path-netlify-path.")
        assert "api/proxy-process-exit-1-base-path-netlify-path" in code.content or platform in (
            Platform.CLOUDFLARE,
            Platform.LAMBDA,
        )


def test_function_codegen_file_names_are_safe_slugs() -> None:
    assert file_slug("Brevo Email") == "brevo-email"
    assert file_slug("../../etc/passwd") == "etc-passwd"
    assert file_slug("ü\u202e") == "function"
    assert file_slug("a" * 80) == "a" * 50


@pytest.mark.parametrize("key", ["1ST", "API-KEY", "A B", "PROXY_TOKEN", "ü"])
def test_function_codegen_refuses_a_variable_that_cannot_be_an_environment_variable(key: str) -> None:
    injection = Injection(inject_as=InjectAs.QUERY, key="k", value=SECRET, variable_key=key)
    with pytest.raises(UnusableVariableKey):
        generate(resolved(injections=(injection,)), Platform.VERCEL)


def test_function_codegen_says_the_rate_limit_is_not_enforced() -> None:
    limited = generate(resolved(rate_limit_per_minute=30), Platform.NETLIFY).content
    assert "rate limit of 30 requests per minute is NOT enforced" in limited
    assert "windowLimit: 30" in limited
    assert "NOT enforced" not in generate(resolved(), Platform.NETLIFY).content


def test_function_codegen_refuses_an_unresolved_function() -> None:
    with pytest.raises(FunctionUnresolved):
        generate(resolved(injections=(), unresolved=True), Platform.LAMBDA)

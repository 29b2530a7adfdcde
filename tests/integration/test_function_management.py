"""Managing proxy functions through the real HTTP app, on both backends: create (blank and from
every template), read, patch, toggle, regenerate, copy the token, delete; search and paging;
slugs; every field rule answered with a 400 naming the field."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tests.fakes.function_api import FAKE_TARGET, Workspace, api, create, workspace
from tests.fakes.function_rows import add_function, fixed_keyring
from tests.fakes.gateway_fixtures import Gateway, _with_session

TEMPLATE_SLUGS = [
    "brevo",
    "stripe",
    "openai",
    "sendgrid",
    "resend",
    "postmark",
    "anthropic",
    "mistral",
    "groq",
    "paddle",
    "lemonsqueezy",
    "mollie",
    "intercom",
    "hubspot",
    "onesignal",
]


def fn_path(function_id: str, tail: str = "") -> str:
    return f"/api/functions/{function_id}/{tail}"


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def test_function_management_create_get_patch_delete(gateway: Gateway) -> None:
    ws = workspace(gateway)
    created = create(
        gateway,
        ws.env,
        description="sends mail",
        headers={"Accept": "application/json"},
        secret_mappings=[{"variable_id": ws.variable, "inject_as": "header", "key": "api-key"}],
    )
    function_id = created["id"]
    assert uuid.UUID(function_id).version == 4
    assert re.fullmatch(r"[0-9a-f]{64}", created["token"])
    assert created["url_path"] == f"/fn/{function_id}"
    expected = {
        "project_id": ws.project_id,
        "environment_id": ws.env,
        "name": "Mailer",
        "slug": "mailer",
        "description": "sends mail",
        "enabled": True,
        "target_url": FAKE_TARGET,
        "method": "POST",
        "headers": {"Accept": "application/json"},
        "secret_mappings": [{"variable_id": ws.variable, "inject_as": "header", "key": "api-key", "template": ""}],
        "allowed_origins": ["*"],
        "pass_through_body": True,
        "body_template": None,
        "rate_limit_per_minute": None,
        "template_id": "",
        "forward_path": False,
        "forward_query": False,
        "timeout_ms": 25_000,
    }
    assert {k: created[k] for k in expected} == expected
    assert created["created_by"].startswith("key:")

    got = api(gateway, "GET", fn_path(function_id))
    assert got.status_code == 200
    assert "token" not in got.json()
    assert got.json() == {k: v for k, v in created.items() if k != "token"}
    assert api(gateway, "GET", fn_path(function_id.upper())).json()["id"] == function_id  # canonical id

    patched = api(gateway, "PATCH", fn_path(function_id), json={"name": "Mailer Two", "rate_limit_per_minute": 30})
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert (after["name"], after["slug"], after["rate_limit_per_minute"]) == ("Mailer Two", "mailer-two", 30)
    unchanged = {k: v for k, v in created.items() if k not in ("token", "name", "slug", "rate_limit_per_minute")}
    assert {k: after[k] for k in unchanged if k != "updated_at"} == {
        k: v for k, v in unchanged.items() if k != "updated_at"
    }

    cleared = api(
        gateway,
        "PATCH",
        fn_path(function_id),
        json={
            "description": None,
            "rate_limit_per_minute": None,
            "pass_through_body": False,
            "body_template": {"to": [{"email": "ops@example.com"}], "n": 1},
            "forward_path": True,
            "forward_query": True,
            "timeout_ms": 5000,
            "method": "PUT",
            "allowed_origins": ["https://App.Example.com/", "*.example.org"],
            "headers": {},
            "secret_mappings": [],
        },
    ).json()
    assert cleared["description"] == "" and cleared["rate_limit_per_minute"] is None
    assert cleared["body_template"] == {"to": [{"email": "ops@example.com"}], "n": 1}
    assert (cleared["pass_through_body"], cleared["forward_path"], cleared["forward_query"]) == (False, True, True)
    assert (cleared["timeout_ms"], cleared["method"]) == (5000, "PUT")
    assert cleared["allowed_origins"] == ["https://app.example.com", "*.example.org"]
    assert cleared["headers"] == {} and cleared["secret_mappings"] == []
    assert cleared["name"] == "Mailer Two"  # not sent, not changed
    assert api(gateway, "PATCH", fn_path(function_id), json={}).json()["updated_at"] == cleared["updated_at"]
    cleared_template = api(gateway, "PATCH", fn_path(function_id), json={"body_template": None}).json()
    assert cleared_template["body_template"] is None

    assert api(gateway, "DELETE", fn_path(function_id)).status_code == 204
    missing = api(gateway, "GET", fn_path(function_id))
    assert missing.status_code == 404 and error_of(missing)["code"] == "function_not_found"
    assert api(gateway, "DELETE", fn_path(function_id)).status_code == 404
    assert api(gateway, "GET", fn_path("not-a-uuid")).status_code == 404


def test_function_management_enable_disable_regenerate_copy_token(gateway: Gateway) -> None:
    ws = workspace(gateway)
    created = create(gateway, ws.env, enabled=False)
    function_id, first_token = created["id"], created["token"]
    assert created["enabled"] is False
    enabled = api(gateway, "POST", fn_path(function_id, "enable/"))
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    assert api(gateway, "POST", fn_path(function_id, "enable/")).json()["enabled"] is True  # idempotent
    assert api(gateway, "POST", fn_path(function_id, "disable/")).json()["enabled"] is False

    copied = api(gateway, "GET", fn_path(function_id, "token/"))
    assert copied.status_code == 200
    assert copied.json() == {
        "id": function_id,
        "url_path": f"/fn/{function_id}",
        "header": "x-proxy-token",
        "token": first_token,
    }
    regenerated = api(gateway, "POST", fn_path(function_id, "regenerate-token/"))
    assert regenerated.status_code == 200
    second_token = regenerated.json()["token"]
    assert re.fullmatch(r"[0-9a-f]{64}", second_token) and second_token != first_token
    assert api(gateway, "GET", fn_path(function_id, "token/")).json()["token"] == second_token
    assert "token" not in api(gateway, "GET", fn_path(function_id)).json()


def test_function_management_templates_fill_every_field(gateway: Gateway) -> None:
    ws = workspace(gateway)
    listed = api(gateway, "GET", "/api/function-templates/")
    assert listed.status_code == 200
    templates = listed.json()["templates"]
    assert [t["slug"] for t in templates] == TEMPLATE_SLUGS
    for template in templates:
        made = create(gateway, ws.env, template=template["slug"], secret_mappings=[{"variable_id": ws.variable}])
        for field in ("name", "description", "target_url", "method", "headers", "pass_through_body", "body_template"):
            assert made[field] == template[field], (template["slug"], field)
        (hint,) = template["secret_hints"]
        assert made["secret_mappings"] == [
            {
                "variable_id": ws.variable,
                "inject_as": hint["inject_as"],
                "key": hint["key"],
                "template": hint["template"],
            }
        ]
        assert made["template_id"] == template["slug"]
        assert (made["allowed_origins"], made["timeout_ms"], made["enabled"]) == (["*"], 25_000, True)
        assert made["rate_limit_per_minute"] is None

    # Anything sent wins over the template; a mapping's missing parts come from the hint at its position.
    staging, staging_variable = ws.environments[1], ws.variables[1]
    made = create(
        gateway,
        staging,
        template="openai",
        name="Support bot",
        rate_limit_per_minute=20,
        allowed_origins=["https://app.example.com"],
        secret_mappings=[
            {"variable_id": staging_variable, "template": "Token ${value}"},
            {"variable_id": staging_variable, "inject_as": "query", "key": "org"},
        ],
    )
    assert (made["name"], made["slug"], made["target_url"]) == (
        "Support bot",
        "support-bot",
        "https://api.openai.com/v1/chat/completions",
    )
    assert (made["rate_limit_per_minute"], made["allowed_origins"]) == (20, ["https://app.example.com"])
    assert made["secret_mappings"] == [
        {"variable_id": staging_variable, "inject_as": "header", "key": "Authorization", "template": "Token ${value}"},
        {"variable_id": staging_variable, "inject_as": "query", "key": "org", "template": ""},
    ]
    without = create(gateway, staging, template="stripe", secret_mappings=[])
    assert without["secret_mappings"] == [] and without["template_id"] == "stripe"


def test_function_management_template_needs_a_variable_per_hint(gateway: Gateway) -> None:
    ws = workspace(gateway)
    path = f"/api/environments/{ws.env}/functions/"
    missing = api(gateway, "POST", path, json={"template": "openai"})
    assert missing.status_code == 400
    error = error_of(missing)
    assert error["param"] == "secret_mappings" and "OPENAI_API_KEY" in error["message"]
    unpicked = api(gateway, "POST", path, json={"template": "openai", "secret_mappings": [{}]})
    assert unpicked.status_code == 400
    assert (
        "secret_mappings[0].variable_id: pick a variable (the template suggests OPENAI_API_KEY)"
        in (error_of(unpicked)["message"])
    )
    unknown = api(gateway, "POST", path, json={"template": "nope", "secret_mappings": []})
    assert unknown.status_code == 400 and error_of(unknown)["param"] == "template"


def _too_deep() -> Any:
    value: Any = 1
    for _ in range(33):
        value = [value]
    return value


# (field, value, words the message must hold); each sent on create and on PATCH.
INVALID: list[tuple[str, Any, str]] = [
    ("name", "", "name"),
    ("name", "!!!", "name: must contain at least one letter or digit"),
    ("name", "x" * 201, "name"),
    ("name", "line\nbreak", "name"),
    ("target_url", "ftp://api.example.com/x", "target_url: must be an absolute https:// URL"),
    ("target_url", "http://api.example.com/x", "target_url: must use https"),
    ("target_url", "https://10.1.2.3/x", "target_url: points at a private"),
    ("target_url", "https://[::ffff:169.254.169.254]/", "target_url: points at a private"),
    ("target_url", "https://me:pw@api.example.com/", "target_url: must not carry a user name"),
    ("target_url", "https://api.example.com/\r\nX: y", "target_url: must not contain spaces or control"),
    ("target_url", "https://a.example/" + "x" * 2000, "target_url"),
    ("target_url", "", "target_url: is required"),
    ("method", "PATCH", "method"),
    ("headers", {"Host": "evil.example"}, "headers: the name 'Host'"),
    ("headers", {"Transfer-Encoding": "chunked"}, "headers"),
    ("headers", {"X-A": "one\r\nX-B: two"}, "headers: the value of 'X-A'"),
    ("headers", {"Bad Name": "x"}, "headers: the name 'Bad Name'"),
    ("headers", {f"X-{i}": "v" for i in range(51)}, "headers"),
    ("headers", {"X-A": "v" * 5000}, "headers"),
    ("secret_mappings", [{"inject_as": "header", "key": "X-Key"}], "secret_mappings[0].variable_id"),
    ("secret_mappings", [{"variable_id": "VAR", "inject_as": "header"}], "secret_mappings[0].key is empty"),
    ("secret_mappings", [{"variable_id": "VAR", "inject_as": "header", "key": ""}], "secret_mappings[0].key"),
    ("secret_mappings", [{"variable_id": "VAR", "key": "X-Key"}], "secret_mappings[0].inject_as is required"),
    ("secret_mappings", [{"variable_id": "VAR", "inject_as": "cookie", "key": "k"}], "secret_mappings"),
    ("secret_mappings", [{"variable_id": "VAR", "inject_as": "header", "key": "Bad Key"}], "secret_mappings[0].key"),
    ("secret_mappings", [{"variable_id": "VAR", "inject_as": "body", "key": "a..b"}], "secret_mappings[0].key"),
    (
        "secret_mappings",
        [{"variable_id": "VAR", "inject_as": "header", "key": "Authorization", "template": "Bearer"}],
        "secret_mappings[0].template must contain ${value}",
    ),
    ("secret_mappings", [{"variable_id": "OTHER_ENV_VAR", "inject_as": "query", "key": "k"}], "no variable"),
    ("secret_mappings", [{"variable_id": 999_999_999, "inject_as": "query", "key": "k"}], "no variable 999999999"),
    ("secret_mappings", [{"variable_id": 0, "inject_as": "query", "key": "k"}], "secret_mappings"),
    ("secret_mappings", [{"variable_id": "VAR", "inject_as": "query", "key": f"k{i}"} for i in range(21)], "secret"),
    (
        "secret_mappings",
        [
            {"variable_id": "VAR", "inject_as": "query", "key": "k"},
            {"variable_id": "VAR", "inject_as": "query", "key": "k"},
        ],
        "secret_mappings[1]: the query 'k' is already set",
    ),
    ("secret_mappings", [{"variable_id": "VAR", "inject_as": "header", "key": "X", "extra": 1}], "secret_mappings"),
    ("allowed_origins", ["example.com"], "allowed_origins[0] 'example.com': needs a scheme"),
    ("allowed_origins", ["https://app.example.com/path"], "allowed_origins[0]"),
    ("allowed_origins", ["*.com"], "allowed_origins[0]"),
    ("allowed_origins", [f"https://a{i}.example" for i in range(51)], "allowed_origins"),
    ("allowed_origins", "*", "allowed_origins"),
    ("body_template", _too_deep(), "body_template: nests deeper than 32"),
    ("body_template", {"text": "x" * 70_000}, "body_template: must be at most 64 KiB"),
    ("rate_limit_per_minute", 0, "rate_limit_per_minute"),
    ("rate_limit_per_minute", 10_001, "rate_limit_per_minute"),
    ("rate_limit_per_minute", "10", "rate_limit_per_minute"),
    ("timeout_ms", 0, "timeout_ms"),
    ("timeout_ms", 25_001, "timeout_ms: must be 1..25000"),
    ("timeout_ms", 10**7, "timeout_ms"),
    ("description", "d" * 1001, "description"),
    ("forward_path", "yes", "forward_path"),
    ("forward_query", 1, "forward_query"),
    ("pass_through_body", None, "pass_through_body"),
    ("enabled", "no", "enabled"),
    ("secret_token", "0" * 64, "secret_token"),
]


def _filled(value: Any, ws: Workspace) -> Any:
    """The placeholders VAR / OTHER_ENV_VAR as this workspace's variable ids."""
    if value == "VAR":
        return ws.variable
    if value == "OTHER_ENV_VAR":
        return ws.variables[1]
    if isinstance(value, list):
        return [_filled(v, ws) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, ws) for k, v in value.items()}
    return value


def test_function_management_every_rule_is_a_400_naming_the_field(gateway: Gateway) -> None:
    ws = workspace(gateway)
    function_id = create(gateway, ws.env)["id"]
    problems = []
    for field, raw, words in INVALID:
        value = _filled(raw, ws)
        for method, path, body in (
            ("POST", f"/api/environments/{ws.env}/functions/", {"name": "Valid", "target_url": FAKE_TARGET}),
            ("PATCH", fn_path(function_id), {}),
        ):
            response = api(gateway, method, path, json={**body, field: value})
            if response.status_code != 400:
                problems.append(f"{method} {field}={str(raw)[:40]}: {response.status_code} {response.text[:200]}")
                continue
            error = error_of(response)
            if error["param"] != field or error["type"] != "invalid_request_error" or words not in error["message"]:
                problems.append(f"{method} {field}={str(raw)[:40]}: {error}")
    assert problems == []
    # Nothing was half-applied by a refused PATCH.
    assert api(gateway, "GET", fn_path(function_id)).json()["name"] == "Mailer"


def test_function_management_cross_field_rules(gateway: Gateway) -> None:
    ws = workspace(gateway)
    path = f"/api/environments/{ws.env}/functions/"
    body_secret = [{"variable_id": ws.variable, "inject_as": "body", "key": "credentials.token"}]
    get = api(
        gateway,
        "POST",
        path,
        json={"name": "G", "target_url": FAKE_TARGET, "method": "GET", "secret_mappings": body_secret},
    )
    assert get.status_code == 400 and "GET request has no body" in error_of(get)["message"]
    listed = api(
        gateway,
        "POST",
        path,
        json={"name": "L", "target_url": FAKE_TARGET, "body_template": [1, 2], "secret_mappings": body_secret},
    )
    assert listed.status_code == 400 and "must be a JSON object" in error_of(listed)["message"]
    made = create(gateway, ws.env, name="Dotted", secret_mappings=body_secret, body_template={"a": 1})
    assert made["secret_mappings"][0]["key"] == "credentials.token"
    # A PATCH is judged on the function it leaves behind.
    to_get = api(gateway, "PATCH", fn_path(made["id"]), json={"method": "GET"})
    assert to_get.status_code == 400 and error_of(to_get)["param"] == "secret_mappings"
    # http and private targets are fine for the hosts the operator allows (the tests' 127.0.0.1).
    local = create(gateway, ws.env, name="Local", target_url="http://127.0.0.1:9/hook")
    assert local["target_url"] == "http://127.0.0.1:9/hook"


def test_function_management_slug_is_unique_per_environment(gateway: Gateway) -> None:
    ws = workspace(gateway)
    first = create(gateway, ws.env, name="Stripe Charges")
    assert first["slug"] == "stripe-charges"
    clash = api(
        gateway,
        "POST",
        f"/api/environments/{ws.env}/functions/",
        json={"name": "stripe  charges!!", "target_url": FAKE_TARGET},
    )
    assert clash.status_code == 409
    error = error_of(clash)
    assert error["message"] == "A proxy function with this name already exists"
    assert (error["code"], error["param"]) == ("function_exists", "name")
    assert create(gateway, ws.environments[1], name="Stripe Charges")["slug"] == "stripe-charges"
    second = create(gateway, ws.env, name="Other")
    renamed = api(gateway, "PATCH", fn_path(second["id"]), json={"name": "STRIPE charges"})
    assert renamed.status_code == 409
    own = api(gateway, "PATCH", fn_path(first["id"]), json={"name": "Stripe charges"})
    assert own.status_code == 200 and own.json()["slug"] == "stripe-charges"
    long = create(gateway, ws.env, name="A very long name " * 5)
    assert len(long["slug"]) == 50 and not long["slug"].endswith("-")


def test_function_management_search_and_pages(gateway: Gateway) -> None:
    ws = workspace(gateway)
    made = [
        create(gateway, ws.env, name="Alpha mailer", target_url="https://api.alpha.example/send"),
        create(gateway, ws.env, name="Beta", target_url="https://hooks.example/Mail-Route"),
        create(gateway, ws.env, name="Gamma 100%", target_url="https://api.gamma.example/x"),
        create(gateway, ws.env, name="Delta_x", target_url="https://api.delta.example/x"),
        create(gateway, ws.env, name="Epsilon", target_url="https://api.epsilon.example/x"),
    ]
    create(gateway, ws.environments[1], name="Alpha mailer staging")  # another environment: never listed here

    # Three rows with one created_at: the id breaks the tie, so pages neither skip nor repeat.
    same_moment = datetime(2030, 1, 1, tzinfo=UTC)

    async def tied(session: AsyncSession) -> list[str]:
        async def one(name: str) -> str:
            row, _token = await add_function(
                session,
                fixed_keyring(),
                await _env(session, ws.env),
                FAKE_TARGET,
                name=name,
                slug=name.lower(),
                created_at=same_moment,
                updated_at=same_moment,
            )
            return row.id

        ids = [await one(f"Tied{i}") for i in range(3)]
        await session.commit()
        return ids

    tied_ids = gateway.run(_with_session(gateway.settings, tied))
    newest_first = sorted(tied_ids, reverse=True) + [m["id"] for m in reversed(made)]

    def page(**query: Any) -> Any:
        response = api(gateway, "GET", f"/api/environments/{ws.env}/functions/", params=query)
        assert response.status_code == 200, response.text
        return response.json()

    assert [f["id"] for f in page()["functions"]] == newest_first
    assert page()["next_cursor"] is None
    assert all("token" not in f for f in page()["functions"])
    collected: list[str] = []
    cursor = None
    sizes = []
    while True:
        body = page(limit=2, **({"cursor": cursor} if cursor else {}))
        collected += [f["id"] for f in body["functions"]]
        sizes.append(len(body["functions"]))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert collected == newest_first and sizes == [2, 2, 2, 2]
    assert len(page(limit=0)["functions"]) == 1  # clamped
    assert len(page(limit=10**6)["functions"]) == len(newest_first)

    def names(q: str) -> list[str]:
        return sorted(f["name"] for f in page(q=q)["functions"])

    assert names("MAIL") == ["Alpha mailer", "Beta"]  # name, and the target URL, ignoring case
    assert names("100%") == ["Gamma 100%"]  # % and _ are literal
    assert names("_") == ["Delta_x"]
    assert names("nothing-matches") == []
    assert names("API.EPSILON") == ["Epsilon"]

    bad = api(gateway, "GET", f"/api/environments/{ws.env}/functions/", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and error_of(bad)["param"] == "cursor"
    gone = api(gateway, "GET", "/api/environments/999999999/functions/")
    assert gone.status_code == 404 and error_of(gone)["code"] == "environment_not_found"


async def _env(session: AsyncSession, environment_id: int) -> Any:
    from functions.models import Environment

    return await session.get(Environment, environment_id)

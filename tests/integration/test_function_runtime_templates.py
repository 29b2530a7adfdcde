"""Every shipped template, end to end: created through the management API with a secret variable,
pointed at the fake third-party API (the template's own path kept), called through ``/fn``: the
target receives the template's static headers, the secret where the template's hint puts it
(its template applied), and the client's body as the template says."""

# ruff: noqa: F811 (the fixtures are imported by name)
from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

from functions.models import InjectAs
from functions.templates import FunctionTemplate, list_templates
from tests.fakes.function_api import api
from tests.fakes.function_calls import Served, served, third_party  # noqa: F401
from tests.fakes.function_rows import add_project, add_variable, fixed_keyring
from tests.fakes.gateway_fixtures import _with_session


def _variables(served: Served, template: FunctionTemplate, secret: str) -> tuple[int, list[int]]:
    """A fresh project's Development environment holding one variable per hint of ``template``."""

    async def work(session: object) -> tuple[int, list[int]]:
        ring = fixed_keyring()
        _project, environments = await add_project(
            session,  # type: ignore[arg-type]
            served.gateway.account_id,
            f"Templates {secrets.token_hex(4)}",
        )
        environment = environments[0]
        made = [
            await add_variable(session, ring, environment, hint.variable_name_hint or f"VAR_{index}", secret)  # type: ignore[arg-type]
            for index, hint in enumerate(template.secret_hints)
        ]
        await session.commit()  # type: ignore[attr-defined]
        return environment.id, [variable.id for variable in made]

    result: tuple[int, list[int]] = served.gateway.run(_with_session(served.gateway.settings, work))
    return result


def test_function_runtime_serves_every_template(served: Served) -> None:
    # One gateway for all fifteen (a gateway per template costs more than the calls themselves).
    templates = list_templates()
    assert len(templates) == 15
    for template in templates:
        _serve_template(served, template)


def _serve_template(served: Served, template: FunctionTemplate) -> None:
    secret = f"secret-{secrets.token_hex(8)}"
    environment_id, variable_ids = _variables(served, template, secret)
    path = urlsplit(template.target_url).path
    created = api(
        served.gateway,
        "POST",
        f"/api/environments/{environment_id}/functions/",
        json={
            "template": template.slug,
            "target_url": served.third_party.url + path,
            "secret_mappings": [{"variable_id": variable_id} for variable_id in variable_ids],
        },
    )
    assert created.status_code == 201, (template.slug, created.text)
    function = created.json()
    assert function["template_id"] == template.slug and function["headers"] == template.headers

    form = template.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
    body = b"amount=2000&currency=eur" if form else b'{"hello": "world"}'
    answer = api(
        served.gateway,
        template.method.value,
        function["url_path"],
        content=body,
        headers={
            "x-proxy-token": function["token"],
            "Origin": "https://app.example",
            "Content-Type": "application/x-www-form-urlencoded" if form else "application/json",
            "Cookie": "session=client-only",
        },
    )
    assert answer.status_code == 200, (template.slug, answer.text)
    assert secret not in answer.text

    received = served.third_party.last
    assert received.path == path and received.method == template.method.value
    for name, value in template.headers.items():
        assert received.headers[name.lower()] == value
    for hint in template.secret_hints:
        expected = hint.template.replace("${value}", secret, 1) if hint.template else secret
        if hint.inject_as is InjectAs.HEADER:
            assert received.headers[hint.key.lower()] == expected
        elif hint.inject_as is InjectAs.QUERY:
            assert parse_qs(received.query)[hint.key] == [expected]
        else:
            assert received.json[hint.key] == expected
    assert "cookie" not in received.headers and "x-proxy-token" not in received.headers
    if form:
        assert received.body == body  # a form body passes byte for byte (envmanager dropped it)
    elif not any(hint.inject_as is InjectAs.BODY for hint in template.secret_hints):
        assert received.json == {"hello": "world"}

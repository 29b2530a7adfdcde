"""Download Code, run: each platform's generated file under Node with that platform's request
shape (tests/node/harness.mjs), against a fake third-party API on 127.0.0.1.

One Node process per platform runs every case; Lambda runs twice, with API Gateway events of
payload version 1.0 (REST API) and 2.0 (HTTP API). The functions are real rows (encrypted
secrets, tokens) resolved as the runtime resolves them (``load_function``); the generated
files read the secrets and the token from the environment the harness gives each case, and
must behave like the hosted ``/fn`` runtime: token, origin, preflight, method, body size,
every kind of injection, body template, pass-through bodies, status pass-through, 502, 504.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import pytest

from billing.accounts import create_account
from functions.codegen import Platform, file_slug, generate
from functions.config import ResolvedFunction
from functions.directory import load_function
from gateway.db import create_engine, create_sessionmaker, migrate
from tests.fakes.function_rows import add_function, add_project, add_variable, fixed_keyring
from tests.fakes.servers import ThreadedServer, free_port
from tests.fakes.services import UNDER_CI

HARNESS = Path(__file__).resolve().parents[1] / "node" / "harness.mjs"
NODE = shutil.which("node")
TARGETS = ["vercel", "netlify", "cloudflare", "lambda-v1", "lambda-v2"]
APP = "https://app.example.com"
SECRETS = {
    "API_KEY": "api-" + secrets.token_hex(8),
    "QUERY_KEY": "query-" + secrets.token_hex(8),
    "BODY_KEY": "body-" + secrets.token_hex(8),
}
HOSTILE_NAME = '"; process.exit(1); //\u2028*/ </script> __BASE_PATH__ \\'
HOSTILE_KEY = 'x"); process.exit(2); ("'
HOSTILE_HEADER = "\"'`${process.exit(3)}"


# -- the fake third-party API ------------------------------------------------------------------


class FakeThirdParty:
    """Echoes what it received as JSON: method, raw path, query, headers and body (base64).

    ``?status=`` and ``?ctype=`` choose the answer's status and content type; a path ending in
    ``/slow`` never answers (it waits for the caller to give up and disconnect)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/slow"):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    while (await receive())["type"] != "http.disconnect":
                        pass
            return
        query = parse_qs(scope["query_string"].decode())
        echo = {
            "method": scope["method"],
            "path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
            "body": base64.b64encode(body).decode(),
        }
        content_type = query.get("ctype", ["application/json"])[0]
        await send(
            {
                "type": "http.response.start",
                "status": int(query.get("status", ["200"])[0]),
                "headers": [(b"content-type", content_type.encode()), (b"x-upstream-only", b"dropped")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(echo).encode()})


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadedServer(FakeThirdParty()).start()
    try:
        yield server.url
    finally:
        server.stop()


# -- the functions -------------------------------------------------------------------------------


@dataclass
class Deployed:
    function: ResolvedFunction
    token: str


async def _build(database_url: str, upstream: str) -> dict[str, Deployed]:
    await migrate(database_url)
    engine = create_engine(database_url)
    ring = fixed_keyring()
    try:
        async with create_sessionmaker(engine)() as session:
            account = await create_account(session, "codegen")
            _project, environments = await add_project(session, account.id)
            env = environments[0]
            ids = {key: (await add_variable(session, ring, env, key, value)).id for key, value in SECRETS.items()}

            def mapping(key: str, inject_as: str, name: str, template: str = "") -> dict[str, Any]:
                return {"variable_id": ids[key], "inject_as": inject_as, "key": name, "template": template}

            closed_port = free_port()
            specs: dict[str, dict[str, Any]] = {
                "main": {
                    "target_url": f"{upstream}/echo?fixed=1",
                    "method": "POST",
                    "headers": {"X-Static": "static", "Authorization": "static-is-overridden"},
                    "secret_mappings": [
                        mapping("API_KEY", "header", "Authorization", "Bearer ${value}"),
                        mapping("QUERY_KEY", "query", "api_key"),
                        mapping("BODY_KEY", "body", "credentials.token", "tok-${value}-${value}"),
                    ],
                    "allowed_origins": [APP, "*.example.org", "http://localhost:3000"],
                    "forward_path": True,
                    "forward_query": True,
                },
                "template": {
                    "target_url": f"{upstream}/tpl",
                    "method": "PUT",
                    "secret_mappings": [mapping("BODY_KEY", "body", "fixed.secret")],
                    "body_template": {"fixed": {"a": 1}, "list": [1, 2]},
                    "pass_through_body": True,
                    "allowed_origins": ["*"],
                },
                "plain": {"target_url": f"{upstream}/plain", "method": "POST"},
                "slow": {"target_url": f"{upstream}/slow", "method": "GET", "timeout_ms": 300},
                "down": {"target_url": f"http://127.0.0.1:{closed_port}/x", "method": "GET"},
                "closed": {"target_url": f"{upstream}/closed", "method": "POST", "allowed_origins": []},
                "hostile": {
                    "name": HOSTILE_NAME,
                    "slug": HOSTILE_NAME,
                    "target_url": f"{upstream}/h?q=%22'",
                    "method": "GET",
                    "headers": {"X-Evil": HOSTILE_HEADER},
                    "secret_mappings": [mapping("API_KEY", "query", HOSTILE_KEY, "</script>${value}\u2029")],
                },
            }
            rows = {name: await add_function(session, ring, env, **fields) for name, fields in specs.items()}
            await session.commit()
            deployed = {}
            for name, (row, token) in rows.items():
                function = await load_function(session, row.id, ring)
                assert function is not None and not function.unresolved
                deployed[name] = Deployed(function, token)
            return deployed
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def deployed(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Deployed]:
    database = tmp_path_factory.mktemp("codegen") / "codegen.db"
    return asyncio.run(_build(f"sqlite+aiosqlite:///{database}", upstream))


# -- the cases ------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> str:
        data = self.json()
        assert self.headers.get("content-type") == "application/json", self.headers
        assert set(data) == {"error"}
        return str(data["error"])

    def echo(self) -> dict[str, Any]:
        """What the fake API received."""
        assert self.status == 200, (self.status, self.body[:300])
        return dict(self.json())


def upstream_headers(echo: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in echo["headers"]}


def upstream_body(echo: dict[str, Any]) -> bytes:
    return base64.b64decode(echo["body"])


@dataclass
class Case:
    name: str
    module: str
    method: str
    check: Callable[[Answer], None]
    path: str = ""
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stream: bool = False
    token: bool = True  # send the function's x-proxy-token
    drop_env: tuple[str, ...] = ()
    # Only these targets: a web Request's URL is already normalised ("/a/%2e%2e/b" is "/b"), so
    # only API Gateway, which hands over the decoded path, can bring dot segments.
    targets: tuple[str, ...] = tuple(TARGETS)


def _cors_echoed(answer: Answer, origin: str) -> None:
    assert answer.headers["access-control-allow-origin"] == origin
    assert answer.headers["vary"] == "Origin"
    assert answer.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert answer.headers["access-control-allow-headers"] == "Content-Type, x-proxy-token"
    assert answer.headers["access-control-max-age"] == "86400"


def check_preflight(answer: Answer) -> None:
    assert answer.status == 204 and answer.body == b""
    _cors_echoed(answer, APP)


def check_preflight_refused(answer: Answer) -> None:
    assert answer.status == 403 and answer.error() == "Origin not allowed"
    assert not any(name.startswith("access-control-") for name in answer.headers)


def refused(status: int, message: str, origin: str | None = APP) -> Callable[[Answer], None]:
    """A refusal with the CORS headers; ``origin``: the Access-Control-Allow-Origin it must carry
    (the caller's origin echoed, ``*``, or None for none)."""

    def check(answer: Answer) -> None:
        assert (answer.status, answer.error()) == (status, message)
        assert answer.headers["access-control-allow-methods"].endswith(", OPTIONS")
        assert answer.headers.get("access-control-allow-origin") == origin
        assert answer.headers.get("vary") == ("Origin" if origin not in (None, "*") else None)

    return check


def check_method(answer: Answer) -> None:
    refused(405, "Method PUT not allowed. Expected POST")(answer)
    assert answer.headers["allow"] == "POST, OPTIONS"


def check_not_found(answer: Answer) -> None:
    assert (answer.status, answer.error()) == (404, "Not found")
    assert not any(name.startswith("access-control-") for name in answer.headers)


def check_json_injection(answer: Answer) -> None:
    echo = answer.echo()
    _cors_echoed(answer, APP)
    assert answer.headers["content-type"] == "application/json"
    assert "x-upstream-only" not in answer.headers  # only the content type of the target's headers
    assert echo["method"] == "POST"
    assert echo["path"] == "/echo/customers/42%20b"
    assert parse_qsl(echo["query"]) == [("fixed", "1"), ("page", "2"), ("api_key", SECRETS["QUERY_KEY"])]
    headers = upstream_headers(echo)
    assert headers["authorization"] == f"Bearer {SECRETS['API_KEY']}"  # the secret over the static header
    assert headers["x-static"] == "static"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Tollway"
    for private in ("cookie", "x-proxy-token", "origin", "x-client"):
        assert private not in headers, private
    assert json.loads(upstream_body(echo)) == {
        "message": "hi",
        "credentials": {"other": 1, "token": f"tok-{SECRETS['BODY_KEY']}-${{value}}"},  # first ${value} only
    }


FORM = b"a=1&b=two+three&c=%C3%BC"
BINARY = bytes(range(256)) * 4


ODD_JSON = b'{ "a" :  1,\n"b": [ ] }'


def passed_through(body: bytes, content_type: str, *, secret: bool = True) -> Callable[[Answer], None]:
    """The client's bytes went upstream untouched, with its content type."""

    def check(answer: Answer) -> None:
        echo = answer.echo()
        assert upstream_body(echo) == body
        assert upstream_headers(echo)["content-type"] == content_type
        if secret:
            assert upstream_headers(echo)["authorization"] == f"Bearer {SECRETS['API_KEY']}"

    return check


def check_text_plain_json(answer: Answer) -> None:
    """A JSON object sent as text/plain (a "simple" request, no preflight) still gets the body secrets."""
    echo = answer.echo()
    assert upstream_headers(echo)["content-type"] == "application/json"
    assert json.loads(upstream_body(echo)) == {
        "message": "hi",
        "credentials": {"token": f"tok-{SECRETS['BODY_KEY']}-${{value}}"},
    }


def check_status(answer: Answer) -> None:
    assert answer.status == 418
    assert answer.headers["content-type"] == "text/plain"
    assert json.loads(answer.body)["path"] == "/echo"


def check_pattern_origin(answer: Answer) -> None:
    answer.echo()
    assert answer.headers["access-control-allow-origin"] == "https://a.b.example.org"


def check_template(answer: Answer) -> None:
    echo = answer.echo()
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "vary" not in answer.headers
    assert (echo["method"], echo["path"], echo["query"]) == ("PUT", "/tpl", "")  # no client path or query here
    assert upstream_headers(echo)["content-type"] == "application/json"
    assert json.loads(upstream_body(echo)) == {"fixed": {"a": 1, "secret": SECRETS["BODY_KEY"]}, "list": [1, 2]}


def check_hostile(answer: Answer) -> None:
    echo = answer.echo()
    query = parse_qsl(echo["query"])
    assert query == [("q", "\"'"), (HOSTILE_KEY, f"</script>{SECRETS['API_KEY']}\u2029")]
    assert upstream_headers(echo)["x-evil"] == HOSTILE_HEADER


GOOD = {"origin": APP}
JSON_BODY = json.dumps({"message": "hi", "credentials": {"other": 1}}).encode()
TOO_LARGE = "Request body too large (max 1MB)"
MISCONFIGURED = "Failed to resolve proxy configuration"

CASES = [
    Case("preflight", "main", "OPTIONS", check_preflight, headers=GOOD, token=False),
    Case("preflight_refused", "main", "OPTIONS", check_preflight_refused, headers={"origin": "https://evil.test"}),
    Case("token_missing", "main", "POST", refused(401, "Missing x-proxy-token header"), headers=GOOD, token=False),
    Case(
        "token_wrong",
        "main",
        "POST",
        refused(401, "Invalid proxy token"),
        headers={**GOOD, "x-proxy-token": "0" * 64},
        token=False,
    ),
    Case(
        "origin_refused",
        "main",
        "POST",
        refused(403, "Origin not allowed", "https://evil.test"),
        headers={"origin": "https://evil.test"},
    ),
    Case("origin_missing", "main", "POST", refused(403, "Origin not allowed", None)),
    Case(
        "origin_apex_not_pattern",
        "main",
        "POST",
        refused(403, "Origin not allowed", "https://example.org"),
        headers={"origin": "https://example.org"},
    ),
    Case("origin_pattern", "main", "POST", check_pattern_origin, headers={"origin": "https://a.b.example.org"}),
    Case("method", "main", "PUT", check_method, headers=GOOD, body=b"{}"),
    Case(
        "json_injection",
        "main",
        "POST",
        check_json_injection,
        path="/customers/42%20b",
        query="page=2&api_key=from-the-caller",
        headers={
            **GOOD,
            "content-type": "application/json",
            "cookie": "session=private",
            "x-client": "private",
            "authorization": "Bearer client-credential",
        },
        body=JSON_BODY,
    ),
    Case(
        "form_pass_through",
        "main",
        "POST",
        passed_through(FORM, "application/x-www-form-urlencoded"),
        headers={**GOOD, "content-type": "application/x-www-form-urlencoded"},
        body=FORM,
    ),
    Case(
        "binary_pass_through",
        "main",
        "POST",
        passed_through(BINARY, "application/octet-stream"),
        headers={**GOOD, "content-type": "application/octet-stream"},
        body=BINARY,
    ),
    Case(
        "text_plain_json_merged",
        "main",
        "POST",
        check_text_plain_json,
        headers={**GOOD, "content-type": "text/plain;charset=UTF-8"},  # what fetch sends for a string body
        body=b'{"message": "hi"}',
    ),
    Case(
        "json_without_secrets_untouched",
        "plain",
        "POST",
        passed_through(ODD_JSON, "application/json; charset=utf-8", secret=False),
        headers={"content-type": "application/json; charset=utf-8"},
        body=ODD_JSON,
    ),
    Case("status", "main", "POST", check_status, query="status=418&ctype=text/plain", headers=GOOD, body=b"{}"),
    Case(
        "too_large_declared",
        "main",
        "POST",
        refused(413, TOO_LARGE),  # before the token check
        headers={**GOOD, "content-length": "2000000"},
        body=b"{}",
        token=False,
    ),
    Case("too_large_read", "main", "POST", refused(413, TOO_LARGE), headers=GOOD, body=b"a" * (1024 * 1024 + 1)),
    Case(
        "too_large_streamed",
        "main",
        "POST",
        refused(413, TOO_LARGE),
        headers=GOOD,
        body=b"a" * (1024 * 1024 + 1),
        stream=True,
    ),
    Case(
        "dot_segments",
        "main",
        "POST",
        refused(400, "Invalid path"),
        path="/%2e%2E/admin",
        headers=GOOD,
        body=b"{}",
        targets=("lambda-v1", "lambda-v2"),
    ),
    Case("secret_unset", "main", "POST", refused(500, MISCONFIGURED), headers=GOOD, body=b"{}", drop_env=("BODY_KEY",)),
    Case(
        "token_unset", "main", "POST", refused(500, MISCONFIGURED), headers=GOOD, body=b"{}", drop_env=("PROXY_TOKEN",)
    ),
    Case(
        "body_template",
        "template",
        "PUT",
        check_template,
        query="page=2",
        headers={"content-type": "application/json"},
        body=b'{"ignored": true}',
    ),
    Case(
        "extra_path_not_forwarded",
        "template",
        "PUT",
        check_not_found,
        path="/customers",
        body=b"{}",
        targets=("vercel", "netlify", "lambda-v1", "lambda-v2"),
    ),
    # A worker answers on its whole route: without forward_path its path is not looked at.
    Case(
        "worker_route_path",
        "template",
        "PUT",
        check_template,
        path="/api/send",
        query="page=2",
        body=b'{"ignored": true}',
        targets=("cloudflare",),
    ),
    Case("timeout", "slow", "GET", refused(504, "Gateway timeout: target API did not respond in time", "*")),
    Case("unreachable", "down", "GET", refused(502, "Failed to reach target API", "*")),
    Case("closed_no_origin", "closed", "POST", refused(403, "Origin not allowed", None)),
    Case("closed_origin", "closed", "POST", refused(403, "Origin not allowed"), headers=GOOD),
    Case("closed_preflight", "closed", "OPTIONS", check_preflight_refused, headers=GOOD),
    Case("hostile_config", "hostile", "GET", check_hostile, headers={"origin": "https://anywhere.test"}),
]


# -- running them ---------------------------------------------------------------------------------


def _node() -> str:
    if NODE is None:
        message = "node (20+) is not installed: the generated code cannot be run"
        if UNDER_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return NODE


def _platform(target: str) -> Platform:
    return Platform.LAMBDA if target.startswith("lambda") else Platform(target)


def _cases(target: str) -> list[Case]:
    return [case for case in CASES if target in case.targets]


def _spec(target: str, deployed: dict[str, Deployed], directory: Path) -> dict[str, Any]:
    modules = {}
    for name, entry in deployed.items():
        code = generate(entry.function, _platform(target))
        file = directory / f"{name}.mjs"  # .ts files are plain JavaScript: only the extension changes
        file.write_text(code.content, encoding="utf-8")
        base = f"/api/proxy-{file_slug(entry.function.slug)}" if target in ("vercel", "netlify") else ""
        modules[name] = {"file": str(file), "basePath": base}
    cases = []
    for case in _cases(target):
        env = {"PROXY_TOKEN": deployed[case.module].token, **SECRETS}
        headers = dict(case.headers)
        if case.token:
            headers["x-proxy-token"] = deployed[case.module].token
        cases.append(
            {
                "name": case.name,
                "module": case.module,
                "env": {name: value for name, value in env.items() if name not in case.drop_env},
                "method": case.method,
                "path": case.path,
                "query": case.query,
                "headers": headers,
                "body": base64.b64encode(case.body).decode() if case.body is not None else None,
                "stream": case.stream,
            }
        )
    return {"platform": target, "modules": modules, "cases": cases}


@pytest.mark.parametrize("target", TARGETS)
def test_function_codegen_runs_like_the_hosted_runtime(
    target: str, deployed: dict[str, Deployed], tmp_path: Path
) -> None:
    node = _node()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_spec(target, deployed, tmp_path)), encoding="utf-8")
    run = subprocess.run([node, str(HARNESS), str(spec_file)], capture_output=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-3000:]
    results = {item["name"]: item for item in json.loads(run.stdout)}
    assert list(results) == [case.name for case in _cases(target)]
    failures = []
    for case in _cases(target):
        item = results[case.name]
        answer = Answer(item["status"], item["headers"], base64.b64decode(item["body"]))
        try:
            case.check(answer)
        except (AssertionError, KeyError, ValueError) as error:
            failures.append(f"{case.name}: {error!r} -> {answer.status} {answer.headers} {answer.body[:400]!r}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("platform", list(Platform))
def test_function_codegen_file_holds_no_secret_and_no_token(platform: Platform, deployed: dict[str, Deployed]) -> None:
    for entry in deployed.values():
        content = generate(entry.function, platform).content
        assert entry.token not in content
        for value in SECRETS.values():
            assert value not in content

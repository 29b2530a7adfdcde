"""``POST /api/functions/{id}/test/`` through the real HTTP app on both backends: the server calls
the function itself, whatever its allowed origins, with every other check of a real call; any
role may test; another account's function is a 404."""

# ruff: noqa: F811 (the fixtures are imported by name)
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.fakes.function_api import Person, other_account_workspace
from tests.fakes.function_calls import Fn, Served, served, third_party  # noqa: F401
from tests.fakes.third_party import BIG

SECRET = "sk_test_" + "8" * 24


def run_test(served: Served, fn: Fn, key: str | None = None, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{served.gateway.url}/api/functions/{fn.id}/test/",
        json=body,
        headers={"Authorization": f"Bearer {key or served.gateway.key}"},
        timeout=30,
    )


def test_function_test_endpoint_calls_whatever_the_allowed_origins(served: Served) -> None:
    fn = served.function(
        "/json",
        allowed_origins=["https://only.example"],
        secrets_by_key={"API_KEY": SECRET},
        mappings=[{"variable": "API_KEY", "inject_as": "header", "key": "api-key"}],
    )
    assert fn.call("POST").status_code == 403  # no Origin: refused for a real caller
    response = run_test(served, fn, body='{"to": "a@b.test"}')
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"status", "duration_ms", "headers", "body", "truncated"}
    assert (result["status"], result["truncated"]) == (200, False)
    assert result["body"] == json.dumps({"ok": True, "path": "/json"}, indent=2)
    assert result["headers"]["content-type"] == "application/json"
    assert result["duration_ms"] >= 0
    received = served.third_party.last
    assert (received.body, received.headers["api-key"]) == (b'{"to": "a@b.test"}', SECRET)
    assert received.headers["content-type"] == "application/json"
    assert SECRET not in response.text


def test_function_test_endpoint_keeps_every_other_check(served: Served) -> None:
    served.gateway.clock.set_now(datetime.now(UTC).replace(second=0, microsecond=0))  # no minute ends mid-test
    fn = served.function("/json", rate_limit_per_minute=1)
    assert run_test(served, fn, token="0" * 64).json()["status"] == 401
    assert run_test(served, fn, method="GET").json()["status"] == 405
    assert run_test(served, fn).json()["status"] == 200  # the function's own token by default
    limited = run_test(served, fn).json()
    assert limited["status"] == 429
    assert json.loads(limited["body"])["error"] == "Rate limit exceeded"
    assert "retry-after" in limited["headers"]
    disabled = served.function("/json", enabled=False)
    assert run_test(served, disabled).json()["status"] == 404


def test_function_test_endpoint_shows_paths_queries_and_long_or_encoded_bodies(served: Served) -> None:
    forwarding = served.function("/base", forward_path=True, forward_query=True, method="GET")
    result = run_test(served, forwarding, path="/items/42", query="?a=1&b=two")
    assert result.json()["status"] == 200
    assert (served.third_party.last.path, served.third_party.last.query) == ("/base/items/42", "a=1&b=two")
    assert run_test(served, forwarding, path="../etc").json()["status"] == 400
    assert run_test(served, served.function("/json"), path="more").json()["status"] == 404  # not forwarded
    big = run_test(served, served.function("/big")).json()
    assert big["truncated"] is True
    assert len(big["body"]) == 64 * 1024
    assert BIG.decode().startswith(big["body"])
    compressed = run_test(served, served.function("/gzip")).json()
    assert compressed["body"] == json.dumps({"compressed": True}, indent=2)
    text = run_test(served, served.function("/text")).json()
    assert (text["body"], text["headers"]["content-type"]) == ("hello, world", "text/plain; charset=utf-8")


def test_function_test_endpoint_roles_and_tenancy(served: Served) -> None:
    fn = served.function("/json")
    viewer = Person(served.gateway, "viewer")
    response = viewer.request("POST", f"/api/functions/{fn.id}/test/", json={})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == 200
    stranger = other_account_workspace(served.gateway)
    missing = run_test(served, fn, key=stranger.key)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "function_not_found"
    unknown = httpx.post(
        f"{served.gateway.url}/api/functions/nope/test/",
        json={},
        headers={"Authorization": f"Bearer {served.gateway.key}"},
    )
    assert unknown.status_code == 404
    bad = run_test(served, fn, unknown_field=1)
    assert bad.status_code == 400

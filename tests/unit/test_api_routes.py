"""The management API's route table and its published OpenAPI schema.

``test_api_routes_every_route_has_an_access_guard`` walks the app's routes: an ``/api`` route
with neither a ``requires(...)`` guard nor the operator guard would be public, so it fails here
unless it is on the short list of routes that are public on purpose.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from openapi_spec_validator import validate

from gateway.api.deps import is_access_guard
from gateway.app import create_app
from gateway.settings import Settings

# Public on purpose: signing in, refreshing or ending a session (each checks its own cookie and
# CSRF token), and accepting an invitation (the one-time token, and a password or a session).
PUBLIC = {
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/invitations/accept"),
}


def _app() -> Litestar:
    return create_app(Settings())


def _routes(app: Litestar, prefix: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    found: list[tuple[str, str, Any]] = []
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path.startswith(prefix):
            for handler in route.route_handlers:
                for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                    found.append((method, route.path, handler))
    return found


def test_api_routes_every_route_has_an_access_guard() -> None:
    routes = _routes(_app(), ("/api",))
    unguarded = {
        (method, path)
        for method, path, handler in routes
        if not any(is_access_guard(guard) for guard in handler.resolve_guards())
    }
    assert unguarded - PUBLIC == set(), "give these routes guards=[requires(Permission.…)] (gateway/api/deps.py)"
    assert PUBLIC - {(m, p) for m, p, _h in routes} == set(), "a public route on the list no longer exists"


def test_api_routes_public_ones_have_no_access_guard() -> None:
    """The allow-list is exact: a route on it that gained a guard should leave the list."""
    for method, path, handler in _routes(_app(), ("/api",)):
        if (method, path) in PUBLIC:
            assert not any(is_access_guard(g) for g in handler.resolve_guards()), f"{method} {path}"


def _schema() -> dict[str, Any]:
    client = TestClient(_app())  # no lifespan: serving the schema needs no database
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    schema: dict[str, Any] = response.json()
    return schema


def _openapi_path(path: str) -> str:
    """``/api/keys/{key_id:int}`` as the schema names it: ``/api/keys/{key_id}``."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def test_api_routes_schema_is_served_and_valid() -> None:
    schema = _schema()
    validate(schema)
    assert schema["components"]["schemas"]["ErrorEnvelope"]["properties"]["error"]
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerKey"]["scheme"] == "bearer"
    assert schemes["sessionCookie"] == {**schemes["sessionCookie"], "type": "apiKey", "in": "cookie"}
    assert schemes["csrfHeader"] == {**schemes["csrfHeader"], "type": "apiKey", "in": "header"}
    assert schemes["operatorToken"]["scheme"] == "bearer"
    client = TestClient(_app())
    assert client.get("/schema").status_code == 200  # the browsable page


def test_api_routes_schema_documents_every_route_with_auth_and_errors() -> None:
    schema = _schema()
    app = _app()
    operation_ids: set[str] = set()
    for method, path, _handler in _routes(app, ("/api", "/v1")):
        operation = schema["paths"][_openapi_path(path)][method.lower()]
        where = f"{method} {path}"
        assert operation["operationId"] not in operation_ids, where
        operation_ids.add(operation["operationId"])
        assert not operation["operationId"].startswith(("Api", "V1")), f"{where}: set operation_id"
        errors = {status: r for status, r in operation["responses"].items() if int(status) >= 400}
        assert errors, f"{where}: no error responses documented"
        for status, response in errors.items():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            # /v1/messages answers errors in Anthropic's envelope (gateway/api/messages.py).
            envelope = "AnthropicError" if path.startswith("/v1/messages") else "ErrorEnvelope"
            assert ref == f"#/components/schemas/{envelope}", f"{where} {status}"
        security = operation["security"]
        if path.startswith("/api/admin"):
            assert security == [{"operatorToken": []}], where
            assert "401" in errors, where
        elif path.startswith("/v1"):
            assert security == [{"bearerKey": []}], where
            assert {"401", "403"} <= set(errors), where
        elif (method, path) not in PUBLIC:
            # A key or a session (changing a password: a session only), never the operator's token.
            assert security and all(
                entry in ({"bearerKey": []}, {"sessionCookie": [], "csrfHeader": []}) for entry in security
            ), where
            assert {"401", "403"} <= set(errors), where


def test_api_routes_schema_documents_v1_request_bodies() -> None:
    paths = _schema()["paths"]
    expected = {
        "/v1/chat/completions": "ChatCompletionRequest",
        "/v1/completions": "CompletionRequest",
        "/v1/embeddings": "EmbeddingRequest",
        "/v1/images/generations": "ImageRequest",
        "/v1/audio/speech": "SpeechRequest",
        "/v1/audio/transcriptions": "TranscriptionForm",
        "/v1/videos": "VideoForm",
        "/v1/messages": "MessagesRequest",
        "/v1/messages/count_tokens": "CountTokensRequest",
        "/v1/responses": "ResponseCreateRequest",
    }
    for path, name in expected.items():
        (media,) = paths[path]["post"]["requestBody"]["content"].values()
        assert media["schema"]["title"] == name, path
    chat = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(chat["required"]) == {"model", "messages"}
    assert chat["properties"]["messages"]["items"]["properties"]["role"]["enum"]  # inlined, no dangling $ref


def test_api_routes_schema_documents_api_bodies_with_their_bounds() -> None:
    schema = _schema()
    body = schema["paths"]["/api/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    key_create = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert key_create["properties"]["name"]["maxLength"] == 200
    assert key_create["required"] == ["name"]
    answer = schema["paths"]["/api/keys"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/KeyCreated")

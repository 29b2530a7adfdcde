"""The published OpenAPI schema (``/schema``, JSON at ``/schema/openapi.json``): the error
envelope every route answers with, the three ways to authenticate, and the error statuses.

A controller names its auth once (``security=MEMBER_AUTH`` on the class) and each handler the
statuses it can answer (``responses=errors(400, 404)``), so a generated client knows both. The
statuses below are the ones the code raises; ``errors`` refuses any other, so a typo cannot
document a status that nothing answers with.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from gateway.api.deps import ACCESS_COOKIE, CSRF_HEADER

__all__ = [
    "ADMIN_AUTH",
    "MEMBER_AUTH",
    "PUBLIC",
    "V1_AUTH",
    "ErrorBody",
    "ErrorEnvelope",
    "errors",
    "openapi_config",
]


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct):
    """OpenAI's error shape, which every failure of every route is rendered in (gateway/errors.py)."""

    error: ErrorBody


_WHY = {
    400: "The request is invalid (a field out of its bounds, malformed JSON, an unknown model…).",
    401: "Missing, invalid, expired or revoked credentials.",
    402: "Not enough credits, or a spending limit reached.",
    403: "The credentials are valid but not allowed to do this (role, key restriction, account status).",
    404: "No such resource in this account.",
    409: "It already exists.",
    413: "The request body is too large.",
    429: "A rate limit was reached; see Retry-After.",
    499: "The client disconnected before the answer was ready.",
    502: "The upstream provider failed or answered something unusable.",
    503: "Something the request needs is unavailable: no provider for this model, or no secret key ring configured.",
    504: "The upstream provider did not answer in time.",
}


def errors(*statuses: int) -> Mapping[int, ResponseSpec]:
    """The documented error answers of a route, each in the OpenAI error envelope."""
    return {
        status: ResponseSpec(data_container=ErrorEnvelope, description=_WHY[status], generate_examples=False)
        for status in sorted(statuses)
    }


# Alternatives (OpenAPI: any one entry of the list; every scheme within one entry).
V1_AUTH: list[SecurityRequirement] = [{"bearerKey": []}]
MEMBER_AUTH: list[SecurityRequirement] = [{"bearerKey": []}, {"sessionCookie": [], "csrfHeader": []}]
ADMIN_AUTH: list[SecurityRequirement] = [{"operatorToken": []}]
PUBLIC: list[SecurityRequirement] = [{}]

_SCHEMES = {
    "bearerKey": SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="prx-… key (or a bt-… browser token, on /v1 only)",
        description="An API key of the account. A key with restrictions acts with a narrower role on /api.",
    ),
    "sessionCookie": SecurityScheme(
        type="apiKey",
        name=ACCESS_COOKIE,
        security_scheme_in="cookie",
        description="The dashboard's session, set by POST /api/auth/login/.",
    ),
    "csrfHeader": SecurityScheme(
        type="apiKey",
        name=CSRF_HEADER,
        security_scheme_in="header",
        description="With the session cookie, on every write (POST, PATCH, PUT, DELETE): the csrf_token "
        "the sign-in answered (also in the tw_csrf cookie). Reads need only the cookie.",
    ),
    "operatorToken": SecurityScheme(
        type="http",
        scheme="bearer",
        description="The operator's admin_token from the gateway's configuration (/api/admin only).",
    ),
}


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Tollway",
        version="0.1.0",
        description="An OpenAI-compatible AI gateway with credit metering: the OpenAI-shaped /v1 API and "
        "the /api management API. Every error is answered in OpenAI's error envelope.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
        components=Components(security_schemes=dict(_SCHEMES)),
        use_handler_docstrings=True,
    )

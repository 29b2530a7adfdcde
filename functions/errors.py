"""Errors of proxy-function management; each carries its HTTP status and OpenAI ``error.code``.

The gateway renders every one of them in the OpenAI error envelope (``gateway/errors.py``,
``DOMAIN_ERRORS``). Messages never hold a secret value or a token: they name fields, ids and
key ids only.

    FunctionsError                  base (400 invalid_request)
    ├── InvalidFunction             400: a field breaks a rule; ``param`` names the top-level field
    ├── FunctionNotFound            404: no such function in this account
    ├── EnvironmentNotFound         404: no such environment in this account
    ├── FunctionExists              409: the name's slug is taken in the environment
    └── SecretsUnavailable          503: no key ring (function_secret_keys), or a token will not open
"""

from __future__ import annotations

__all__ = [
    "EnvironmentNotFound",
    "FunctionExists",
    "FunctionNotFound",
    "FunctionsError",
    "InvalidFunction",
    "SecretsUnavailable",
]


class FunctionsError(Exception):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"
    retryable = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidFunction(FunctionsError):
    """``param`` is the top-level field (``secret_mappings``); the message names the item too."""


class FunctionNotFound(FunctionsError):
    status_code = 404
    type = "not_found_error"
    code = "function_not_found"


class EnvironmentNotFound(FunctionsError):
    status_code = 404
    type = "not_found_error"
    code = "environment_not_found"


class FunctionExists(FunctionsError):
    status_code = 409
    code = "function_exists"


class SecretsUnavailable(FunctionsError):
    status_code = 503
    type = "api_error"
    code = "secret_keys_unavailable"

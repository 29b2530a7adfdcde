"""Errors of Download Code; each carries its HTTP status and OpenAI ``error.code``.

The gateway renders them in the OpenAI error envelope (``gateway/errors.py`` DOMAIN_ERRORS).
A message names a function id, a platform or a variable's key, never a secret or a token.

    CodegenError                 400 invalid_request_error  invalid_request
    ├── UnknownPlatform          404 not_found_error        unknown_platform
    ├── FunctionNotFound         404 not_found_error        function_not_found
    ├── UnusableVariableKey      400 invalid_request_error  invalid_variable_key
    ├── FunctionUnresolved       400 invalid_request_error  function_unresolved
    └── SecretsUnavailable       503 api_error              secret_keys_unavailable
"""

from __future__ import annotations

__all__ = [
    "CodegenError",
    "FunctionNotFound",
    "FunctionUnresolved",
    "SecretsUnavailable",
    "UnknownPlatform",
    "UnusableVariableKey",
]


class CodegenError(Exception):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"
    retryable = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnknownPlatform(CodegenError):
    status_code = 404
    type = "not_found_error"
    code = "unknown_platform"


class FunctionNotFound(CodegenError):
    """Missing, or another account's: the two look the same, so an id reveals nothing."""

    status_code = 404
    type = "not_found_error"
    code = "function_not_found"


class UnusableVariableKey(CodegenError):
    """A mapped variable's key cannot name an environment variable (or is ``PROXY_TOKEN``)."""

    code = "invalid_variable_key"


class FunctionUnresolved(CodegenError):
    """A mapping names a variable that is gone: the code would silently lack that secret."""

    code = "function_unresolved"


class SecretsUnavailable(CodegenError):
    status_code = 503
    type = "api_error"
    code = "secret_keys_unavailable"

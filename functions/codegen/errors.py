"""Errors of Download Code, in the proxy-functions tree (:mod:`functions.errors`), so the gateway
renders them like the others. A message names a function id, a platform or a variable's key,
never a secret or a token.

    FunctionsError (functions.errors)
    ├── NotFound
    │   ├── FunctionNotFound         404 function_not_found     (functions.errors)
    │   └── UnknownPlatform          404 unknown_platform
    ├── CodegenError                 400 invalid_request
    │   ├── UnusableVariableKey      400 invalid_variable_key
    │   └── FunctionUnresolved       400 function_unresolved
    └── SecretsUnavailable           503 secret_keys_unavailable (functions.errors)
"""

from __future__ import annotations

from functions.errors import FunctionNotFound, FunctionsError, NotFound, SecretsUnavailable

__all__ = [
    "CodegenError",
    "FunctionNotFound",
    "FunctionUnresolved",
    "SecretsUnavailable",
    "UnknownPlatform",
    "UnusableVariableKey",
]


class UnknownPlatform(NotFound):
    code = "unknown_platform"


class CodegenError(FunctionsError):
    """The function cannot be written out as code until it is changed."""


class UnusableVariableKey(CodegenError):
    """A mapped variable's key cannot name an environment variable (or is ``PROXY_TOKEN``)."""

    code = "invalid_variable_key"


class FunctionUnresolved(CodegenError):
    """A mapping names a variable that is gone: the code would silently lack that secret."""

    code = "function_unresolved"

"""Errors of proxy-function management; each carries its HTTP status and OpenAI ``error.code``.

The gateway renders every one of them in the OpenAI error envelope (``gateway/errors.py``,
``DOMAIN_ERRORS``); the CLI prints their message. Messages never hold a secret value or a
token: they name fields, ids and key ids only.

::

    FunctionsError                 400 invalid_request_error  invalid_request
    ├── InvalidInput               400 invalid_request        (a project, environment or variable field)
    ├── InvalidFunction            400 invalid_request        ``param`` names the top-level field
    ├── NotFound                   404 not_found_error        missing, or another account's
    │   ├── ProjectNotFound        404 project_not_found
    │   ├── EnvironmentNotFound    404 environment_not_found
    │   ├── VariableNotFound       404 variable_not_found
    │   └── FunctionNotFound       404 function_not_found
    ├── Conflict                   409 conflict
    │   ├── ProjectExists          409 project_exists
    │   ├── EnvironmentExists      409 environment_exists
    │   ├── VariableExists         409 variable_exists
    │   ├── FunctionExists         409 function_exists        the name's slug is taken in the environment
    │   └── LastEnvironment        409 last_environment
    └── SecretsUnavailable         503 api_error  secret_keys_unavailable: no key ring (function_secret_keys)
        ├── SecretKeyMissing       503 api_error  secret_key_missing: a stored value's key is not in the ring
        └── SecretUnreadable       500 api_error  secret_unreadable: a stored value does not open
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "EnvironmentExists",
    "EnvironmentNotFound",
    "FunctionExists",
    "FunctionNotFound",
    "FunctionsError",
    "InvalidFunction",
    "InvalidInput",
    "LastEnvironment",
    "NotFound",
    "ProjectExists",
    "ProjectNotFound",
    "SecretKeyMissing",
    "SecretUnreadable",
    "SecretsUnavailable",
    "VariableExists",
    "VariableNotFound",
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


class InvalidInput(FunctionsError):
    code = "invalid_request"


class InvalidFunction(FunctionsError):
    """``param`` is the top-level field (``secret_mappings``); the message names the item too."""


class NotFound(FunctionsError):
    """Missing, or another account's: the two look the same, so ids reveal nothing."""

    status_code = 404
    type = "not_found_error"
    code = "not_found"


class ProjectNotFound(NotFound):
    code = "project_not_found"


class EnvironmentNotFound(NotFound):
    code = "environment_not_found"


class VariableNotFound(NotFound):
    code = "variable_not_found"


class FunctionNotFound(NotFound):
    code = "function_not_found"


class Conflict(FunctionsError):
    status_code = 409
    code = "conflict"


class ProjectExists(Conflict):
    code = "project_exists"


class EnvironmentExists(Conflict):
    code = "environment_exists"


class VariableExists(Conflict):
    code = "variable_exists"


class FunctionExists(Conflict):
    code = "function_exists"


class LastEnvironment(Conflict):
    code = "last_environment"


class SecretsUnavailable(FunctionsError):
    """No key ring is configured (a Postgres deployment without ``function_secret_keys``)."""

    status_code = 503
    type = "api_error"
    code = "secret_keys_unavailable"

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(
            message
            or "no secret key ring is configured: set function_secret_keys (TOLLWAY_FUNCTION_SECRET_KEYS) "
            "or function_secret_key_file to store or reveal variables",
            param=param,
        )


class SecretKeyMissing(SecretsUnavailable):
    """A stored value names a key id the ring does not hold (the start-up check prevents it)."""

    code = "secret_key_missing"


class SecretUnreadable(SecretsUnavailable):
    """A stored value does not open under its key: tampered with, or moved to another row."""

    status_code = 500
    code = "secret_unreadable"

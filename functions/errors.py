"""The error tree of proxy-function management; each error carries its HTTP status and code.

The gateway renders them (``gateway/errors.py`` DOMAIN_ERRORS) in the OpenAI envelope of
``/api``; the CLI prints their message. A message never holds a secret value or a token: at
most a key id, a variable's key or a row id.

::

    FunctionsError                 400 invalid_request_error
    ├── InvalidInput               400 invalid_request
    ├── NotFound                   404 not_found_error  (project_not_found, environment_not_found, variable_not_found)
    ├── Conflict                   409 conflict
    │   ├── ProjectExists          409 project_exists
    │   ├── EnvironmentExists      409 environment_exists
    │   ├── VariableExists         409 variable_exists
    │   └── LastEnvironment        409 last_environment
    └── SecretsUnavailable         503 api_error        secret_keys_not_configured
        ├── SecretKeyMissing       503 api_error        secret_key_missing
        └── SecretUnreadable       500 api_error        secret_unreadable
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "EnvironmentExists",
    "EnvironmentNotFound",
    "FunctionsError",
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


class Conflict(FunctionsError):
    status_code = 409
    code = "conflict"


class ProjectExists(Conflict):
    code = "project_exists"


class EnvironmentExists(Conflict):
    code = "environment_exists"


class VariableExists(Conflict):
    code = "variable_exists"


class LastEnvironment(Conflict):
    code = "last_environment"


class SecretsUnavailable(FunctionsError):
    """No key ring is configured (a Postgres deployment without ``function_secret_keys``)."""

    status_code = 503
    type = "api_error"
    code = "secret_keys_not_configured"

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

"""Errors of the security chain; each carries its HTTP status and OpenAI ``error.code``."""

from __future__ import annotations


class KeyError_(Exception):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"
    retryable = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class MissingApiKey(KeyError_):
    code = "missing_api_key"


class InvalidApiKey(KeyError_):
    code = "invalid_api_key"


class TokenExpired(KeyError_):
    code = "token_expired"


class AccountSuspended(KeyError_):
    status_code = 403
    type = "permission_error"
    code = "account_suspended"


class _Forbidden(KeyError_):
    status_code = 403
    type = "permission_error"


class OutsideActiveHours(_Forbidden):
    code = "outside_active_hours"


class IpNotAllowed(_Forbidden):
    code = "ip_not_allowed"


class CountryBlocked(_Forbidden):
    code = "country_blocked"


class OriginNotAllowed(_Forbidden):
    code = "origin_not_allowed"


class ModelNotAllowed(_Forbidden):
    code = "model_not_allowed"


class CategoryNotAllowed(_Forbidden):
    code = "category_not_allowed"


class BrowserTokenForbidden(_Forbidden):
    code = "browser_token_forbidden"


class InvalidCredentials(KeyError_):
    code = "invalid_credentials"


class SessionExpired(KeyError_):
    code = "session_expired"


class CsrfFailed(_Forbidden):
    code = "csrf_failed"


class RoleForbidden(_Forbidden):
    code = "insufficient_role"


class TooManyAttempts(KeyError_):
    status_code = 429
    type = "rate_limit_error"
    code = "too_many_attempts"


class IdentityInvalid(KeyError_):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class IdentityConflict(KeyError_):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class MemberNotFound(KeyError_):
    status_code = 404
    type = "not_found_error"
    code = "member_not_found"


class KeysUnavailable(KeyError_):
    """The key database cannot answer and the key is not cached: fail closed, retryable."""

    status_code = 503
    type = "api_error"
    code = "keys_unavailable"
    retryable = True

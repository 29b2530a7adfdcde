"""Errors of metering and credits; each carries its HTTP status and OpenAI ``error.code``."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

# What a lost or refused database connection raises: SQLAlchemy wraps most driver errors, but
# a connection dropped mid-checkout can surface as the socket's own OSError.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError)


class BillingError(Exception):
    status_code = 402
    type = "insufficient_quota"
    code = "insufficient_credits"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OutOfBudget(BillingError):
    """The balance or the key's spending limit cannot cover the worst case; ``available_micro``
    is what is left, so the caller can size a request that fits."""

    def __init__(self, message: str, *, available_micro: int = 0) -> None:
        super().__init__(message)
        self.available_micro = available_micro


class InsufficientCredits(OutOfBudget):
    code = "insufficient_credits"


class SpendingLimitExceeded(OutOfBudget):
    code = "spending_limit_exceeded"


class BillingUnavailable(BillingError):
    """Redis or Postgres could not answer a money check: fail closed."""

    status_code = 503
    type = "api_error"
    code = "billing_unavailable"
    retryable = True


class AccountNotFound(BillingError):
    status_code = 404
    type = "invalid_request_error"
    code = "account_not_found"


class IdempotencyConflict(BillingError):
    """An idempotency key the account used before, now with different parameters: replaying
    the first answer would hide the difference, granting again would defeat the key."""

    status_code = 409
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class RateLimitExceeded(BillingError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, retry_after_s))}

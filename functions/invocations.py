"""The seam between the ``/fn`` runtime and what each call costs and leaves behind.

The runtime calls :meth:`InvocationLedger.admit` once it has decided to forward a call (after
every check of envmanager.md §4 up to the rate limit) and :meth:`InvocationLedger.finish` exactly
once for every call it admitted, whatever happened (success, upstream error, timeout, client
gone): the same discipline as a metered ``/v1`` call. ``admit`` raises
:class:`InvocationRefused` (402) when the operator prices invocations and the account cannot
pay; ``finish`` never writes the database on the request's path (the record is buffered and
written behind, like usage records).

Error types recorded (envmanager.md §2): ``""`` (the target answered below 500),
``target_error`` (it answered 5xx), ``unreachable`` (502), ``timeout`` (504), ``rate_limited``
(429), ``payment_required`` (402).
"""

from __future__ import annotations

import enum
from typing import Protocol

from functions.config import ResolvedFunction

__all__ = ["ErrorType", "InvocationLedger", "InvocationRefused", "InvocationTicket"]


class ErrorType(enum.StrEnum):
    NONE = ""
    TARGET_ERROR = "target_error"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    PAYMENT_REQUIRED = "payment_required"


class InvocationRefused(Exception):
    """The account cannot pay for this invocation (402 ``Insufficient credits``)."""

    status_code = 402


class InvocationTicket(Protocol):
    """What ``admit`` hands back: the call's id and, when priced, the credits it holds."""

    @property
    def request_id(self) -> str: ...


class InvocationLedger(Protocol):
    async def admit(self, function: ResolvedFunction, request_id: str) -> InvocationTicket: ...

    async def finish(
        self,
        ticket: InvocationTicket,
        function: ResolvedFunction,
        *,
        status: int,
        latency_ms: int,
        error_type: ErrorType,
        origin: str,
    ) -> None: ...

    async def refused(
        self, function: ResolvedFunction, *, request_id: str, status: int, error_type: ErrorType, origin: str
    ) -> None:
        """A call refused before admission that still counts in the log (a 429)."""
        ...

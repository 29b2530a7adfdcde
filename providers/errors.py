"""Upstream failures, normalised so the gateway never branches on a provider's message text.

ProviderError
├── UpstreamTimeout        (504, retryable)   connect/read/idle timeout or deadline
├── UpstreamUnavailable    (502, retryable)   connection refused/reset, bad gateway
├── UpstreamBadResponse    (502)              an answer we cannot parse
└── UpstreamHTTPError      (upstream status)  the provider said no (4xx/5xx); its words are
                                              kept in ``detail`` for the operator, never sent on
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Self

# The upstream's answer headers that tell a client when to retry, passed on so SDKs back off as
# the upstream asked (Retry-After in whole seconds; OpenAI's retry-after-ms). Only plain numbers
# are passed on: a date or anything else the upstream wrote there stays with it.
RETRY_HEADERS = {"retry-after": "Retry-After", "retry-after-ms": "retry-after-ms"}
_SECONDS = re.compile(r"[0-9]{1,9}")
_MILLISECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")
_PARAM = re.compile(r"[\x21-\x7e]{1,200}")  # a field name or path, printable ASCII


class ProviderError(Exception):
    status_code = 502
    type = "api_error"
    code = "upstream_error"
    retryable = False

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.param: str | None = None  # the request field at fault, when the upstream named one
        self.headers: dict[str, str] = {}  # answer headers for the client (Retry-After)

    def passing_on(self, upstream_headers: Mapping[str, str]) -> Self:
        """This error, carrying the upstream's retry headers (see ``RETRY_HEADERS``) to the client."""
        for name, ours in RETRY_HEADERS.items():
            value = (upstream_headers.get(name) or "").strip()
            if (_MILLISECONDS if name.endswith("-ms") else _SECONDS).fullmatch(value):
                self.headers[ours] = value
        return self

    def retry_after_s(self) -> float:
        """How long the upstream asked to be left alone (0 when it did not say)."""
        if "retry-after-ms" in self.headers:
            return float(self.headers["retry-after-ms"]) / 1000
        return float(self.headers.get("Retry-After", 0))


class UpstreamTimeout(ProviderError):
    status_code = 504
    code = "upstream_timeout"
    retryable = True


class UpstreamUnavailable(ProviderError):
    status_code = 502
    code = "upstream_unavailable"
    retryable = True


class UpstreamBadResponse(ProviderError):
    status_code = 502
    code = "upstream_bad_response"


class UpstreamHTTPError(ProviderError):
    """The upstream answered with an error status; its status is kept where meaningful."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        upstream_status: int,
        upstream_type: str = "",
        upstream_code: str = "",
        upstream_param: object = None,
    ) -> None:
        # What the provider said stays with the operator (``detail``, logged by the gateway):
        # its text may quote the gateway's own request, account or credentials. The caller
        # gets the status and the code, and a message of ours.
        super().__init__(_public_message(provider, upstream_status), provider=provider)
        self.detail = message
        self.upstream_status = upstream_status
        # Authentication failures are *our* upstream credentials, not the caller's: never 401.
        # 407 is the operator's egress proxy refusing the gateway (egress_proxy), never the caller.
        if upstream_status in (401, 403, 407):
            self.status_code = 502
            self.code = "upstream_auth_failed"
        elif upstream_status == 429:
            self.status_code = 429
            self.code = "upstream_rate_limited"
            self.type = "rate_limit_error"
            self.retryable = True
        elif 400 <= upstream_status < 500:
            self.status_code = upstream_status
            self.type = upstream_type or "invalid_request_error"
            self.code = upstream_code or "upstream_rejected"
            # The field the upstream blamed, when it is plainly a field name (its free text
            # stays in ``detail``); never for the auth failures above.
            if isinstance(upstream_param, str) and _PARAM.fullmatch(upstream_param):
                self.param = upstream_param
        else:
            self.status_code = 502
            self.code = upstream_code or "upstream_error"
            self.retryable = upstream_status in (500, 502, 503, 504)


def _public_message(provider: str, status: int) -> str:
    upstream = f"upstream {provider}" if provider else "the upstream"
    if status in (401, 403, 407):
        return f"{upstream} rejected the gateway's credentials"
    if status == 429:
        return f"{upstream} is rate limiting requests ({status}); retry later"
    if 400 <= status < 500:
        return f"{upstream} rejected the request ({status}); see the error code"
    return f"{upstream} failed ({status})"

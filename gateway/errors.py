"""Every failure becomes the OpenAI error envelope: ``{"error": {message, type, param, code}}``.

Each domain package has its own error tree carrying ``status_code``, ``type``, ``code`` (and
``retryable``); this module renders all of them, plus Litestar's own HTTP errors, in one place.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar, cast

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from billing.bounds import NO_CONTROL, NO_NUL
from billing.errors import BillingError
from billing.payments.provider import PaymentError
from functions.errors import FunctionsError
from gateway.request_id import correlation_id_of
from keys.errors import KeyError_
from keys.restrictions import RestrictionError
from providers.errors import ProviderError, UpstreamHTTPError

log = logging.getLogger("tollway.gateway")
T = TypeVar("T")
_encoder = msgspec.json.Encoder()


class GatewayError(Exception):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    code = "invalid_request"


class InvalidJSON(GatewayError):
    code = "invalid_json"


class ModelNotFound(GatewayError):
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status_code = 413
    code = "request_too_large"


class ProviderUnavailable(GatewayError):
    status_code = 503
    type = "api_error"
    code = "provider_unavailable"


_PARAM_PATTERNS = (re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)"), re.compile(r"field `([^`]+)`"))


_READABLE = {
    f"matching regex {NO_CONTROL!r}": "without control characters",
    f"matching regex {NO_NUL!r}": "without NUL",
}


def readable(message: str) -> str:
    """A msgspec message with our bounds' regexes said in words (``str`` without NUL…)."""
    for regex, words in _READABLE.items():
        message = message.replace(regex, words)
    return message


def validation_param(message: str) -> str | None:
    """The top-level field a msgspec validation message is about, for the error's ``param``."""
    for pattern in _PARAM_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def decode_body(raw: bytes, type_: type[T]) -> T:
    """Decode a JSON request body into ``type_``; errors are 400s naming the field."""
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as error:
        message = str(error)
        raise InvalidRequest(f"invalid request: {readable(message)}", param=validation_param(message)) from error
    except msgspec.DecodeError as error:
        raise InvalidJSON(f"request body is not valid JSON: {error}") from error
    except RecursionError as error:  # msgspec's answer to 100,000 "[" inside an untyped field
        raise InvalidJSON(TOO_DEEP) from error


TOO_DEEP = "request body is not valid JSON: it nests too deeply"


DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    GatewayError,
    KeyError_,
    BillingError,
    ProviderError,
    FunctionsError,
    PaymentError,
)


def handle_restriction_error(request: Request[Any, Any, Any], error: RestrictionError) -> Response[bytes]:
    return error_response(InvalidRequest(str(error), param=error.field))


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return _encoder.encode({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(error: Exception, request_id: str | None = None) -> Response[bytes]:
    """Render one of our domain errors (anything with status_code/type/code/message)."""
    if isinstance(error, UpstreamHTTPError):
        # The provider's own words, for the operator only (the caller gets ours).
        log.info("request %s: %s", request_id or "-", error.detail[:500])
    status = int(getattr(error, "status_code", 500))
    headers: dict[str, str] = dict(getattr(error, "headers", None) or {})
    if request_id:
        headers["X-Request-Id"] = request_id
    body = error_body(
        str(getattr(error, "message", str(error))),
        str(getattr(error, "type", "api_error")),
        getattr(error, "code", None),
        getattr(error, "param", None),
    )
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def handle_domain_error(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    return error_response(error, _request_id(request))


def _request_id(request: Request[Any, Any, Any]) -> str:
    """The id :mod:`gateway.request_id` gave this request (the caller's own, when it sent one):
    exception handlers run outside the route middleware that sets the header on answers, so
    each error names it itself."""
    return correlation_id_of(cast(dict[str, Any], request.scope))


_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def handle_http_exception(request: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    if isinstance(error, ValidationException):
        return _parameter_error(error, _request_id(request))
    status = error.status_code
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(status, "http_error")
    type_ = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return Response(
        content=error_body(str(error.detail), type_, code),
        status_code=status,
        media_type="application/json",
        headers={**(error.headers or {}), "X-Request-Id": _request_id(request)},
    )


def _parameter_error(error: ValidationException, request_id: str) -> Response[bytes]:
    """A path or query parameter Litestar refused (out of its bounds, not an int…): a 400 that
    names the parameter, in our shape. Litestar's own detail repeats the whole URL; not echoed."""
    problems = error.extra if isinstance(error.extra, list) else []
    first = problems[0] if problems and isinstance(problems[0], dict) else {}
    param = first.get("key")
    source = getattr(first.get("source"), "value", first.get("source")) or "request"
    if param == "data" and source == "body":
        # An empty body where an /api handler declares ``data``: Litestar skips the decoder
        # (gateway/api/bodies.py) for no bytes at all; answer what the decoder answers for b"".
        try:
            decode_body(b"", object)
        except GatewayError as empty:
            return error_response(empty, request_id)
    if not param:
        return error_response(InvalidRequest("invalid request"), request_id)
    message = f"invalid {source} parameter {param}: {readable(str(first.get('message')))}"
    return error_response(InvalidRequest(message, param=str(param)), request_id)


def handle_validation_error(request: Request[Any, Any, Any], error: msgspec.ValidationError) -> Response[bytes]:
    """A body checked against a Struct outside :func:`decode_body` (``msgspec.convert``)."""
    message = str(error)
    return error_response(
        InvalidRequest(f"invalid request: {readable(message)}", param=validation_param(message)),
        _request_id(request),
    )


def handle_recursion_error(request: Request[Any, Any, Any], error: RecursionError) -> Response[bytes]:
    """Decoding or walking a body nested thousands deep is the caller's doing: a 400, not a 500.

    :func:`decode_body` turns it into :class:`InvalidJSON` itself; this catches the same thing
    from a body decoded elsewhere (the ``/v1`` pipeline decodes its own)."""
    log.warning("request refused: its body nests too deeply", exc_info=error)
    return error_response(InvalidJSON(TOO_DEEP), _request_id(request))


def handle_unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    # The message may hold anything (even a secret from a driver error): log it, never echo it.
    log.exception("unhandled error", exc_info=error)
    return Response(
        content=error_body("internal error", "api_error", "internal_error"),
        status_code=500,
        media_type="application/json",
        headers={"X-Request-Id": _request_id(request)},
    )

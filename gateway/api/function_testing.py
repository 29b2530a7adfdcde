"""Calling a proxy function from the server, for its "Test" panel: what
``POST /api/functions/{function_id}/test/`` answers and what the dashboard's Test drawer shows.

Not a controller module: the ``/api`` controller (:mod:`gateway.api.function_runtime`) and the
dashboard page both call :func:`run_function_test`, so the rule (every role of the account may
test; another account's function is not found; every check of a real call but the origin) lives
once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated
from urllib.parse import quote

import msgspec

from billing.bounds import NO_CONTROL
from functions.errors import FunctionNotFound, SecretsUnavailable
from functions.models import HttpMethod
from functions.runtime import Answer, Call, Forwarded
from functions.service import copy_token, get_function
from gateway.api.deps import Caller
from gateway.state import GatewayState
from keys.roles import Permission, require

__all__ = ["MAX_SHOWN_BYTES", "FunctionTestRequest", "FunctionTestResult", "run_function_test"]

MAX_SHOWN_BYTES = 64 * 1024  # the test shows at most this much of the answer's body
_MAX_TEST_BODY = 1024 * 1024
_TEST_PATH = Annotated[str, msgspec.Meta(max_length=2000)]


class FunctionTestRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A call for the server to make: ``method`` (the function's by default), ``path`` (the extra
    path, for a function that forwards it), ``query`` (the client query string), ``body`` (sent
    as ``content_type``) and ``token`` (the function's own when left out)."""

    method: HttpMethod | None = None
    path: _TEST_PATH = ""
    query: _TEST_PATH = ""
    body: Annotated[str, msgspec.Meta(max_length=_MAX_TEST_BODY)] | None = None
    content_type: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_CONTROL)] = "application/json"
    token: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_CONTROL)] | None = None


class FunctionTestResult(msgspec.Struct):
    """What the call got: status, time, the headers a browser would see, and the body as text
    (pretty JSON when it is JSON), at most 64 KiB of it (``truncated``)."""

    status: int
    duration_ms: int
    headers: dict[str, str]
    body: str
    truncated: bool


def _shown_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    shown: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        shown[key] = f"{shown[key]}, {text}" if key in shown else text
    return shown


def _shown_body(raw: bytes, content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return msgspec.json.format(raw, indent=2).decode("utf-8", "replace")
        except msgspec.DecodeError:
            pass
    return raw.decode("utf-8", "replace")


async def _read_shown(forwarded: Forwarded, deadline_s: float) -> tuple[bytes, bool]:
    """Up to :data:`MAX_SHOWN_BYTES` of the decoded body, within ``deadline_s`` (an endless
    stream is shown as far as it got)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in forwarded.decoded():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_SHOWN_BYTES:
                    break
    except TimeoutError:
        return b"".join(chunks), True
    raw = b"".join(chunks)
    return raw[:MAX_SHOWN_BYTES], size > MAX_SHOWN_BYTES


async def run_function_test(
    state: GatewayState, caller: Caller, function_id: str, data: FunctionTestRequest, request_id: str
) -> FunctionTestResult:
    """Call the function from the server, whatever its allowed origins, with every other check
    of a real call (token, method, rate limit, SSRF guard, timeout, size); the call counts as an
    invocation. Its refusals are results (``status`` 401, 429, 502…), not errors."""
    require(caller.role, Permission.VIEW)
    runtime, directory = state.function_runtime, state.functions
    if runtime is None or directory is None:
        raise SecretsUnavailable("proxy functions are not available in this process")
    function = await directory.get(function_id)
    if function is None or function.account_id != caller.account_id:
        raise FunctionNotFound("no such function")
    token = data.token
    if token is None:
        async with state.sessionmaker() as session:
            row = await get_function(session, caller.account_id, function.id)
        token = copy_token(row, directory.keyring)
    body = b"" if data.body is None else data.body.encode()
    call = Call(
        method=(data.method or function.method).value,
        origin=None,
        token=token,
        extra_path=quote(data.path.lstrip("/"), safe="/%!$&'()*+,;=:@-._~").encode(),
        query=data.query.lstrip("?").encode(),
        content_type=data.content_type if data.body is not None else None,
        request_id=request_id,
        check_origin=False,
    )
    started = time.perf_counter()
    outcome = runtime.check(function, call, len(body)) or await runtime.forward(
        function, call, body, state.function_calls
    )
    if isinstance(outcome, Answer):
        raw, truncated, headers, status = outcome.body, False, outcome.headers, outcome.status
    else:
        try:
            raw, truncated = await _read_shown(outcome, function.timeout_s)
        finally:
            await outcome.close()
        headers, status = outcome.headers, outcome.status
    shown = _shown_headers(headers)
    return FunctionTestResult(
        status=status,
        duration_ms=int((time.perf_counter() - started) * 1000),
        headers=shown,
        body=_shown_body(raw, shown.get("content-type", "")),
        truncated=truncated,
    )

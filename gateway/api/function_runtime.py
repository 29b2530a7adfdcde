"""The proxy-function runtime over HTTP: ``/fn/{function_id}[/{extra path}]`` (any method), and
``POST /api/functions/{function_id}/test/``, which calls a function from the server.

``/fn`` is public: it authenticates by the function's ``x-proxy-token``, so it lives outside the
``/api`` layer (no session, no DTO, no guard) as a raw ASGI mount: the runtime needs the raw
path (the extra path keeps its percent-encoding), reads the body itself so a chunked body past
the limit is refused while it streams in, and streams the target's answer through chunk by
chunk (an SSE event reaches the client when the target sends it). The app-wide middleware does
not get in the way: the CORS middleware only touches ``/v1/``, and the request-id middleware
sees the ``X-Request-Id`` the runtime already wrote. ASGI mounts are not part of the OpenAPI
schema; ``/fn`` is documented in docs/product-rules.md and envmanager.md §4.

The checks and their order are :mod:`functions.runtime`'s; this module does envmanager's steps
1–3 (the id, an unknown function, the preflight) and reading the body (413 past
``function_max_body_bytes``). A streamed answer whose client disconnects is cut at once (the
target's response closed, the call finished in the ledger); one whose target fails mid-body is
aborted (the connection closed, never a clean end that would pass a truncated body as whole).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, cast
from urllib.parse import quote

from litestar import Controller, Request, asgi, post
from litestar.params import FromPath, JSONBody, Parameter
from sqlalchemy.exc import SQLAlchemyError

from billing.bounds import NO_CONTROL
from functions.config import ResolvedFunction
from functions.directory import FunctionDirectory
from functions.runtime import Answer, Call, Forwarded, FunctionRuntime, error_answer
from gateway.api.deps import Caller, Injected, requires
from gateway.api.function_testing import FunctionTestRequest, FunctionTestResult, run_function_test
from gateway.api.openapi import MEMBER_AUTH, errors
from gateway.pipeline.metered import ClientGone, cancel_on_disconnect
from gateway.request_id import request_id_of
from gateway.state import GatewayState
from keys.roles import Permission

__all__ = ["FunctionTestController", "function_runtime"]

# Plain ASGI types, as gateway/request_id.py: this module reads a few keys of the scope itself.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("tollway.functions")
PREFIX = b"/fn"
WATCH_FROM_BYTES = 256 * 1024  # longer answers (and streams) are cut when their client disconnects
_NO_ID = error_answer(404, "Proxy ID is required", [])
_NOT_FOUND = error_answer(404, "Not found", [])
_UNAVAILABLE = error_answer(503, "Failed to resolve proxy configuration", [])


class _BodyTooLarge(Exception):
    pass


def _split_path(scope: Scope) -> tuple[bytes, bytes]:
    """``(function id, extra path)`` of ``/fn/{id}[/{extra}]``, from the raw path as sent."""
    raw = cast(bytes | None, scope.get("raw_path"))
    if raw is None:  # a server without raw_path: the path Litestar left after the mount
        raw = PREFIX + quote(scope["path"]).encode()
    raw = raw.split(b"?", 1)[0]  # some servers (httpx's ASGI transport) leave the query in it
    root = scope.get("root_path", "").encode()
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    rest = raw[len(PREFIX) :].lstrip(b"/")
    function_id, _, extra = rest.partition(b"/")
    return function_id, extra


async def _send_answer(send: Send, answer: Answer, request_id: bytes) -> None:
    headers = answer.headers
    if not any(name == b"x-request-id" for name, _ in headers):
        headers = [*headers, (b"x-request-id", request_id)]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; :class:`_BodyTooLarge` as soon as it passes ``limit`` (a chunked
    body has no Content-Length to refuse it by), :class:`ClientGone` if the client left."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone("client disconnected")
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _BodyTooLarge
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("client disconnected")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _stream(send: Send, receive: Receive, forwarded: Forwarded) -> None:
    """The target's answer to the client, chunk by chunk, as it arrives."""
    await send({"type": "http.response.start", "status": forwarded.status, "headers": forwarded.headers})
    length = forwarded.content_length

    async def pump() -> None:
        left = length
        async with contextlib.aclosing(forwarded.raw()) as chunks:
            async for chunk in chunks:
                if left is None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                # A known length ends with its last byte: no empty closing message.
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
                if left <= 0:
                    return
        if left is not None and left > 0:
            raise ConnectionError("the target's answer ended before its Content-Length")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    if length is not None and length <= WATCH_FROM_BYTES:
        await pump()  # a small answer: over before a disconnect would matter, no watcher task
        return
    # A stream (SSE, chunked) may run for minutes and a large body for long: stop reading the
    # target when the client goes (the server would otherwise drop every chunk silently).
    await cancel_on_disconnect(receive, pump())


def _headers_of(scope: Scope, method: str, request_id: str, extra_path: bytes) -> tuple[Call, int | None]:
    origin = token = content_type = None
    content_length: int | None = None
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"x-proxy-token":
            token = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():
            content_length = int(value)
    call = Call(
        method=method,
        origin=origin,
        token=token,
        extra_path=extra_path,
        query=scope.get("query_string", b""),
        content_type=content_type,
        request_id=request_id,
    )
    return call, content_length


@asgi("/fn", is_mount=True, copy_scope=False)
async def function_runtime(scope: Scope, receive: Receive, send: Send) -> None:
    """``/fn/{function_id}[/{extra path}]``: see the module docstring and functions/runtime.py."""
    state: GatewayState = scope["app"].state.gateway
    request_id = request_id_of(scope)
    request_id_bytes = request_id.encode()
    runtime, directory = state.function_runtime, state.functions
    function_id, extra_path = _split_path(scope)
    if not function_id:
        await _send_answer(send, _NO_ID, request_id_bytes)
        return
    if runtime is None or directory is None:
        await _send_answer(send, _UNAVAILABLE, request_id_bytes)
        return
    try:
        function = await _find(directory, function_id)
    except (SQLAlchemyError, OSError) as error:
        log.warning("proxy function lookup failed (%s)", type(error).__name__)
        await _send_answer(send, _UNAVAILABLE, request_id_bytes)
        return
    if function is None or (extra_path and not function.forward_path):
        await _send_answer(send, _NOT_FOUND, request_id_bytes)
        return
    method = scope["method"]
    call, content_length = _headers_of(scope, method, request_id, extra_path)
    if method == "OPTIONS":
        await _send_answer(send, runtime.preflight(function, call), request_id_bytes)
        return
    refusal = runtime.check(function, call, content_length)
    if refusal is not None:
        await _send_answer(send, refusal, request_id_bytes)
        return
    try:
        body = await _read_body(receive, runtime.max_body_bytes)
    except _BodyTooLarge:
        await _send_answer(send, runtime.too_large(function, call), request_id_bytes)
        return
    except ClientGone:
        return
    await _answer(send, receive, runtime, function, call, body, state)


async def _find(directory: FunctionDirectory, function_id: bytes) -> ResolvedFunction | None:
    try:
        text = function_id.decode("ascii")
    except UnicodeDecodeError:
        return None
    return await directory.get(text)


async def _answer(
    send: Send,
    receive: Receive,
    runtime: FunctionRuntime,
    function: ResolvedFunction,
    call: Call,
    body: bytes,
    state: GatewayState,
) -> None:
    outcome = await runtime.forward(function, call, body, state.function_calls)
    if isinstance(outcome, Answer):
        await _send_answer(send, outcome, call.request_id.encode())
        return
    try:
        await _stream(send, receive, outcome)
    except ClientGone:
        pass  # the client left mid-stream: nothing more to send; the call is finished below
    finally:
        await outcome.close()


# -- the test endpoint -------------------------------------------------------------------------

FunctionId = Annotated[str, Parameter(max_length=64, pattern=NO_CONTROL)]


class FunctionTestController(Controller):
    path = "/api"
    tags = ["functions"]
    security = MEMBER_AUTH

    @post(
        "/functions/{function_id:str}/test/",
        status_code=200,
        guards=[requires(Permission.VIEW)],
        operation_id="test_function",
        responses=errors(400, 401, 403, 404, 503),
    )
    async def test_function(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        function_id: FromPath[FunctionId],
        data: JSONBody[FunctionTestRequest],
    ) -> FunctionTestResult:
        """Call the function from the server, whatever its allowed origins, with every other
        check of a real call (token, method, rate limit, SSRF guard, timeout, size); the call
        counts as an invocation. Its refusals are results (``status`` 401, 429, 502…), not
        errors of this endpoint."""
        return await run_function_test(gateway, caller, function_id, data, request_id_of(request.scope))

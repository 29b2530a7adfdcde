"""A lean HTTP/1.1 transport under httpx for the upstream calls.

Profiled under load (bench/RESULTS.md), aiohttp under ``httpx_aiohttp.AiohttpTransport`` was the
largest single cost of a chat request: its session, ``ClientRequest`` with multidict headers and
yarl URLs, payload writer, response objects and ``StreamReader``, and the mapping between the
two libraries. An upstream call needs none of that: the ``httpx.Request`` is complete (method,
URL, raw headers, a body in memory), so this transport writes it in one ``transport.write``, parses
the answer with httptools (the parser uvicorn uses) in an asyncio ``Protocol``, and hands httpx
the raw headers and a byte stream of the body.

What it does, and the httpx exception for each way it fails::

    pool per (scheme, host, port)    idle connections reused last-in first-out; at most
                                     max_connections per pool, waiters queue   -> PoolTimeout
    connect                          refused, unreachable, TLS handshake       -> ConnectError
                                     longer than timeout["connect"]            -> ConnectTimeout
    response headers, each body read longer than timeout["read"]               -> ReadTimeout
    peer closed before or during the answer                                    -> RemoteProtocolError
    unparseable answer                                                         -> RemoteProtocolError

A connection goes back to its pool only once its answer was read to the end and the server
keeps it alive; a stream closed early, a cancelled call or any error closes it. A reused
connection that the server closed just as the request went out (no byte of an answer) is
retried once on a fresh one, as httpcore and aiohttp do for stale keep-alive connections.
No proxy support (build_client keeps aiohttp for an egress proxy), no HTTP/2, no 100-continue.
``timeout["write"]`` is not used: the request goes to the socket's buffer in one write, and an
upstream that reads none of it is caught by the read timeout on its answer. Addresses are
resolved per new connection (no DNS cache: connections are kept alive) and tried in turn.
Headers are never logged or put in an error message: they carry the provider's API key.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import httptools
import httpx

_HIGH_WATER = 256 * 1024  # body bytes buffered before the socket stops being read
_NO_BODY_STATUS = frozenset((204, 304))
_UNSAFE = re.compile(rb"[\r\n\x00]")
_Key = tuple[bytes, str, int]


class _Stale(Exception):
    """The peer closed (or reset) the connection before the first byte of an answer."""


class _Connection(asyncio.Protocol):
    """One connection: its socket's protocol, and the state of the one answer it is reading."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.reused = False  # handed out from the pool at least once before
        self.broken = False  # the peer closed, or an error: never handed out again
        self.pool: _Pool | None = None  # set while idle: the pool to leave when the peer closes
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._head_request = False
        self._got_bytes = False
        self._headers_done = False
        self.done = False  # the whole answer has been parsed
        self.keep_alive = False
        self.error: Exception | None = None
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._framed = False  # Content-Length or chunked: the body does not end with the connection
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # nothing was asked: a server talking out of turn
            self._fail(httpx.RemoteProtocolError("unexpected data from the upstream on an idle connection"))
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(httpx.RemoteProtocolError(f"unparseable answer from the upstream: {type(error).__name__}"))

    def eof_received(self) -> bool:
        self._closed_by_peer(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed_by_peer(exc)

    def _closed_by_peer(self, exc: Exception | None) -> None:
        if self.broken and (self.error is not None or self.done):
            return
        self.broken = True
        if self.pool is not None:  # idle: leave the pool, never handed out again
            self.pool.drop_idle(self)
        if self._parser is None or self.done:
            return
        if self._headers_done and not self._framed and not self._head_request:
            self._on_message_complete()  # a body that ends with the connection
            return
        if not self._got_bytes:
            self.error = _Stale()
        elif self._headers_done:
            self.error = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        else:
            self.error = httpx.RemoteProtocolError("peer closed connection without sending a complete answer")
        self._wake()

    def pause_writing(self) -> None:  # the body is in memory: the transport buffers what is left
        pass

    def resume_writing(self) -> None:
        pass

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser is None:  # bytes past the end of the answer: a server talking out of turn
            raise httpx.RemoteProtocolError("unexpected data after the upstream's answer")
        status = parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): wait for the real one
            self.headers = []
            self.reason = b""
            self._framed = False
            return
        self.status = status
        self._headers_done = True
        if self._head_request or status in _NO_BODY_STATUS:
            self._framed = True
            if self._head_request:  # the parser would wait for a body of Content-Length bytes
                self.keep_alive = parser.should_keep_alive()
                self.done = True
                self._parser = None
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._headers_done:  # the end of an interim answer
            return
        self._on_message_complete()

    def _on_message_complete(self) -> None:
        self.keep_alive = self._parser is not None and self._parser.should_keep_alive() and not self.broken
        self.done = True
        self._parser = None
        self._wake()

    @property
    def buffered(self) -> bool:
        """Body bytes received and not read yet."""
        return bool(self._chunks)

    # used by the transport
    def start(self, data: bytes, head_request: bool) -> None:
        """Send one request; its answer is parsed from here on."""
        self._reset()
        self._head_request = head_request
        self._parser = httptools.HttpResponseParser(self)
        transport = self.transport
        if transport is None or transport.is_closing() or self.broken:
            self.error = _Stale()
            return
        transport.write(data)

    async def headers_read(self, wait_s: float | None) -> None:
        while not self._headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(wait_s)

    async def read(self, wait_s: float | None) -> bytes:
        """The next piece of the body, b"" at its end."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks = []
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.done:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait(wait_s)

    async def _wait(self, wait_s: float | None) -> None:
        # A timer on a future rather than asyncio.timeout: no task cancellation and uncancel.
        waiter = self._waiter = self._loop.create_future()
        timer = None if wait_s is None else self._loop.call_later(wait_s, self._timed_out, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(httpx.ReadTimeout("timed out waiting for the upstream's answer"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        self.error = error
        self.close()
        self._wake()

    def close(self) -> None:
        self.broken = True
        if self._parser is not None and not self.done and self.error is None:  # a reader may be waiting
            self.error = httpx.RemoteProtocolError("connection closed before the answer ended")
            self._wake()
        self._parser = None
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """The connections to one (scheme, host, port): at most ``limit``, idle ones reused LIFO, and
    waiters served in order when one is given back or closed."""

    def __init__(self, key: _Key, limit: int, connect: Callable[[_Key, float | None], Any]) -> None:
        self._key = key
        self._limit = limit
        self._connect = connect
        self._idle: list[_Connection] = []
        self._count = 0  # connections open or being opened, idle ones included
        # A waiter is given a connection to reuse, or None: a slot counted for it, to connect.
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.all: set[_Connection] = set()

    async def acquire(self, timeouts: dict[str, float | None]) -> _Connection:
        idle = self._idle
        while idle:
            connection = idle.pop()
            connection.pool = None
            if not connection.broken:
                return connection
            self.discard(connection)
        if self._count < self._limit:
            self._count += 1
            return await self._open(timeouts.get("connect"))
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                given = await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():  # given just as we gave up: pass it on
                self._give(waiter.result())
            elif waiter in self._waiters:  # a cancelled waiter may have been skipped (popped) already
                self._waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise httpx.PoolTimeout("no connection to the upstream became free in time") from None
            raise
        if given is None:
            return await self._open(timeouts.get("connect"))
        given.pool = None
        return given

    async def _open(self, connect_s: float | None) -> _Connection:
        """Connect in a slot already counted; the slot is freed if connecting fails."""
        try:
            connection: _Connection = await self._connect(self._key, connect_s)
        except BaseException:
            self._give(None)
            raise
        self.all.add(connection)
        return connection

    def release(self, connection: _Connection) -> None:
        """Take back a connection whose answer was read to its end (reused if still alive)."""
        if connection.broken or not connection.keep_alive:
            self.discard(connection)
            return
        connection.reused = True
        self._give(connection)

    def discard(self, connection: _Connection) -> None:
        connection.close()
        self.all.discard(connection)
        self._give(None)

    def drop_idle(self, connection: _Connection) -> None:
        """An idle connection the peer closed: out of the pool, its slot freed."""
        connection.pool = None
        if connection in self._idle:
            self._idle.remove(connection)
            self.all.discard(connection)
            self._give(None)

    def _give(self, connection: _Connection | None) -> None:
        """Hand a connection (or, for None, a free slot) to the first waiter, else keep it."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if connection is None:
            self._count -= 1
        else:
            connection.pool = self
            self._idle.append(connection)

    def close(self) -> None:
        for connection in list(self.all):
            connection.close()
        self.all.clear()
        self._idle.clear()


class _Body(httpx.AsyncByteStream):
    """The body of one answer as it arrives; gives the connection back at its end, closes it if
    closed before (or on any error, cancellation included)."""

    def __init__(self, connection: _Connection, pool: _Pool, read_s: float | None) -> None:
        self._connection: _Connection | None = connection
        self._pool = pool
        self._read_s = read_s

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration
        try:
            data = await connection.read(self._read_s)
        except BaseException:
            self._connection = None
            self._pool.discard(connection)
            raise
        if data:
            return data
        self._connection = None
        self._pool.release(connection)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            if connection.done and not connection.buffered:
                # Read to its last byte though not past it (a stream stops at its end marker, and
                # the body's end came in the same read): reusable, not a connection to close.
                self._pool.release(connection)
            else:
                self._pool.discard(connection)


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to upstreams over asyncio protocols; see the module docstring.

    ``ssl_context``: for https; by default httpx's own (certifi's CAs, hostname checked), built
    on the first https connection (building it costs ~35 ms, which plain-http clients never pay)."""

    def __init__(self, *, limits: httpx.Limits | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = (limits.max_connections if limits is not None else None) or 1 << 30
        self._ssl_context = ssl_context
        self._pools: dict[_Key, _Pool] = {}
        self._closed = False

    def _pool(self, url: httpx.URL) -> _Pool:
        scheme = url.raw_scheme
        key = (scheme, url.host, url.port or (443 if scheme == b"https" else 80))
        pool = self._pools.get(key)
        if pool is None:
            if scheme not in (b"http", b"https"):
                raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme.decode('latin-1')!r}")
            pool = self._pools[key] = _Pool(key, self._limit, self._connect)
        return pool

    async def _connect(self, key: _Key, connect_s: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == b"https":
            if self._ssl_context is None:
                # Same context as httpx's default; SSL_CERT_FILE/SSL_CERT_DIR name CAs, not proxies.
                self._ssl_context = httpx.create_ssl_context()
            tls = self._ssl_context
        connection = _Connection(loop)
        try:
            async with asyncio.timeout(connect_s):
                await loop.create_connection(
                    lambda: connection, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            connection.close()
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as error:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            connection.close()
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {type(error).__name__}") from error
        except BaseException:
            connection.close()
            raise
        return connection

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        pool = self._pool(request.url)
        data = await _serialize(request)
        head_request = request.method == "HEAD"
        for attempt in (0, 1):
            connection = await pool.acquire(timeouts)
            try:
                connection.start(data, head_request)
                await connection.headers_read(read_timeout)
            except _Stale:
                pool.discard(connection)
                if connection.reused and attempt == 0:
                    continue  # a kept-alive connection the server had just closed: once more, fresh
                raise httpx.RemoteProtocolError("server disconnected without sending an answer") from None
            except BaseException:
                pool.discard(connection)
                raise
            return httpx.Response(
                connection.status,
                headers=connection.headers,
                stream=_Body(connection, pool, read_timeout),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


async def _serialize(request: httpx.Request) -> bytes:
    """Request line, headers and body as one buffer. httpx's own ``build_request`` sets Host and
    Content-Length (or Transfer-Encoding: chunked for a streamed body); so does
    ``UpstreamClient._plain_request``; what a hand-made ``httpx.Request`` lacks is added here."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = await request.aread()  # a multipart upload: in memory anyway
    method = request.method.encode("ascii")
    url = request.url
    has_host = has_length = chunked = False
    parts = [method, b" ", url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"host":
            has_host = True
        elif lowered == b"content-length":
            has_length = True
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        if _UNSAFE.search(name) or _UNSAFE.search(value):
            # A line break would end the header early and let the rest be read as headers or as
            # a second request (aiohttp and h11 refuse them too); never show the value: it may
            # be a key.
            raise httpx.LocalProtocolError(f"header {name[:64]!r} holds a line break or NUL; not sent")
        parts += (name, b": ", value, b"\r\n")
    if not has_host:
        parts += (b"Host: ", url.netloc, b"\r\n")
    if not has_length and not chunked and (body or method in (b"POST", b"PUT", b"PATCH")):
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts.append(b"\r\n")
    if chunked:
        if body:
            parts += (b"%x\r\n" % len(body), body, b"\r\n")
        parts.append(b"0\r\n\r\n")
    else:
        parts.append(body)
    return b"".join(parts)

"""A lean pipelined Redis connection for the script batcher (single server only).

redis-py's pipeline costs, per batch, a pool checkout under a lock, its retry wrapper, command
packing in Python and its reply parser: about a tenth of the gateway's CPU per chat request,
which sends two batches (reserve and settle). :class:`ScriptPipe` keeps one TCP connection of
its own, packs with ``hiredis.pack_command``, parses with ``hiredis.Reader`` and matches replies
to batches in the order they were sent, so any number of batches can be in flight at once
without a pool or a lock.

What it does not do, on purpose:

- Retry. redis-py sends a pipeline again after a connection error or a timeout; a script that
  ran but whose reply was lost would then apply twice. Here a lost connection or a late reply
  fails every batch in flight (``ConnectionError`` / ``TimeoutError``, which the store turns into
  :class:`~billing.counters.CounterStoreUnavailable`: money checks fail closed) and the next
  batch connects again.
- Wait for a dead peer to be noticed by the next batch alone. An idle connection whose server
  vanished without a FIN (a host lost, a NAT entry expired) would fail the next batch only after
  its timeout; TCP keepalive (first probe after :data:`KEEPALIVE_IDLE_S` idle) closes it
  beforehand, so that batch connects again at once.
- Anything but plain TCP: :meth:`ScriptPipe.for_client` answers ``None`` for TLS, unix
  sockets, credential providers, RESP3 or decoded replies, and the batcher keeps using
  redis-py's pipeline for those (and for Redis Cluster).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# TCP keepalive of the pipe's connection: probes after this long idle, then every
# KEEPALIVE_INTERVAL_S, and the connection is dropped after KEEPALIVE_PROBES unanswered ones.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3


def keep_alive(sock: Any) -> None:
    """TCP keepalive on ``sock`` (where the platform has the knobs; Linux and macOS do)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


# The classes redis-py's parser gives the error codes a script call can meet on one server (it
# drops the code from the message of these and of ERR). What matters to the store: NOSCRIPT is
# reloaded by the batcher, and LOADING (a restarting server), NOAUTH and a full server are
# ConnectionErrors, which it turns into CounterStoreUnavailable: money checks fail closed.
_ERRORS: dict[str, type[RedisError]] = {
    "ERR": ResponseError,
    "NOSCRIPT": NoScriptError,
    "LOADING": BusyLoadingError,
    "NOAUTH": AuthenticationError,
    "OOM": OutOfMemoryError,
    "READONLY": ReadOnlyError,
    "NOPERM": NoPermissionError,
    "MASTERDOWN": MasterDownError,
}


def _reply_error(message: str) -> Exception:
    """The exception redis-py would put in a pipeline's replies for this error reply."""
    code, _, rest = message.partition(" ")
    error_class = _ERRORS.get(code)
    if error_class is None:
        return ResponseError(message)
    if error_class is ResponseError and rest == "max number of clients reached":
        return RedisConnectionError(rest)
    return error_class(rest)


def _packed(commands: Sequence[tuple[Any, ...]]) -> bytes:
    return b"".join([hiredis.pack_command(command) for command in commands])


class _Batch:
    __slots__ = ("count", "done", "future", "replies", "timer")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.timer: asyncio.TimerHandle | None = None
        self.done = False


class _PipeProtocol(asyncio.Protocol):
    """One connection: writes batches, hands each its replies in order, and on any failure fails
    every batch still waiting and closes, so a late reply can never be taken for another's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None, where: str) -> None:
        self.loop = loop
        self.closed = False
        self._timeout = timeout
        self._where = where
        self._reader = hiredis.Reader(replyError=_reply_error)
        self._pending: deque[_Batch] = deque()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport; uvloop's does not derive from asyncio.Transport, so no isinstance.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            keep_alive(sock)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self._pending
        try:
            reader.feed(data)
            while True:
                # gets() answers False until a whole reply is in; RESP2 has no false of its own.
                reply = reader.gets()
                if reply is False:
                    return
                if not pending:
                    self.fail(RedisConnectionError, f"a reply nobody asked for from {self._where}")
                    return
                batch = pending[0]
                batch.replies.append(reply)
                if len(batch.replies) == batch.count:
                    pending.popleft()
                    batch.done = True
                    if batch.timer is not None:
                        batch.timer.cancel()
                    if not batch.future.done():  # else its sender was cancelled
                        batch.future.set_result(batch.replies)
        except hiredis.ProtocolError as error:
            self.fail(RedisConnectionError, f"protocol error from {self._where}: {error}")

    def eof_received(self) -> bool:
        self.fail(RedisConnectionError, f"connection closed by {self._where}")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError, f"connection to {self._where} lost: {exc or 'closed'}")

    def send(self, data: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Write one batch of ``count`` commands; the future answers their replies, errors in
        place (``raise_on_error=False``)."""
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        if self.closed or self._transport is None:
            future.set_exception(RedisConnectionError(f"connection to {self._where} closed"))
            return future
        batch = _Batch(future, count)
        self._pending.append(batch)
        self._transport.write(data)
        if self._timeout is not None:
            batch.timer = self.loop.call_later(self._timeout, self._expire, batch)
        return future

    def _expire(self, batch: _Batch) -> None:
        if not batch.done:
            self.fail(RedisTimeoutError, f"no reply from {self._where} within {self._timeout} s")

    def fail(self, error_class: type[RedisError], message: str) -> None:
        """Close, and fail every batch still waiting (each its own exception instance)."""
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.abort()
        pending, self._pending = self._pending, deque()
        for batch in pending:
            batch.done = True
            if batch.timer is not None:
                batch.timer.cancel()
            if not batch.future.done():
                batch.future.set_exception(error_class(message))


class ScriptPipe:
    """One pipelined connection to a single Redis server, next to the redis-py client whose
    address, database, credentials and timeouts it takes. Connects on first use and again on the
    first use after a failure."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        client_name: str | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._where = f"{host}:{port}"
        self._timeout = socket_timeout
        self._connect_timeout = socket_connect_timeout if socket_connect_timeout is not None else socket_timeout
        # What a new connection sends before any batch: its replies are awaited first, so a
        # batch never runs on the wrong database or before the server accepted us.
        setup: list[tuple[Any, ...]] = []
        if password is not None:
            setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            setup.append(("SELECT", db))
        if client_name:
            setup.append(("CLIENT", "SETNAME", client_name))
        self._setup = setup
        self._setup_data = _packed(setup)
        self._protocol: _PipeProtocol | None = None
        self._connecting: asyncio.Task[_PipeProtocol] | None = None
        self._closes = 0  # an attempt that outlives a close() must not keep its connection

    @classmethod
    def for_client(cls, client: aioredis.Redis) -> ScriptPipe | None:
        """A pipe to where ``client`` connects, or ``None`` when its connections are anything
        but plain TCP that this pipe sets up the same way (TLS, a unix socket, a credential
        provider, RESP3, decoded replies, a connect hook): those keep redis-py's pipeline."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if (
            pool.connection_class is not aioredis.Connection
            or "path" in kwargs
            or kwargs.get("credential_provider") is not None
            or kwargs.get("redis_connect_func") is not None
            or kwargs.get("protocol") not in (None, 2, "2")
            or kwargs.get("decode_responses", False)
            or (kwargs.get("username") and kwargs.get("password") is None)
        ):
            return None
        return cls(
            host=kwargs.get("host", "localhost"),
            port=int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0)),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            client_name=kwargs.get("client_name"),
            socket_timeout=kwargs.get("socket_timeout"),
            socket_connect_timeout=kwargs.get("socket_connect_timeout"),
        )

    async def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` as one write; their replies in order, an error reply as the
        exception in its place. A lost connection or a late reply raises redis-py's
        ``ConnectionError`` / ``TimeoutError`` (for this batch and every other in flight)."""
        sent = self.send_now(commands)
        if sent is None:
            protocol = await self._connect()
            sent = protocol.send(_packed(commands), len(commands))
        return await sent

    def send_now(self, commands: Sequence[tuple[Any, ...]]) -> asyncio.Future[list[Any]] | None:
        """Like :meth:`execute` but written at once, from a callback: the future of the replies,
        or ``None`` when there is no live connection in this loop yet (call :meth:`execute`)."""
        protocol = self._protocol
        if protocol is None or protocol.closed or protocol.loop is not asyncio.get_running_loop():
            return None
        return protocol.send(_packed(commands), len(commands))

    async def _connect(self) -> _PipeProtocol:
        # Batches that find no connection share one attempt.
        if self._connecting is None:
            task = asyncio.get_running_loop().create_task(self._open())
            # An attempt whose waiters were all cancelled must not log its error as unretrieved.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._connecting = task
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _PipeProtocol:
        closes = self._closes
        try:
            loop = asyncio.get_running_loop()
            old = self._protocol
            # One left in another event loop (a store used by two asyncio.run) is that loop's.
            if old is not None and old.loop is loop:
                old.fail(RedisConnectionError, f"connection to {self._where} replaced")
            self._protocol = None
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _transport, protocol = await loop.create_connection(
                        lambda: _PipeProtocol(loop, self._timeout, self._where), self._host, self._port
                    )
            except TimeoutError as error:
                raise RedisTimeoutError(f"timeout connecting to {self._where}") from error
            except OSError as error:
                raise RedisConnectionError(f"error connecting to {self._where}: {error}") from error
            try:
                await self._set_up(protocol)
                if self._closes != closes:
                    raise RedisConnectionError(f"connection to {self._where} closed")
            except BaseException:
                protocol.fail(RedisConnectionError, f"connection to {self._where} not set up")
                raise
            self._protocol = protocol
            return protocol
        finally:
            self._connecting = None

    async def _set_up(self, protocol: _PipeProtocol) -> None:
        if not self._setup:
            return
        replies = await protocol.send(self._setup_data, len(self._setup))
        for command, reply in zip(self._setup, replies, strict=True):
            if isinstance(reply, Exception):
                error_class = AuthenticationError if command[0] == "AUTH" else RedisConnectionError
                raise error_class(f"{command[0]} on {self._where} failed: {reply}")

    def close(self) -> None:
        """Close the connection; batches in flight fail, and a later batch connects again."""
        self._closes += 1
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(RedisConnectionError, f"connection to {self._where} closed")

"""The lean script pipe (billing/counters/pipe.py): the same answers as redis-py's pipeline, each
batch its own replies under pipelining, and every failure a :class:`CounterStoreUnavailable`.

The real Redis is the test database; the failures that need a misbehaving server (silent, slow,
refusing the password) use a small fake that speaks just enough RESP."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from billing.counters import (
    Adjust,
    Check,
    CounterStoreUnavailable,
    Enqueue,
    Hold,
    RedisCounterStore,
    WindowHit,
    account_key,
    settlement_stream,
)
from billing.counters.pipe import KEEPALIVE_IDLE_S, KEEPALIVE_PROBES, ScriptPipe


async def _forget(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisCounterStore]:
    lean = RedisCounterStore.from_url(redis_url, prefix=redis_prefix)
    assert lean._pipe is not None  # plain TCP: the pipe carries the scripts
    yield lean
    await lean.close()
    await _forget(redis_url, redis_prefix)


async def _scenario(store: RedisCounterStore, prefix: str, admin: aioredis.Redis) -> list[Any]:
    """Every script of the store, through its refusals and an error; what each call answered."""
    key = account_key(prefix, 1, "balance")
    spend = account_key(prefix, 1, "spend:1:2026-12")
    holds = account_key(prefix, 1, "holds")
    stream = settlement_stream(prefix, 1)
    window = account_key(prefix, 1, "rpm")
    answers: list[Any] = []

    async def record(call: Awaitable[Any]) -> None:
        try:
            answer = await call
            # A window's TTL counts down between the two runs; that it has one is what compares.
            answers.append(
                (answer.allowed, answer.count, answer.ttl_ms > 0) if isinstance(answer, WindowHit) else answer
            )
        except ResponseError as error:
            answers.append((type(error).__name__, str(error).replace(prefix, "P:")))

    await record(store.adjust([Adjust(key, "bal", 100), Adjust(spend, "v", 0, ttl_ms=60_000)]))
    await record(store.apply([Check(key, "held", 30, limit_field="bal"), Check(spend, "v", 30, limit=50)]))
    await record(store.apply([Check(key, "held", 80, limit_field="bal")]))  # refused: over the balance
    await record(store.apply([Check(key, "nope", 1, must_exist=True)]))  # refused: missing field
    await record(store.apply([Check(key, "held", 1, limit_field="none")]))  # refused: missing cap
    await record(store.apply([Check(key, "held", 10, limit_field="bal")], Hold(holds, "req_1", '{"a":10}')))
    await record(store.update_hold(holds, "req_1", '{"a":12}'))
    await record(store.update_hold(holds, "gone", "x"))
    settle = Enqueue(stream, key, "pend", b"settled req_1", 7)
    await record(store.release(holds, "req_1", if_held=[Adjust(key, "held", -10)], always=[], enqueue=settle))
    late = Enqueue(stream, key, "pend", b"late", 5, only_if_held=True)
    await record(store.release(holds, "req_1", if_held=[Adjust(key, "held", -10)], always=[], enqueue=late))
    await record(store.hit_window(window, 2, 60_000))
    await record(store.hit_window(window, 2, 60_000))
    await record(store.hit_window(window, 2, 60_000))  # refused: the window is full
    await record(store.set_if(key, {"bal": 90}, "gen", None))
    await record(store.set_if(key, {"bal": 80}, "gen", 3))  # refused: the guard does not match
    claimed = await store.claim_settlements(stream, "writer", 10)
    await record(store.ack_settlements(stream, key, "pend", claimed, "gen"))
    await record(store.ack_settlements(stream, key, "pend", claimed, "gen"))
    # A script error (a hash command on a string) comes back as redis-py's ResponseError.
    await admin.set(prefix + "text", "not a hash")
    await record(store.apply([Check(prefix + "text", "n", 1)]))
    return answers


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _contents(admin: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (named without it): its value, and whether it has a TTL."""
    contents: dict[str, Any] = {}
    async for raw in admin.scan_iter(match=prefix + "*"):
        name = raw.decode() if isinstance(raw, bytes) else raw
        kind = _text(await admin.type(name))
        value: Any
        if kind == "hash":
            value = await admin.hgetall(name)
        elif kind == "stream":
            entries: Any = await admin.xrange(name)
            value = [fields for _id, fields in entries]  # the ids differ from run to run
        else:
            value = await admin.get(name)
        contents[name.removeprefix(prefix)] = (kind, value, await admin.pttl(name) > 0)
    return contents


async def test_redis_pipe_answers_like_redis_pys_pipeline(redis_url: str) -> None:
    """The same calls through the pipe and through redis-py answer and write the same."""
    admin = aioredis.Redis.from_url(redis_url)
    prefixes = {"lean": f"twtest:{secrets.token_hex(4)}:", "redis-py": f"twtest:{secrets.token_hex(4)}:"}
    lean = RedisCounterStore.from_url(redis_url, prefix=prefixes["lean"])
    plain = RedisCounterStore(aioredis.Redis.from_url(redis_url), prefix=prefixes["redis-py"], lean_pipe=False)
    assert lean._pipe is not None and plain._pipe is None
    try:
        through_pipe = await _scenario(lean, prefixes["lean"], admin)
        through_redis_py = await _scenario(plain, prefixes["redis-py"], admin)
        assert through_pipe == through_redis_py
        assert through_pipe[-1][0] == "ResponseError"
        assert await _contents(admin, prefixes["lean"]) == await _contents(admin, prefixes["redis-py"])
    finally:
        await lean.close()
        await plain.close()
        for prefix in prefixes.values():
            await _forget(redis_url, prefix)
        await admin.aclose()


async def test_redis_pipe_matches_replies_to_their_calls_with_batches_in_flight(
    store: RedisCounterStore, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 calls, started over several loop turns so that several batches wait on the one
    connection at once: each caller gets its own answer."""
    pipe = store._pipe
    assert pipe is not None
    in_flight = 0
    most = 0
    execute = pipe.execute

    async def counting(commands: Any) -> list[Any]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await execute(commands)
        finally:
            in_flight -= 1

    send_now = pipe.send_now

    def counting_now(commands: Any) -> asyncio.Future[list[Any]] | None:
        # The batcher writes straight from its callback once connected.
        nonlocal in_flight, most
        sent = send_now(commands)
        if sent is not None:
            in_flight += 1
            most = max(most, in_flight)

            def landed(_done: object) -> None:
                nonlocal in_flight
                in_flight -= 1

            sent.add_done_callback(landed)
        return sent

    monkeypatch.setattr(pipe, "execute", counting)
    monkeypatch.setattr(pipe, "send_now", counting_now)
    await store.hit_window(account_key(redis_prefix, 0, "rpm"), 5, 1000)  # connected before the calls
    most = 0

    async def call(n: int) -> tuple[int, ...]:
        for _turn in range(n % 5):
            await asyncio.sleep(0)  # a later loop turn: a batch of its own
        key = account_key(redis_prefix, n, "balance")
        result = await store.apply([Check(key, "n", n), Check(key, "m", 2 * n, limit=10_000)])
        assert result.ok
        return result.counts

    counts = await asyncio.gather(*(call(n) for n in range(200)))
    assert counts == [(n, 2 * n) for n in range(200)]
    assert most > 1  # batches were pipelined, not sent one after another


async def test_redis_pipe_reloads_flushed_scripts(store: RedisCounterStore, redis_url: str, redis_prefix: str) -> None:
    """NOSCRIPT from the pipe reaches the batcher as redis-py's NoScriptError, which reloads."""
    key = account_key(redis_prefix, 1, "balance")
    holds = account_key(redis_prefix, 1, "holds")
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert (await store.apply([Check(key, "n", 1, limit=5)])).ok
        await admin.script_flush()
        results = await asyncio.gather(*(store.apply([Check(key, "n", 1, limit=5)]) for _ in range(6)))
        assert [result.ok for result in results].count(True) == 4
        await admin.script_flush()
        assert not await store.release(holds, "nobody", if_held=[], always=[Adjust(key, "n", -5)])
        assert await store.get(key, "n") == 0
    finally:
        await admin.aclose()


async def test_redis_pipe_reconnects_after_the_server_kills_its_connection(redis_url: str, redis_prefix: str) -> None:
    """The pipe's connection killed: a call fails closed or goes out on a new connection, and the
    pipe connects again for the next."""
    name = f"twtest-pipe-{secrets.token_hex(4)}"
    store = RedisCounterStore(aioredis.Redis.from_url(redis_url, client_name=name), prefix=redis_prefix)
    admin = aioredis.Redis.from_url(redis_url)
    key = account_key(redis_prefix, 1, "balance")

    async def pipes() -> list[str]:
        # The pipe's connection bears the client's name; the pool's last ran PING, not EVALSHA.
        clients = await admin.client_list()
        return [client["id"] for client in clients if client.get("name") == name and client["cmd"] == "evalsha"]

    try:
        await store.adjust([Adjust(key, "n", 1)])  # a NOSCRIPT here reloads through the pool
        await store.ping()
        await store.adjust([Adjust(key, "n", 1)])
        [killed] = await pipes()
        await admin.client_kill_filter(_id=killed)  # by id: the server's other clients are not ours
        with contextlib.suppress(CounterStoreUnavailable):
            await store.adjust([Adjust(key, "n", 1)])  # sent before the loop saw the close: fails
        await store.adjust([Adjust(key, "n", 1)])
        assert await store.get(key, "n") in (3, 4)  # never applied twice
        assert [killed] != await pipes()
    finally:
        await store.close()
        await _forget(redis_url, redis_prefix)
        await admin.aclose()


async def test_redis_pipe_uses_the_clients_database(
    store: RedisCounterStore, redis_url: str, redis_prefix: str
) -> None:
    """SELECT goes out before the first batch: the scripts write the URL's database. A store of
    its own on a database other than 0 (a CI worker's test database may be 0 itself)."""
    current = int(urlsplit(redis_url).path.lstrip("/") or 0)
    selected_url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{current or 1}"))
    selected = RedisCounterStore.from_url(selected_url, prefix=redis_prefix)
    assert selected._pipe is not None
    key = account_key(redis_prefix, 1, "balance")
    same_db = aioredis.Redis.from_url(selected_url)
    default_db = aioredis.Redis.from_url(urlunsplit(urlsplit(redis_url)._replace(path="/0")))
    try:
        await selected.adjust([Adjust(key, "bal", 42)])
        assert await same_db.hget(key, "bal") == b"42"
        assert await default_db.exists(key) == 0
    finally:
        await same_db.delete(key)
        await selected.close()
        await same_db.aclose()
        await default_db.aclose()


Answer = Callable[[list[bytes]], Awaitable[bytes | None]]


class FakeRedis:
    """A server on 127.0.0.1 that reads RESP commands, records them, and writes what ``answer``
    says for each (``None``: nothing, ever)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> FakeRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:  # one may still be sleeping on a reply nobody waits for
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.commands.append(command)
                    reply = await self.answer(command)
                    if reply is not None:
                        writer.write(reply)
        except ConnectionError:
            pass  # the pipe aborts the connections it gives up on
        finally:
            writer.close()


async def _silent(command: list[bytes]) -> bytes | None:
    return None


def _store(port: int, *, db: int = 0, timeout: float = 0.2, **kwargs: Any) -> RedisCounterStore:
    client = aioredis.Redis(
        host="127.0.0.1", port=port, db=db, socket_timeout=timeout, socket_connect_timeout=timeout, **kwargs
    )
    store = RedisCounterStore(client, prefix="twtest:fake:")
    assert store._pipe is not None
    return store


@pytest.mark.parametrize("db", [0, 3], ids=["first-batch", "select"])
async def test_redis_pipe_fails_closed_when_the_server_never_answers(db: int) -> None:
    """A server that accepts and then says nothing: the call fails within the socket timeout
    (whether it waits on SELECT or on its batch), and so does the next, on a new connection."""
    async with FakeRedis(_silent) as server:
        store = _store(server.port, db=db)
        try:
            for _attempt in range(2):
                with pytest.raises(CounterStoreUnavailable) as failure:
                    await store.apply([Check("twtest:fake:k", "n", 1, limit=5)])
                assert isinstance(failure.value.__cause__, RedisTimeoutError)
            assert server.connections == 2
        finally:
            await store.close()


async def test_redis_pipe_fails_closed_when_the_server_refuses_connections() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = _store(port)
    try:
        with pytest.raises(CounterStoreUnavailable) as failure:
            await store.hit_window("twtest:fake:w", 1, 1000)
        assert isinstance(failure.value.__cause__, RedisConnectionError)
    finally:
        await store.close()


async def test_redis_pipe_close_fails_the_calls_in_flight() -> None:
    """Closing the store does not leave a call waiting on a reply that will never come."""
    async with FakeRedis(_silent) as server:
        store = _store(server.port, timeout=60)
        call = asyncio.create_task(store.hit_window("twtest:fake:w1", 5, 1000))
        while not server.commands:
            await asyncio.sleep(0.01)
        await store.close()
        async with asyncio.timeout(10):  # far short of the socket timeout
            with pytest.raises(CounterStoreUnavailable):
                await call


def _window_reply(command: list[bytes]) -> bytes:
    """hit_window's answer with the count taken from the key's last digit: who got whose reply."""
    return b"*3\r\n:1\r\n:%d\r\n:1000\r\n" % int(command[3][-1:])


async def test_redis_pipe_never_hands_a_late_reply_to_a_later_call() -> None:
    """A batch that timed out closes its connection; its reply, arriving later, is not taken for
    the next batch's."""
    first = True

    async def slow_first(command: list[bytes]) -> bytes | None:
        nonlocal first
        if command[0] != b"EVALSHA":
            return b"+OK\r\n"
        if first:
            first = False
            await asyncio.sleep(0.5)  # past the 0.2 s timeout
        return _window_reply(command)

    async with FakeRedis(slow_first) as server:
        store = _store(server.port)
        try:
            with pytest.raises(CounterStoreUnavailable):
                await store.hit_window("twtest:fake:w1", 5, 1000)
            hit = await store.hit_window("twtest:fake:w2", 5, 1000)
            assert hit.count == 2
            assert server.connections == 2
        finally:
            await store.close()


async def test_redis_pipe_sends_auth_and_select_before_any_script() -> None:
    async def ok(command: list[bytes]) -> bytes:
        return b"+OK\r\n" if command[0] != b"EVALSHA" else _window_reply(command)

    async with FakeRedis(ok) as server:
        store = _store(server.port, db=3, username="gateway", password="s3cret", client_name="tollway")
        try:
            assert (await store.hit_window("twtest:fake:w4", 5, 1000)).count == 4
            assert (await store.hit_window("twtest:fake:w5", 5, 1000)).count == 5
            assert server.commands[:3] == [
                [b"AUTH", b"gateway", b"s3cret"],
                [b"SELECT", b"3"],
                [b"CLIENT", b"SETNAME", b"tollway"],
            ]
            assert [command[0] for command in server.commands[3:]] == [b"EVALSHA", b"EVALSHA"]
            assert server.connections == 1
        finally:
            await store.close()


async def test_redis_pipe_refused_password_fails_closed_and_sends_no_script() -> None:
    async def wrong_password(command: list[bytes]) -> bytes:
        return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"

    async with FakeRedis(wrong_password) as server:
        store = _store(server.port, password="nope")
        try:
            with pytest.raises(CounterStoreUnavailable) as failure:
                await store.hit_window("twtest:fake:w1", 5, 1000)
            assert isinstance(failure.value.__cause__, AuthenticationError)
            assert [command[0] for command in server.commands] == [b"AUTH"]
        finally:
            await store.close()


async def test_redis_pipe_probes_an_idle_connection(redis_url: str, redis_prefix: str) -> None:
    """TCP keepalive: a server gone without a word is found while the pipe idles, not by the next
    batch's timeout (which fails its calls)."""
    store = RedisCounterStore.from_url(redis_url, prefix=redis_prefix)
    try:
        await store.adjust([Adjust(account_key(redis_prefix, 1, "balance"), "bal", 1)])
        assert store._pipe is not None and store._pipe._protocol is not None
        transport = store._pipe._protocol._transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_PROBES
    finally:
        await store.close()
        await _forget(redis_url, redis_prefix)


def test_redis_pipe_only_for_plain_tcp() -> None:
    """TLS, unix sockets and decoded replies keep redis-py's pipeline; so does a cluster."""
    assert ScriptPipe.for_client(aioredis.Redis.from_url("redis://127.0.0.1:6379/2")) is not None
    assert ScriptPipe.for_client(aioredis.Redis.from_url("rediss://127.0.0.1:6379/2")) is None
    assert ScriptPipe.for_client(aioredis.Redis.from_url("unix:///tmp/redis.sock?db=2")) is None
    assert ScriptPipe.for_client(aioredis.Redis.from_url("redis://127.0.0.1", decode_responses=True)) is None
    assert RedisCounterStore.from_url("redis+cluster://127.0.0.1:7000")._pipe is None


@pytest.mark.parametrize(
    "reply",
    [
        "ERR user_script:1: Script attempted to access nonexistent global variable 'x'",
        "ERR max number of clients reached",
        "NOSCRIPT No matching script. Please use EVAL.",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "LOADING Redis is loading the dataset in memory",
        "NOAUTH Authentication required.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "BUSY Redis is busy running a script.",
    ],
)
def test_redis_pipe_error_replies_are_redis_pys(reply: str) -> None:
    """The same exception, class and message, as redis-py's own parser makes of the reply."""
    from redis._parsers.base import BaseParser

    from billing.counters.pipe import _reply_error

    ours, theirs = _reply_error(reply), cast(Any, BaseParser).parse_error(reply)
    assert (type(ours), str(ours)) == (type(theirs), str(theirs))


async def _with_store(redis_url: str, redis_prefix: str, body: Callable[[RedisCounterStore], Awaitable[None]]) -> None:
    store = RedisCounterStore.from_url(redis_url, prefix=redis_prefix)
    try:
        await body(store)
    finally:
        await store.close()
        await _forget(redis_url, redis_prefix)


async def _batches_in_flight(store: RedisCounterStore, redis_prefix: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        await test_redis_pipe_matches_replies_to_their_calls_with_batches_in_flight(store, redis_prefix, monkeypatch)


_ON_UVLOOP: dict[str, Callable[[str, str], Coroutine[Any, Any, None]]] = {
    "same-answers": lambda url, prefix: test_redis_pipe_answers_like_redis_pys_pipeline(url),
    "in-flight": lambda url, prefix: _with_store(url, prefix, lambda store: _batches_in_flight(store, prefix)),
    "flushed": lambda url, prefix: _with_store(
        url, prefix, lambda store: test_redis_pipe_reloads_flushed_scripts(store, url, prefix)
    ),
    "killed": test_redis_pipe_reconnects_after_the_server_kills_its_connection,
    "database": lambda url, prefix: _with_store(
        url, prefix, lambda store: test_redis_pipe_uses_the_clients_database(store, url, prefix)
    ),
    "silent": lambda url, prefix: test_redis_pipe_fails_closed_when_the_server_never_answers(3),
    "refused": lambda url, prefix: test_redis_pipe_fails_closed_when_the_server_refuses_connections(),
    "late-reply": lambda url, prefix: test_redis_pipe_never_hands_a_late_reply_to_a_later_call(),
    "auth": lambda url, prefix: test_redis_pipe_sends_auth_and_select_before_any_script(),
    "closed": lambda url, prefix: test_redis_pipe_close_fails_the_calls_in_flight(),
    "keepalive": test_redis_pipe_probes_an_idle_connection,
}


@pytest.mark.parametrize("case", list(_ON_UVLOOP))
def test_redis_pipe_on_uvloop(case: str, redis_url: str, redis_prefix: str) -> None:
    """The gateway serves on uvloop, whose transports are not asyncio's classes (the pipe once
    refused them): the tests above again on a uvloop event loop."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_ON_UVLOOP[case](redis_url, redis_prefix))

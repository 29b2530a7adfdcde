"""The Redis counter store: every check-and-apply is one Lua script, one round trip.

Scripts receive every key they touch in ``KEYS`` (Redis Cluster routes by them), and the
keys of one account share a hash tag, so a script never spans slots. Connection failures
become :class:`CounterStoreUnavailable` so money checks fail closed. On a single server over
plain TCP the scripts go out on a pipelined connection of their own
(:class:`~billing.counters.pipe.ScriptPipe`); everything else goes through redis-py's client.

A ``redis+cluster://`` (or ``rediss+cluster://``) URL selects Redis Cluster: the client learns
the other nodes from the first of the seeds named (``redis+cluster://h1:7000,h2:7000``) that
answers, so one node down at startup does not stop a gateway. What differs from one server is
kept to three places, so the single-server path does no extra work per call: the script batcher
splits each batch by node (:class:`ClusterScriptBatcher`), a script the node has not seen is
loaded on every primary, and the settlement streams are found by scanning each primary (one
``SCAN`` sees one node).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from billing.counters._base import (
    Adjust,
    ApplyResult,
    Check,
    CounterStoreUnavailable,
    Enqueue,
    Hold,
    QueuedSettlement,
    WindowHit,
    settlement_stream,
)
from billing.counters.pipe import ScriptPipe

T = TypeVar("T")

# ARGV[1] = number of checks; then per check: field, delta, limit ("" = none), limit_field
# ("" = none), must_exist (0/1), ttl_ms; then, with a hold, its field and value (KEYS[n + 1]).
# Bounds are evaluated against the values before this apply; then every delta is written, and
# a success returns each check's value after it (after the four fields of a refusal).
_APPLY = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local base = (i - 1) * 6 + 1
  local field, delta = ARGV[base + 1], tonumber(ARGV[base + 2])
  local limit, limit_field = ARGV[base + 3], ARGV[base + 4]
  local raw = redis.call('HGET', KEYS[i], field)
  if (not raw) and ARGV[base + 5] == '1' then
    return {i - 1, 1, false, false}
  end
  local value = tonumber(raw or '0')
  local cap = false
  if limit_field ~= '' then
    local raw_cap = redis.call('HGET', KEYS[i], limit_field)
    if not raw_cap then
      return {i - 1, 1, raw and value or false, false}
    end
    cap = tonumber(raw_cap)
  elseif limit ~= '' then
    cap = tonumber(limit)
  end
  if cap and delta > 0 and value + delta > cap then
    return {i - 1, 0, value, cap}
  end
end
local result = {-1, 0, false, false}
for i = 1, n do
  local base = (i - 1) * 6 + 1
  local ttl = tonumber(ARGV[base + 6])
  local existed = ttl > 0 and redis.call('EXISTS', KEYS[i]) == 1
  result[i + 4] = redis.call('HINCRBY', KEYS[i], ARGV[base + 1], ARGV[base + 2])
  if ttl > 0 and not existed then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
if #KEYS > n then
  redis.call('HSET', KEYS[n + 1], ARGV[n * 6 + 2], ARGV[n * 6 + 3])
end
return result
"""

# KEYS[1] = the holds hash, then the adjusted keys, then (when enqueueing) the account's
# settlement stream and the key of its pending counter. ARGV[1] = the hold's field, ARGV[2] =
# how many adjustments apply only if the hold was still there (they come first), ARGV[3] =
# enqueue mode (0: none, 1: always, 2: only if the hold was there), ARGV[4..6] = the
# settlement's data, its cost and the pending counter's field, then per adjustment: field,
# delta, ttl_ms (set only on a key without one). Returns 1 when this call removed the hold.
_RELEASE = """
local held = redis.call('HDEL', KEYS[1], ARGV[1])
local conditional = tonumber(ARGV[2])
local mode = tonumber(ARGV[3])
local last = #KEYS
if mode > 0 then last = last - 2 end
for i = 2, last do
  local base = (i - 2) * 3 + 6
  if i - 1 > conditional or held == 1 then
    redis.call('HINCRBY', KEYS[i], ARGV[base + 1], ARGV[base + 2])
    local ttl = tonumber(ARGV[base + 3])
    if ttl > 0 and redis.call('PTTL', KEYS[i]) < 0 then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
if mode == 1 or (mode == 2 and held == 1) then
  redis.call('XADD', KEYS[#KEYS - 1], '*', 'd', ARGV[4], 'c', ARGV[5])
  redis.call('HINCRBY', KEYS[#KEYS], ARGV[6], ARGV[5])
end
return held
"""

# KEYS[1] = a settlement stream, KEYS[2] = its pending counter's key; ARGV[1] = the group,
# ARGV[2] = the pending field, ARGV[3] = a generation field to bump ("" = none), then entry id /
# cost pairs. An entry's cost comes off the counter only if this call acknowledged it, so two
# writers that both wrote it count it once; and taking it off bumps the generation, so a
# refresh that read the pending sum before this ack is refused (see billing.mirror).
_ACK = """
local total = 0
local acked = 0
for i = 4, #ARGV, 2 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    total = total + tonumber(ARGV[i + 1])
    acked = acked + 1
  end
  redis.call('XDEL', KEYS[1], ARGV[i])
end
if total ~= 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], -total)
end
if acked > 0 and ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
return total
"""

# ARGV per item: field, delta, ttl_ms (the TTL is set only on a key that had none).
_ADJUST = """
for i = 1, #KEYS do
  local base = (i - 1) * 3
  redis.call('HINCRBY', KEYS[i], ARGV[base + 1], ARGV[base + 2])
  local ttl = tonumber(ARGV[base + 3])
  if ttl > 0 and redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 0
"""

# ARGV: guard_field, guard_value ("" = must be absent), then field/value pairs.
_SET_IF = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""


_UPDATE_HOLD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] = the window; ARGV[1] = the limit, ARGV[2] = the window's length in ms (from its first
# hit). A refused hit writes nothing. Returns {counted (0/1), count after, ms left}.
_HIT_WINDOW = """
local count = tonumber(redis.call('HGET', KEYS[1], 'hits') or '0')
if count >= tonumber(ARGV[1]) then
  return {0, count, redis.call('PTTL', KEYS[1])}
end
count = redis.call('HINCRBY', KEYS[1], 'hits', 1)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {1, count, ttl}
"""

_GROUP = "writers"

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://host:port``)."""
    return url.startswith(CLUSTER_SCHEMES)


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL's first seed as a plain ``redis://`` URL (credentials, TLS and options kept),
    and the further seeds of ``host:port,host:port`` as (host, port) pairs (port 6379 if none).
    Raises ValueError on a seed without a host or with a port that is not a number."""
    scheme, _, rest = url.replace("+cluster://", "://", 1).partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    seeds = [_seed(host) for host in hosts.split(",")]
    first_host, first_port = seeds[0]
    first = f"[{first_host}]" if ":" in first_host else first_host
    return f"{scheme}://{userinfo}{at}{first}:{first_port}{tail}", seeds[1:]


def _seed(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError("a Redis Cluster seed without a host")
    if port and not port.isdigit():
        raise ValueError("a Redis Cluster seed's port must be a number")
    return host, int(port) if port else 6379


# A server that answers but refuses to write: full (at ``maxmemory`` with ``noeviction``), a
# replica since a failover, a master that lost its replicas. It refuses a script at its first
# write, so none of it ran: treated as a server out of reach (money checks fail closed, a
# settlement goes to the database), not as a bug (a 500, and a settlement lost).
# CLUSTERDOWN (slots without a master, until a failover) is the same for a cluster.
_REFUSING = (OutOfMemoryError, ReadOnlyError, MasterDownError, ClusterDownError)
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Sends the scripts that concurrent requests call in the same event-loop turn as one
    pipeline: one write and one read for all of them. Each call still runs alone and atomically
    on the server; only the round trip is shared. Measured here: ~110 µs of client CPU per
    script alone, ~30 µs each in a pipeline of four or more.

    With a :class:`~billing.counters.pipe.ScriptPipe` (a single server over plain TCP) the
    batches go through it instead of redis-py's pipeline; a script the server does not know is
    still loaded and run again through ``client``."""

    def __init__(self, client: aioredis.Redis | RedisCluster, pipe: ScriptPipe | None = None) -> None:
        self._client = client
        self._pipe = pipe
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((script, keys, args, result))
        if len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)
        return await result

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        if self._pipe is not None:
            sent = self._pipe.send_now(self._commands(batch))
            if sent is not None:
                # Connected: written now, answered from the reply's callback; no task per batch.
                sent.add_done_callback(lambda replied: self._replied(batch, replied))
                return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if self._pipe is not None:
                replies = await self._pipe.execute(self._commands(batch))
            else:
                pipeline = self._client.pipeline(transaction=False)
                for script, keys, args, _result in batch:
                    # execute_command, not evalsha: redis-py's cluster pipeline refuses the method
                    # (scripts may be missing on a node; NOSCRIPT is handled below).
                    pipeline.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                replies = await pipeline.execute(raise_on_error=False)
        except BaseException as error:
            _fail(batch, error if isinstance(error, Exception) else RedisConnectionError(str(error)))
            if not isinstance(error, Exception):
                raise
            return
        await self._answer(batch, replies)

    @staticmethod
    def _commands(batch: list[_Call]) -> list[tuple[Any, ...]]:
        return [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args, _result in batch]

    def _replied(self, batch: list[_Call], replied: asyncio.Future[list[Any]]) -> None:
        error = None if replied.cancelled() else replied.exception()
        if replied.cancelled() or error is not None:
            _fail(batch, error or RedisConnectionError("the batch was cancelled"))
            return
        replies = replied.result()
        if any(isinstance(reply, NoScriptError) for reply in replies):
            task = asyncio.get_running_loop().create_task(self._answer(batch, replies))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            return
        for (*_call, result), reply in zip(batch, replies, strict=True):
            _deliver(result, reply)

    async def _answer(self, batch: list[_Call], replies: list[Any]) -> None:
        for (script, keys, args, result), reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):  # the server restarted or flushed its scripts
                try:
                    await self._client.script_load(script.script)
                    reply = await self._client.evalsha(script.sha, len(keys), *keys, *args)
                except Exception as error:
                    reply = error
            _deliver(result, reply)


def _deliver(result: asyncio.Future[Any], reply: Any) -> None:
    if result.done():
        return  # its caller was cancelled
    if isinstance(reply, Exception):
        result.set_exception(reply)
    else:
        result.set_result(reply)


def _fail(batch: list[_Call], error: BaseException) -> None:
    for *_call, result in batch:
        if not result.done():
            result.set_exception(error)


class ClusterScriptBatcher(ScriptBatcher):
    """The batcher for Redis Cluster: one pipeline per node, sent side by side.

    redis-py's cluster pipeline would route a mixed batch itself, but when it cannot reach one
    node it sends the whole batch again, and runs again every command whose reply was falsy
    (``0`` from every adjust, from a release that found no hold): with a master down, one adjust
    on a live master was applied eleven times (tests/integration/test_redis_cluster.py). Split
    by node first, a retry resends only that node's calls, which did not run. (The retry also
    closes the client's connections, so a call in flight on another node may be told it failed:
    applied at most once, and a failed money call fails closed.)"""

    _client: RedisCluster

    def __init__(self, client: RedisCluster) -> None:
        super().__init__(client)

    async def _send(self, batch: list[_Call]) -> None:
        by_node: dict[str, list[_Call]] = {}
        try:
            await self._client.initialize()  # a no-op once the slots are known
            for call in batch:
                # Every key of one script shares the slot of its first (billing.layout).
                node = self._client.get_node_from_key(call[1][0])
                by_node.setdefault(node.name if node is not None else "", []).append(call)
        except Exception as error:
            _fail(batch, error)
            return
        if len(by_node) == 1:
            await super()._send(batch)
            return
        send = super()._send
        await asyncio.gather(*(send(calls) for calls in by_node.values()))


class RedisCounterStore:
    durable = True

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str = "tw:", lean_pipe: bool = True) -> None:
        """``lean_pipe=False`` sends the scripts through redis-py's pipeline even where a
        :class:`~billing.counters.pipe.ScriptPipe` could (the tests compare the two)."""
        self._client = client
        self._prefix = prefix
        self._groups_ready: set[str] = set()
        self._pipe: ScriptPipe | None = None
        if isinstance(client, RedisCluster):
            self._scripts: ScriptBatcher = ClusterScriptBatcher(client)
        else:
            if lean_pipe:
                self._pipe = ScriptPipe.for_client(client)
            self._scripts = ScriptBatcher(client, self._pipe)
        self._ack = client.register_script(_ACK)
        self._apply = client.register_script(_APPLY)
        self._adjust = client.register_script(_ADJUST)
        self._set_if = client.register_script(_SET_IF)
        self._release = client.register_script(_RELEASE)
        self._update_hold = client.register_script(_UPDATE_HOLD)
        self._hit_window = client.register_script(_HIT_WINDOW)

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 200, prefix: str = "tw:") -> RedisCounterStore:
        """Build from a URL (``redis+cluster://`` for a cluster); connects lazily. Short timeouts
        so a dead Redis fails fast."""
        if is_cluster_url(url):
            first, others = cluster_seeds(url)
            # max_connections is per node in a cluster client.
            return cls(
                RedisCluster.from_url(
                    first,
                    startup_nodes=[ClusterNode(host, port) for host, port in others] or None,
                    socket_timeout=2,
                    socket_connect_timeout=2,
                    max_connections=max_connections,
                    health_check_interval=30,
                ),
                prefix=prefix,
            )
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=2,
            socket_connect_timeout=2,
            max_connections=max_connections,
            health_check_interval=30,
        )
        return cls(client, prefix=prefix)

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (*_UNREACHABLE, *_REFUSING) as error:
            raise CounterStoreUnavailable(f"redis unavailable: {type(error).__name__}") from error
        except RedisClusterException as error:
            # redis-py's word for "no seed answered" (not a RedisError); any other is a bug.
            if not isinstance(error.__cause__, _UNREACHABLE):
                raise
            raise CounterStoreUnavailable("redis unavailable: no cluster node reachable") from error

    async def apply(self, checks: Sequence[Check], hold: Hold | None = None) -> ApplyResult:
        if not checks:
            return ApplyResult(ok=True)
        keys = [check.key for check in checks]
        args: list[Any] = [len(checks)]
        for check in checks:
            args += [
                check.field,
                check.delta,
                "" if check.limit is None else check.limit,
                check.limit_field or "",
                1 if check.must_exist else 0,
                check.ttl_ms,
            ]
        if hold is not None:
            keys.append(hold.key)
            args += [hold.field, hold.value]
        failed, missing, value, cap, *counts = await self._call(lambda: self._scripts.run(self._apply, keys, args))
        if failed == -1:
            return ApplyResult(ok=True, counts=tuple(int(count) for count in counts))
        return ApplyResult(
            ok=False,
            failed=int(failed),
            missing=bool(missing),
            value=None if value is None else int(value),
            cap=None if cap is None else int(cap),
        )

    async def adjust(self, adjustments: Sequence[Adjust]) -> None:
        if not adjustments:
            return
        keys = [item.key for item in adjustments]
        args: list[Any] = []
        for item in adjustments:
            args += [item.field, item.delta, item.ttl_ms]
        await self._call(lambda: self._scripts.run(self._adjust, keys, args))

    async def release(
        self,
        holds_key: str,
        field: str,
        *,
        if_held: Sequence[Adjust],
        always: Sequence[Adjust],
        enqueue: Enqueue | None = None,
    ) -> bool:
        keys = [holds_key, *(a.key for a in if_held), *(a.key for a in always)]
        args: list[Any] = [field, len(if_held)]
        if enqueue is None:
            args += [0, "", 0, ""]
        else:
            keys += [enqueue.stream, enqueue.pending_key]
            args += [2 if enqueue.only_if_held else 1, enqueue.data, enqueue.cost, enqueue.pending_field]
        for item in (*if_held, *always):
            args += [item.field, item.delta, item.ttl_ms]
        return bool(await self._call(lambda: self._scripts.run(self._release, keys, args)))

    async def hit_window(self, key: str, limit: int, ttl_ms: int) -> WindowHit:
        counted, count, ttl = await self._call(lambda: self._scripts.run(self._hit_window, [key], [limit, ttl_ms]))
        return WindowHit(allowed=bool(counted), count=int(count), ttl_ms=max(int(ttl), 0))

    async def update_hold(self, holds_key: str, field: str, value: str) -> bool:
        return bool(await self._call(lambda: self._scripts.run(self._update_hold, [holds_key], [field, value])))

    async def holds(self, holds_key: str) -> dict[str, str]:
        raw = await self._call(lambda: self._client.hgetall(holds_key))
        return {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }

    async def get(self, key: str, field: str) -> int | None:
        raw = await self._call(lambda: self._client.hget(key, field))
        return None if raw is None else int(raw)

    async def get_all(self, key: str) -> dict[str, int]:
        raw = await self._call(lambda: self._client.hgetall(key))
        # The client returns bytes (decode_responses is off); str only in a decoding client.
        return {(name.decode() if isinstance(name, bytes) else name): int(value) for name, value in raw.items()}

    async def set_if(self, key: str, values: Mapping[str, int], guard_field: str, guard_value: int | None) -> bool:
        args: list[Any] = [guard_field, "" if guard_value is None else guard_value]
        for name, value in values.items():
            args += [name, value]
        applied = await self._call(lambda: self._scripts.run(self._set_if, [key], args))
        return bool(applied)

    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups_ready:
            return
        try:
            await self._client.xgroup_create(stream, _GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups_ready.add(stream)

    async def claim_settlements(
        self, stream: str, consumer: str, count: int, idle_ms: int | None = None
    ) -> list[QueuedSettlement]:
        async def claim() -> list[QueuedSettlement]:
            await self._ensure_group(stream)
            pipe = self._client.pipeline(transaction=False)
            # Ours not yet acknowledged (a write that failed), then new ones; with idle_ms, also
            # others' stale ones (their process died before acknowledging).
            pipe.xreadgroup(_GROUP, consumer, {stream: "0"}, count=count)
            pipe.xreadgroup(_GROUP, consumer, {stream: ">"}, count=count)
            if idle_ms is not None:
                pipe.xautoclaim(stream, _GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=count)
            try:
                replies: list[Any] = await pipe.execute()
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                # The stream and its group vanished (Redis lost its data): start them again.
                self._groups_ready.discard(stream)
                return []
            entries = [entry for reply in replies[:2] for _stream, items in reply or () for entry in items]
            if idle_ms is not None:
                entries += list(replies[2][1])
            taken: dict[str, QueuedSettlement] = {}
            for entry_id, fields in entries:
                if fields:  # a deleted entry still pending comes back without fields
                    key = _text(entry_id)
                    taken[key] = QueuedSettlement(key, fields[b"d"], int(fields[b"c"]))
            return list(taken.values())

        return await self._call(claim)

    async def ack_settlements(
        self,
        stream: str,
        pending_key: str,
        pending_field: str,
        entries: Sequence[QueuedSettlement],
        generation_field: str = "",
    ) -> int:
        if not entries:
            return 0
        args: list[Any] = [_GROUP, pending_field, generation_field]
        for entry in entries:
            args += [entry.entry_id, entry.cost]
        return int(await self._call(lambda: self._scripts.run(self._ack, [stream, pending_key], args)))

    async def _stream_lengths(self) -> dict[str, int]:
        lengths: dict[str, int] = {}
        async for key in self._stream_keys():
            length = int(await self._client.xlen(key))
            if length:
                lengths[_text(key)] = length
        return lengths

    async def _stream_keys(self) -> AsyncIterator[bytes | str]:
        pattern = settlement_stream(self._prefix, "*")  # every account's
        if not isinstance(self._client, RedisCluster):
            async for key in self._client.scan_iter(match=pattern, count=1000, _type="STREAM"):
                yield key
            return
        # One SCAN sees one node's keys: walk every primary with a cursor of its own.
        cluster = await self._client.initialize()
        for node in cluster.get_primaries():
            cursor = 0
            while True:
                reply: Any = await cluster.scan(cursor, match=pattern, count=1000, _type="STREAM", target_nodes=node)
                cursors, keys = reply  # the cluster client answers {node name: cursor}, keys
                cursor = int(cursors[node.name])
                for key in keys:
                    yield key
                if cursor == 0:
                    break

    async def settlement_streams(self) -> list[str]:
        return list(await self._call(self._stream_lengths))

    async def queued_settlements(self, stream: str | None = None) -> int:
        if stream is not None:
            return int(await self._call(lambda: self._client.xlen(stream)))
        return sum((await self._call(self._stream_lengths)).values())

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._client.delete(key))

    async def ping(self) -> None:
        await self._call(lambda: self._client.ping())

    async def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        await self._client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""A real ``tollway serve`` on Postgres + Redis in front of the canned upstream, for the soak,
burst and workers benchmarks (loopback only). Reuses bench/run.py's helpers.

Not a benchmark itself: ``with Stack(workers=2) as stack: ...`` creates a database, an account
with a key, starts the upstream and the gateway, and on exit stops both and drops the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from run import BODY, HERE, STREAM_BODY, VENV_BIN, free_port, tollway, wait_up

__all__ = ["BODY", "STREAM_BODY", "Load", "Stack", "drive", "rss_mib"]

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


class Stack:
    def __init__(
        self,
        *,
        workers: int = 1,
        redis_url: str = "redis://127.0.0.1:6379/2",
        extra_config: str = "",
        gateway_cpus: str | None = None,
        serve_prefix: tuple[str, ...] = (),
        startup_s: float = 30,
    ) -> None:
        self.workers = workers
        self.redis_url = redis_url
        self.extra_config = extra_config
        self.gateway_cpus = gateway_cpus
        # e.g. valgrind: the server runs as ``prefix python tollway serve`` (bench/callgrind_request.py)
        self.serve_prefix = serve_prefix
        self.startup_s = startup_s
        self.work = Path(tempfile.mkdtemp(prefix="tollway-stack-"))
        self.config = self.work / "tollway.toml"
        self.db_name = f"tollway_stack_{os.getpid()}_{time.monotonic_ns()}"
        # Each stack its own Redis keys: a second stack in one run must not inherit the counters.
        self.prefix = f"twstack{os.getpid()}x{time.monotonic_ns()}:"
        self.upstream_port, self.port = free_port(), free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> subprocess.Popen[bytes]:
        return self.processes[-1]

    def serving_pids(self) -> list[int]:
        """The processes that serve requests: the server itself, or its workers (not the
        multiprocessing resource tracker that spawning starts next to them)."""
        pid = self.gateway.pid
        if self.workers == 1:
            return [pid]
        return [child for child in children(pid) if b"resource_tracker" not in _cmdline(child)]

    def rss(self) -> list[float]:
        return [rss_mib(pid) for pid in self.serving_pids()]

    def __enter__(self) -> Stack:
        asyncio.run(_admin(f'CREATE DATABASE "{self.db_name}"'))
        self.config.write_text(
            f"""
database_url = "postgresql+asyncpg://postgres@127.0.0.1:5432/{self.db_name}"
redis_url = "{self.redis_url}"
redis_prefix = "{self.prefix}"
port = {self.port}
workers = {self.workers}
bootstrap = false
demo_provider = false
{self.extra_config}
[providers.bench]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{self.upstream_port}/v1"
[models."bench/gpt-4o-mini"]
provider = "bench"
upstream_model = "gpt-4o-mini"
input_per_mtok = "0.15"
output_per_mtok = "0.60"
max_output_tokens = 16384
"""
        )
        tollway(self.config, "migrate")
        account = json.loads(tollway(self.config, "accounts", "create", "bench", "--credits", "100000000"))
        self.key = json.loads(tollway(self.config, "keys", "create", "--account", str(account["id"]), "--name", "b"))[
            "key"
        ]
        self.processes.append(
            subprocess.Popen([sys.executable, str(HERE / "canned_upstream.py"), str(self.upstream_port)])
        )
        serve = [str(VENV_BIN / "tollway"), "--config", str(self.config), "serve"]
        if self.serve_prefix:
            serve = [*self.serve_prefix, sys.executable, *serve]
        if self.gateway_cpus:
            serve = ["taskset", "-c", self.gateway_cpus, *serve]
        self.processes.append(subprocess.Popen(serve, stdout=subprocess.DEVNULL))
        wait_up(f"http://127.0.0.1:{self.upstream_port}/")
        wait_up(f"{self.url}/healthz", self.startup_s)
        if self.workers > 1:
            deadline = time.monotonic() + 60
            while len(self.serving_pids()) < self.workers and time.monotonic() < deadline:
                time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.terminate()
            process.wait(timeout=60)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        asyncio.run(_forget_keys(self.redis_url, self.prefix))

    def reconcile(self, attempts: int = 10) -> dict[str, Any]:
        """``tollway billing reconcile``, retried while write-behind settlements drain."""
        report: dict[str, Any] = {}
        for _ in range(attempts):
            out = subprocess.run(
                [str(VENV_BIN / "tollway"), "--config", str(self.config), "--json", "billing", "reconcile"],
                capture_output=True,
                text=True,
            )
            report = json.loads(out.stdout) if out.stdout.strip() else {"ok": False, "stderr": out.stderr}
            if report.get("ok"):
                return report
            time.sleep(2)
        return report


async def _forget_keys(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class Load:
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # exceptions: resets, timeouts
    codes: Counter[str] = field(default_factory=Counter)  # the error code of each refusal
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    @property
    def errors(self) -> int:
        return self.total - self.statuses[200]


def _error_code(payload: bytes) -> str:
    try:
        return str(json.loads(payload)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "not the OpenAI error shape"


async def drive(
    url: str,
    key: str,
    *,
    connections: int,
    duration_s: float | None = None,
    requests_per_connection: int | None = None,
    rate_per_s: float | None = None,
    timeout_s: float = 60.0,
    fresh_connections: bool = False,
    load: Load | None = None,
) -> Load:
    """``connections`` clients posting chat (and every fourth a stream) until the duration or
    their request count is reached; ``rate_per_s`` paces the whole load (a steady soak)."""
    load = load or Load()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    bodies = [BODY.encode(), BODY.encode(), BODY.encode(), STREAM_BODY.encode()]
    end = None if duration_s is None else time.monotonic() + duration_s
    interval = connections / rate_per_s if rate_per_s else 0.0
    connector = aiohttp.TCPConnector(limit=0, force_close=fresh_connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(index: int) -> None:
            sent = 0
            next_at = time.monotonic() + interval * index / max(connections, 1)
            while (end is None or time.monotonic() < end) and (
                requests_per_connection is None or sent < requests_per_connection
            ):
                if interval:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += interval
                body = bodies[(index + sent) % len(bodies)]
                sent += 1
                start = time.perf_counter()
                try:
                    async with session.post(f"{url}/v1/chat/completions", data=body, headers=headers) as response:
                        payload = await response.read()
                        load.statuses[response.status] += 1
                        if response.status != 200:
                            load.codes[_error_code(payload)] += 1
                except (aiohttp.ClientError, TimeoutError) as error:
                    load.failures[type(error).__name__] += 1
                load.latencies_ms.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(client(i) for i in range(connections)))
    return load

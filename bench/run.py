"""Hot-path benchmark: the gateway in front of a canned upstream, measured with wrk.

Run by hand (not a test): ``python bench/run.py [--backend sqlite|postgres] [--duration 15]``.
Like docs/performance.md: the gateway is pinned to core 0, the canned upstream and wrk share core 1;
c=32 for throughput, then 2,000 sequential requests on one keep-alive connection for latency.
For the floor and the gateway, chat and stream, side by side: RPS at c=32, CPU per request at
c=32 and at c=1 (utime + stime of the server process from /proc, before and after, over the
requests served), sequential p50, a stream's time to the first ``data:`` byte, and RSS after the
run. Prints markdown tables to paste into bench/RESULTS.md. Compare only figures from one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import httpx

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
BODY = json.dumps({"model": "bench/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]})
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def tollway(config: Path, *args: str) -> str:
    out = subprocess.run(
        [str(VENV_BIN / "tollway"), "--config", str(config), "--json", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


class Wrk(NamedTuple):
    rps: float
    requests: int


def wrk(url: str, key: str, body: str, duration: int) -> float:
    return wrk_run(url, key, body, duration).rps


def wrk_run(url: str, key: str, body: str, duration: int) -> Wrk:
    env = {**os.environ, "BENCH_KEY": key, "BENCH_BODY": body}
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration}s", "-s", str(HERE / "post.lua"), url],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Wrk(rps, requests)


def sequential_p50_ms(url: str, key: str, body: str, count: int = 2000) -> float:
    times: list[float] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            start = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            times.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return statistics.median(times)


def cpu_s(pid: int) -> float:
    """User + system CPU the process has used so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _settled_cpu(pid: int) -> float:
    # Work that follows the last answer (the write-behind writer's round) belongs to the run.
    time.sleep(0.3)
    return cpu_s(pid)


def ttfb_p50_ms(port: int, key: str, body: str, count: int) -> float:
    """Time to the first SSE ``data:`` byte of a streamed answer, over ``count`` requests one
    after another on one keep-alive connection (a raw socket: no client library in the figure)."""
    payload = body.encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    times: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(request)
            received, first = b"", None
            while not received.endswith(b"0\r\n\r\n"):  # the end of a chunked body
                piece = sock.recv(65536)
                if not piece:
                    raise SystemExit("the server closed the connection mid-stream")
                received += piece
                if first is None and b"data:" in received:
                    first = time.perf_counter()
            if not received.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"stream refused: {received[:200]!r}")
            times.append(((first or time.perf_counter()) - start) * 1000)
    return statistics.median(times)


class Side(NamedTuple):
    """One server's figures for one kind of request (chat or stream)."""

    rps: float
    cpu_ms_c32: float
    cpu_ms_c1: float
    p50_ms: float
    ttfb_ms: float | None
    transactions_c1: float = 0.0  # database transactions per request at c=1 (Postgres only)


def _no_count() -> int:
    return 0


def measure(
    pid: int,
    port: int,
    key: str,
    body: str,
    args: argparse.Namespace,
    *,
    stream: bool,
    commits: Callable[[], int] = _no_count,
) -> Side:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    before = cpu_s(pid)
    loaded = wrk_run(url, key, body, args.duration)
    cpu_c32 = (_settled_cpu(pid) - before) * 1000 / max(loaded.requests, 1)
    before, committed = cpu_s(pid), commits()
    p50 = sequential_p50_ms(url, key, body, args.sequential)
    cpu_c1 = (_settled_cpu(pid) - before) * 1000 / args.sequential
    transactions = (commits() - committed) / args.sequential
    ttfb = ttfb_p50_ms(port, key, body, args.ttfb) if stream else None
    return Side(loaded.rps, cpu_c32, cpu_c1, p50, ttfb, transactions)


def commit_counter(database: str) -> Callable[[], int]:
    """Transactions committed in the benchmark's Postgres database so far (pg_stat_database),
    after the statistics of the last ones were flushed: a count noise does not move."""

    def committed() -> int:
        time.sleep(11)  # an idle backend flushes its statistics within 10 s (PGSTAT_IDLE_INTERVAL)
        out = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-Atc",
                f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return int(out[-1])

    return committed


def side_by_side(floor: Side, gateway: Side, what: str) -> list[str]:
    rows = [
        f"| {what} RPS at c=32 | {floor.rps:,.0f} | {gateway.rps:,.0f} | {gateway.rps / floor.rps:.2f} of the floor |",
        f"| {what} CPU ms/request at c=32 | {floor.cpu_ms_c32:.2f} | {gateway.cpu_ms_c32:.2f} | "
        f"{gateway.cpu_ms_c32 - floor.cpu_ms_c32:+.2f} |",
        f"| {what} CPU ms/request at c=1 | {floor.cpu_ms_c1:.2f} | {gateway.cpu_ms_c1:.2f} | "
        f"{gateway.cpu_ms_c1 - floor.cpu_ms_c1:+.2f} |",
        f"| {what} sequential p50 (ms) | {floor.p50_ms:.2f} | {gateway.p50_ms:.2f} | "
        f"{gateway.p50_ms - floor.p50_ms:+.2f} |",
    ]
    if gateway.transactions_c1:
        rows.append(f"| {what} database transactions/request at c=1 | 0 | {gateway.transactions_c1:.3f} | |")
    if floor.ttfb_ms is not None and gateway.ttfb_ms is not None:
        rows.append(
            f"| {what} TTFB p50 (ms) | {floor.ttfb_ms:.2f} | {gateway.ttfb_ms:.2f} | "
            f"{gateway.ttfb_ms - floor.ttfb_ms:+.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--sequential", type=int, default=2000, help="requests one after another, for p50 and c=1 CPU")
    parser.add_argument("--ttfb", type=int, default=1000, help="streamed requests one after another, for TTFB")
    parser.add_argument(
        "--count-transactions",
        action="store_true",
        help="Postgres: also count committed database transactions per request at c=1, every commit of the "
        "database included (the pool's connection checks may count too); adds ~45 s of waiting",
    )
    parser.add_argument(
        "--redis-db", type=int, default=int(os.environ.get("TOLLWAY_BENCH_REDIS_DB", "0")), help="Redis database"
    )
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request of the clients below

    work = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    commits = _no_count
    upstream_port, gateway_port = free_port(), free_port()
    if args.backend == "postgres":
        import asyncio

        import asyncpg

        name = f"tollway_bench_{os.getpid()}"

        async def create() -> None:
            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()

        asyncio.run(create())
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        if args.count_transactions:
            commits = commit_counter(name)
        redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    else:
        database_url, redis_url = f"sqlite+aiosqlite:///{work}/bench.db", ""
    config = work / "tollway.toml"
    config.write_text(
        f"""
database_url = "{database_url}"
redis_url = "{redis_url}"
redis_prefix = "twbench{os.getpid()}:"
port = {gateway_port}
bootstrap = false
[providers.bench]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{upstream_port}/v1"
[models."bench/gpt-4o-mini"]
provider = "bench"
upstream_model = "gpt-4o-mini"
input_per_mtok = "0.15"
output_per_mtok = "0.60"
max_output_tokens = 16384
"""
    )
    tollway(config, "migrate")
    account = json.loads(tollway(config, "accounts", "create", "bench", "--credits", "100000000"))
    key = json.loads(tollway(config, "keys", "create", "--account", str(account["id"]), "--name", "bench"))["key"]

    floor_port = free_port()
    upstream_process = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(HERE / "canned_upstream.py"), str(upstream_port)]
    )
    floor_process = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, str(HERE / "floor_app.py"), str(floor_port), str(upstream_port)]
    )
    gateway_process = subprocess.Popen(
        ["taskset", "-c", "0", str(VENV_BIN / "tollway"), "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
    )
    processes = [upstream_process, floor_process, gateway_process]
    # The sequential clients run here: keep them off the measured core, beside wrk and the upstream.
    os.sched_setaffinity(0, {1})
    try:
        upstream = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        gateway = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        wait_up(f"http://127.0.0.1:{upstream_port}/")
        wait_up(f"http://127.0.0.1:{gateway_port}/healthz")
        floor = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
        wait_up(f"http://127.0.0.1:{floor_port}/")
        sequential_p50_ms(gateway, key, BODY, count=200)  # warm up caches and pools
        sequential_p50_ms(gateway, key, STREAM_BODY, count=200)
        sequential_p50_ms(floor, key, STREAM_BODY, count=200)
        direct = (wrk(upstream, key, BODY, args.duration), sequential_p50_ms(upstream, key, BODY, args.sequential))
        floor_chat = measure(floor_process.pid, floor_port, key, BODY, args, stream=False)
        gateway_chat = measure(gateway_process.pid, gateway_port, key, BODY, args, stream=False, commits=commits)
        floor_stream = measure(floor_process.pid, floor_port, key, STREAM_BODY, args, stream=True)
        gateway_stream = measure(
            gateway_process.pid, gateway_port, key, STREAM_BODY, args, stream=True, commits=commits
        )
        rss = (rss_mib(floor_process.pid), rss_mib(gateway_process.pid))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    rows = [
        ("upstream directly", *direct),
        ("floor: bare Litestar pass-through", floor_chat.rps, floor_chat.p50_ms),
        ("gateway, chat", gateway_chat.rps, gateway_chat.p50_ms),
        ("floor: bare Litestar stream pass-through", floor_stream.rps, floor_stream.p50_ms),
        ("gateway, chat stream", gateway_stream.rps, gateway_stream.p50_ms),
    ]
    print(f"\nbackend: {args.backend}, wrk c=32 {args.duration}s, gateway pinned to one core\n")
    print("| what | RPS at c=32 | sequential p50 (ms) |")
    print("| --- | --- | --- |")
    for name, rps, p50 in rows:
        print(f"| {name} | {rps:,.0f} | {p50:.2f} |")
    print("\n| | floor | gateway | ratio / added |")
    print("| --- | --- | --- | --- |")
    table = side_by_side(floor_chat, gateway_chat, "chat") + side_by_side(floor_stream, gateway_stream, "stream")
    print("\n".join(table))
    print(f"| RSS after the run (MiB) | {rss[0]:.0f} | {rss[1]:.0f} | {rss[1] - rss[0]:+.0f} |")


if __name__ == "__main__":
    main()

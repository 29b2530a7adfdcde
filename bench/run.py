"""Hot-path benchmark: the gateway in front of a canned upstream, measured with wrk.

Run by hand (not a test): ``python bench/run.py [--backend sqlite|postgres] [--duration 15]``.
Like docs/performance.md: the gateway is pinned to core 0, the canned upstream and wrk share core 1;
c=32 for throughput, then 2,000 sequential requests on one keep-alive connection for latency.
Prints a markdown table to paste into bench/RESULTS.md. Compare only figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
BODY = json.dumps({"model": "bench/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]})
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
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


def wrk(url: str, key: str, body: str, duration: int) -> float:
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
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--duration", type=int, default=15)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
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
        database_url, redis_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", "redis://127.0.0.1:6379/0"
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
    processes = [
        subprocess.Popen(["taskset", "-c", "1", sys.executable, str(HERE / "canned_upstream.py"), str(upstream_port)]),
        subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, str(HERE / "floor_app.py"), str(floor_port), str(upstream_port)]
        ),
        subprocess.Popen(
            ["taskset", "-c", "0", str(VENV_BIN / "tollway"), "--config", str(config), "serve"],
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        upstream = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        gateway = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        wait_up(f"http://127.0.0.1:{upstream_port}/")
        wait_up(f"http://127.0.0.1:{gateway_port}/healthz")
        floor = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
        wait_up(f"http://127.0.0.1:{floor_port}/")
        sequential_p50_ms(gateway, key, BODY, count=200)  # warm up caches and pools
        rows = [
            ("upstream directly", wrk(upstream, key, BODY, args.duration), sequential_p50_ms(upstream, key, BODY)),
            (
                "floor: bare Litestar pass-through",
                wrk(floor, key, BODY, args.duration),
                sequential_p50_ms(floor, key, BODY),
            ),
            ("gateway, chat", wrk(gateway, key, BODY, args.duration), sequential_p50_ms(gateway, key, BODY)),
            (
                "gateway, chat stream",
                wrk(gateway, key, STREAM_BODY, args.duration),
                sequential_p50_ms(gateway, key, STREAM_BODY),
            ),
        ]
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    print(f"\nbackend: {args.backend}, wrk c=32 {args.duration}s, gateway pinned to one core\n")
    print("| what | RPS at c=32 | sequential p50 (ms) |")
    print("| --- | --- | --- |")
    for name, rps, p50 in rows:
        print(f"| {name} | {rps:,.0f} | {p50:.2f} |")


if __name__ == "__main__":
    main()

"""CPU time per upstream call of ``UpstreamClient`` over each transport, the client alone.

    .venv/bin/python bench/transport_cpu.py [--requests 4000] [--concurrency 8]

The canned upstream runs in its own process; this process sends the bench's chat body through
``build_client`` (as the gateway does) on uvloop, first over ``LeanTransport`` then over
``AiohttpTransport``, and reports its own CPU time (``time.process_time``) per request after a
warm-up. CPU time of one process moves less than wall clock on a shared machine, but compare
the two figures of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import httpx
import uvloop
from httpx_aiohttp import AiohttpTransport
from run import BODY, HERE, free_port, wait_up

from providers.http import build_client


async def cpu_per_request(url: str, lean: bool, requests: int, concurrency: int) -> float:
    transport = None if lean else AiohttpTransport(limits=httpx.Limits(max_connections=concurrency), trust_env=False)
    client = build_client(
        url + "/v1",
        headers={"authorization": "Bearer sk-bench"},
        connect_timeout_s=5,
        read_timeout_s=30,
        max_connections=concurrency,
        transport=transport,
    )
    body = BODY.encode()

    async def worker(count: int) -> None:
        for _ in range(count):
            response = await client.post(
                "/chat/completions", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 200, response.status_code

    await asyncio.gather(*(worker(50) for _ in range(concurrency)))  # warm-up: connections open
    started = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    spent = time.process_time() - started
    await client.aclose()
    return spent / (requests // concurrency * concurrency)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(HERE / "canned_upstream.py"), str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/")
        for name, lean in (("LeanTransport", True), ("AiohttpTransport", False)):
            seconds = uvloop.run(cpu_per_request(url, lean, args.requests, args.concurrency))
            print(f"{name:17} {seconds * 1e6:7.1f} µs CPU a request")
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()

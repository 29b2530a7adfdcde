"""Burst: far more simultaneous requests than one gateway process admits, on a real ``tollway
serve`` (Postgres + Redis, canned upstream, loopback only). Required: every answer is 200, 429
or 503 (never a 500, never a hang past the client timeout), a normal request right after the
burst succeeds quickly, and ``tollway billing reconcile`` is clean.

Run by hand: ``python bench/burst.py [--connections 1500] [--waves 3] [--max-in-flight 256]``.
Each wave opens ``--connections`` new connections at once (one request each, chat and streams);
``--max-in-flight`` sets the gateway's cap (gateway/overload.py) so the burst exceeds it and the
database / Redis / upstream pools (30 / 50 / 200 connections) at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import httpx
from run import BODY
from stack import Load, Stack, drive

ALLOWED = {200, 429, 503}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=60.0, help="a request slower than this is a hang")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()

    with Stack(redis_url=args.redis_url, extra_config=f"max_in_flight_requests = {args.max_in_flight}") as stack:
        load = Load()
        started = time.monotonic()
        for _ in range(args.waves):
            asyncio.run(
                drive(
                    stack.url,
                    stack.key,
                    connections=args.connections,
                    requests_per_connection=1,
                    timeout_s=args.timeout,
                    fresh_connections=True,
                    load=load,
                )
            )
        burst_s = time.monotonic() - started
        start = time.perf_counter()
        after = httpx.post(
            f"{stack.url}/v1/chat/completions",
            content=BODY,
            headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"},
            timeout=10,
        )
        recovery_ms = (time.perf_counter() - start) * 1000
        reconcile = stack.reconcile()
    bad = {status: n for status, n in load.statuses.items() if status not in ALLOWED}
    print(
        f"\nburst: {args.waves} waves of {args.connections} new connections at once, cap "
        f"{args.max_in_flight} in flight, {burst_s:.1f} s in all\n"
    )
    print("| what | value |")
    print("| --- | --- |")
    print(f"| answers | {dict(sorted(load.statuses.items()))} |")
    print(f"| refusals by code | {dict(load.codes)} |")
    print(f"| failures (resets, timeouts) | {dict(load.failures) or 0} |")
    print(f"| slowest answer (ms) | {max(load.latencies_ms):.0f} |")
    print(f"| a normal request afterwards | {after.status_code} in {recovery_ms:.1f} ms |")
    print(f"| reconcile | {'clean' if reconcile.get('ok') else 'NOT CLEAN: ' + str(reconcile)} |")
    if bad or load.failures or after.status_code != 200 or not reconcile.get("ok"):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""One worker against two (``tollway serve --workers 2``) on this machine's cores, Postgres +
Redis, canned upstream, loopback only: the throughput ratio (the issue's target is >= 1.8x).

Run by hand: ``python bench/workers.py [--duration 15] [--repeats 3]``. wrk (32 connections)
and the canned upstream run unpinned next to the gateway, so on a 2-core machine they take
CPU from the second worker: the ratio is a lower bound there, and on a shared machine only
indicative. Prints each run and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess

from run import BODY, HERE
from stack import Stack


def wrk_rps(url: str, key: str, duration: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "-s", str(HERE / "post.lua"), url],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_KEY": key, "BENCH_BODY": BODY},
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()
    results: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            with Stack(workers=workers, redis_url=args.redis_url) as stack:
                url = f"{stack.url}/v1/chat/completions"
                wrk_rps(url, stack.key, 3)  # warm caches and pools in every worker
                results[workers].append(wrk_rps(url, stack.key, args.duration))
                reconcile = stack.reconcile()
                if not reconcile.get("ok"):
                    raise SystemExit(f"reconcile not clean after {workers} worker(s): {reconcile}")
    ratios = [two / one for one, two in zip(results[1], results[2], strict=True)]
    print(f"\nchat, wrk c=32 {args.duration}s, {os.cpu_count()} cores, {args.repeats} repeats\n")
    print("| run | 1 worker RPS | 2 workers RPS | ratio |")
    print("| --- | --- | --- | --- |")
    for index, (one, two, ratio) in enumerate(zip(results[1], results[2], ratios, strict=True), 1):
        print(f"| {index} | {one:,.0f} | {two:,.0f} | {ratio:.2f} |")
    print(f"\nmedian ratio: {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()

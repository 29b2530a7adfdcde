"""Soak: steady load on a real ``tollway serve`` (Postgres + Redis, canned upstream, loopback
only) for a bounded time, with zero errors and flat memory required, then reconcile.

Run by hand: ``python bench/soak.py [--duration 600] [--rate 200] [--connections 16]``.
RSS of the serving process is sampled every ``--sample`` seconds (first sample after a warm-up
of 500 requests, chat and streams); "flat" means no sample is more than 10 % above the first.
Exits 1 on any error response, a memory growth past 10 % or a reconcile that is not clean.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from stack import Load, Stack, drive

FLAT = 0.10


async def soak(stack: Stack, args: argparse.Namespace) -> tuple[Load, list[tuple[float, float]]]:
    await drive(stack.url, stack.key, connections=4, requests_per_connection=125)  # warm-up
    samples = [(0.0, sum(stack.rss()))]
    load = Load()
    start = time.monotonic()
    task = asyncio.create_task(
        drive(
            stack.url,
            stack.key,
            connections=args.connections,
            duration_s=args.duration,
            rate_per_s=args.rate,
            load=load,
        )
    )
    while not task.done():
        await asyncio.wait({task}, timeout=args.sample)
        samples.append((time.monotonic() - start, sum(stack.rss())))
    await task
    return load, samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of steady load")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second in all")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()

    with Stack(workers=args.workers, redis_url=args.redis_url) as stack:
        startup_rss = sum(stack.rss())
        load, samples = asyncio.run(soak(stack, args))
        reconcile = stack.reconcile()
    rss = [value for _at, value in samples]
    first, last, low, high = rss[0], rss[-1], min(rss), max(rss)
    flat = high <= first * (1 + FLAT)
    elapsed = samples[-1][0]
    print(
        f"\nsoak: {elapsed:.0f} s, {args.connections} connections at {args.rate:.0f} req/s target, "
        f"{args.workers} worker(s), Postgres + Redis, chat and streams (1 in 4)\n"
    )
    print("| what | value |")
    print("| --- | --- |")
    print(f"| requests | {load.total:,} ({load.total / elapsed:,.0f} per s) |")
    print(f"| errors | {load.errors} {dict(load.statuses)} {dict(load.failures)} |")
    print(
        f"| latency p50 / p99 (ms) | {statistics.median(load.latencies_ms):.2f} / "
        f"{statistics.quantiles(load.latencies_ms, n=100)[98]:.2f} |"
    )
    print(f"| RSS after startup (MiB) | {startup_rss:.1f} |")
    print(f"| RSS first / last / min / max (MiB) | {first:.1f} / {last:.1f} / {low:.1f} / {high:.1f} |")
    print(f"| RSS flat within {FLAT:.0%} of the first sample | {'yes' if flat else 'NO'} ({high / first - 1:+.1%}) |")
    print(f"| reconcile | {'clean' if reconcile.get('ok') else 'NOT CLEAN: ' + str(reconcile)} |")
    print("\nRSS samples (s, MiB): " + ", ".join(f"{at:.0f}:{value:.1f}" for at, value in samples))
    if load.errors or not flat or not reconcile.get("ok"):
        sys.exit(1)


if __name__ == "__main__":
    main()

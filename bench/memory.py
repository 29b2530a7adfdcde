"""RSS of a real ``tollway serve`` (Postgres + Redis, canned upstream): after startup, after a
chat and stream run, and after requests that need an exact token count (a prompt whose byte
bound does not fit the account's credits, so the gateway tokenises it).

Run by hand: ``python bench/memory.py [--requests 4000]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx
from run import tollway
from stack import Stack, drive


def counted_requests(stack: Stack, count: int) -> int:
    # ~200 KB of prompt is ~33k tokens: its byte bound (~200k tokens, 30 credits at 0.15 USD per
    # Mtok and 1,000 credits per USD) does not fit 10 credits, its exact count (~5 credits) does;
    # the canned upstream bills 12 prompt tokens, so some are served and some refused (402) once
    # reservations in flight hold the balance: each of them counted.
    account = json.loads(tollway(stack.config, "accounts", "create", "counted", "--credits", "10"))
    key = json.loads(tollway(stack.config, "keys", "create", "--account", str(account["id"]), "--name", "c"))["key"]
    body = {
        "model": "bench/gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello " * 33_000}],
    }
    served = 0
    with httpx.Client(timeout=60) as client:
        for _ in range(count):
            response = client.post(
                f"{stack.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            served += response.status_code == 200
    return served


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()
    with Stack(redis_url=args.redis_url) as stack:
        rows = [("after startup", stack.rss()[0], "")]
        load = asyncio.run(drive(stack.url, stack.key, connections=16, requests_per_connection=args.requests // 16))
        rows.append(("after a chat + stream run", stack.rss()[0], f"{load.total} requests, {load.errors} errors"))
        served = counted_requests(stack, 5)
        rows.append(("after requests that need a count", stack.rss()[0], f"{served}/5 served"))
        reconcile = stack.reconcile()
    print("\n| tollway serve, 1 worker | RSS (MiB) | |")
    print("| --- | --- | --- |")
    for name, rss, note in rows:
        print(f"| {name} | {rss:.1f} | {note} |")
    print(f"\nreconcile: {'clean' if reconcile.get('ok') else reconcile}")


if __name__ == "__main__":
    main()

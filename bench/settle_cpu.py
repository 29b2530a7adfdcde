"""What the money path costs this process per request at low load: reserve, settle, and the
write-behind writer's share, on Postgres + Redis, with requests spaced as at concurrency 1.

Run by hand (not a test): ``python bench/settle_cpu.py [--requests 400] [--gap-ms 2] [--redis-db 0]``.
Prints the process's CPU per request (time.process_time: this process only, so a busy machine
moves it far less than wall-clock figures) and how many settlements each writer round carried.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg

from billing.accounts import create_account
from billing.counters import RedisCounterStore
from billing.ledger import Settlement
from billing.metering import Meter, settlement_writer
from gateway.db import create_engine, create_sessionmaker, migrate
from providers.base import Usage


async def run(requests: int, gap_s: float, redis_db: int, window_s: float) -> None:
    name = f"tollway_settle_{os.getpid()}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    prefix = f"twsettle{os.getpid()}:"
    try:
        await migrate(url)
        engine = create_engine(url)
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            account = await create_account(session, "bench", credits_micro=10**12)
        store = RedisCounterStore.from_url(f"redis://127.0.0.1:6379/{redis_db}", prefix=prefix)
        meter = Meter(store, engine, sessionmaker, prefix=prefix, refresh_s=5.0)
        rounds: list[int] = []
        write_pending = meter.writer.write_pending

        async def counted(**kwargs: bool | list[int] | None) -> int:
            written = await write_pending(**kwargs)  # type: ignore[arg-type]
            if written:
                rounds.append(written)
            return written

        meter.writer.write_pending = counted  # type: ignore[method-assign]

        async def serve(request_id: str) -> None:
            reservation = await meter.reserve(account.id, 10_000, request_id)
            await meter.settle(
                reservation,
                Settlement(
                    request_id=request_id,
                    account_id=account.id,
                    key_id=None,
                    model="bench/gpt",
                    provider="bench",
                    upstream_model="gpt",
                    usage=Usage(input_tokens=12, output_tokens=9),
                    cost_micro=7,
                    latency_ms=1,
                    status_code=200,
                ),
            )

        async with settlement_writer(meter, batch_window_s=window_s):
            for i in range(50):  # warm pools, scripts and the mirror
                await serve(f"warm_{i}")
            await asyncio.sleep(0.5)
            rounds.clear()
            cpu, wall = time.process_time(), time.monotonic()
            for i in range(requests):
                await serve(f"req_{i}")
                await asyncio.sleep(gap_s)
            await asyncio.sleep(0.5)  # the last round
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        await store.close()
        await engine.dispose()
        print(
            f"{requests} requests over {wall:.2f} s: {cpu * 1000 / requests:.3f} ms CPU per request, "
            f"{len(rounds)} writer rounds, {requests / max(len(rounds), 1):.1f} settlements per round"
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause between requests (the rest of a request)")
    parser.add_argument("--redis-db", type=int, default=0)
    parser.add_argument("--window-ms", type=float, default=20.0, help="the writer's batch window")
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.gap_ms / 1000, args.redis_db, args.window_ms / 1000))


if __name__ == "__main__":
    main()

"""Instructions per settlement-writer transaction (``engine.begin()`` + ``write_settlements``) on
Postgres, counted by callgrind: the writer's database round alone, which the whole-gateway
figure (bench/callgrind_request.py) dilutes below its run-to-run spread.

    .venv/bin/python bench/writer_round_cg.py                 # batches of 8 and 64, 100 rounds each
    .venv/bin/python bench/writer_round_cg.py --sizes 1,8,64 --rounds 200

Re-runs itself under ``valgrind --tool=callgrind`` with instrumentation off until the database is
migrated and the statements are warm; then, per batch size and engine (the request path's, which
pings at checkout, and the writer's own, gateway/db.py), counters zeroed, ``--rounds``
transactions, a dump. Postgres runs outside valgrind and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.accounts import create_account
from billing.ledger import Settlement, write_settlements
from gateway.db import create_engine, create_sessionmaker, create_writer_engine, migrate
from providers.base import Usage

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)
_OUT = "TOLLWAY_WRITER_CG_OUT"


class Counter:
    """This process's callgrind counters, through ``callgrind_control``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.dumps = 0

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)

    def count(self) -> int:
        """Instructions since the last dump."""
        self.control("--dump")
        self.dumps += 1
        dump = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if dump.exists() and (match := _TOTALS.search(dump.read_bytes())):
                return int(match.group(1))
            time.sleep(0.1)
        raise SystemExit(f"no totals in {dump}")


async def measure(counter: Counter, sizes: list[int], rounds: int) -> None:
    name = f"tollway_writer_cg_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        await migrate(url)
        engine = create_engine(url)
        writer_engine = create_writer_engine(url)
        assert writer_engine is not None
        async with create_sessionmaker(engine)() as session:
            account = (await create_account(session, "bench", credits_micro=10**15)).id
        served = Settlement(
            request_id="",
            account_id=account,
            key_id=3,
            model="bench/gpt",
            provider="bench",
            upstream_model="gpt",
            usage=Usage(input_tokens=21, output_tokens=5),
            cost_micro=1_234,
            latency_ms=1,
            status_code=200,
        )
        made = 0

        async def write(engine: AsyncEngine, size: int, count: int) -> None:
            nonlocal made
            for _ in range(count):
                made += 1
                batch = [msgspec.structs.replace(served, request_id=f"req_{made}_{n}") for n in range(size)]
                async with engine.begin() as connection:
                    await write_settlements(connection, batch)

        engines: list[tuple[str, AsyncEngine]] = [("request engine (ping)", engine), ("writer engine", writer_engine)]
        counter.control("--instr=on")
        for size in sizes:
            for label, chosen in engines:
                await write(chosen, size, 10)  # statements prepared, pools filled
                counter.count()
                await write(chosen, size, rounds)
                total = counter.count()
                print(
                    f"batch {size:4d}  {label:22s} {total / rounds / 1e6:6.2f} M instructions a round, "
                    f"{total / rounds / size / 1e3:7.1f} k a settlement",
                    flush=True,
                )
        await engine.dispose()
        await writer_engine.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="8,64")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    out = os.environ.get(_OUT)
    if out is None:
        out = str(Path(tempfile.mkdtemp(prefix="tollway-writer-cg-")) / "cg.writer")
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            f"--log-file={out}.log",
            sys.executable,
            *sys.argv,
        ]
        raise SystemExit(subprocess.run(command, env={**os.environ, _OUT: out}, check=False).returncode)
    sizes = [int(size) for size in args.sizes.split(",")]
    asyncio.run(measure(Counter(out), sizes, args.rounds))


if __name__ == "__main__":
    main()

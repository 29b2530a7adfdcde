"""Proxy-function benchmark: ``/fn`` beside chat and the bare pass-through floor, in one run.

Run by hand (not a test): ``python bench/fn.py [--backend sqlite|postgres] [--duration 15]``.
Same harness as ``bench/run.py`` (gateway pinned to core 0; the canned upstream and wrk on core
1; wrk ``-t1 -c32``; then sequential requests on one keep-alive connection): the function
forwards the chat body to the canned upstream's ``/v1/chat/completions`` with a static header
and a secret injected as ``Authorization: Bearer …``, so its work is what a real proxy call
costs. Rows: the upstream alone, the floor, ``/fn`` (no rate limit), ``/fn`` with a per-minute
limit (one counter-store call per request), and chat through the gateway. Prints a markdown
table for bench/RESULTS.md; compare only figures of one run (issue 12's target: ``/fn`` at
≥ 80 % of the floor's RPS, ≤ 1 ms added sequential p50).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for functions/*

from bench.run import BODY, HERE, VENV_BIN, free_port, tollway, wait_up, wrk

KEY_TEXT = base64.b64encode(b"tollway-bench-secret-key-ring-32").decode()


def wrk_fn(url: str, token: str, body: str, duration: int) -> float:
    env = {**os.environ, "BENCH_TOKEN": token, "BENCH_BODY": body}
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration}s", "-s", str(HERE / "fn.lua"), url],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def sequential_p50_ms(url: str, headers: dict[str, str], body: str, count: int) -> float:
    times: list[float] = []
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            start = time.perf_counter()
            response = client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
            times.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return statistics.median(times)


async def add_function(database_url: str, account_id: int, target: str, rate_limit: int | None) -> tuple[str, str]:
    """A project, a secret and a function, straight into the database (as the tests do)."""
    from functions.crypto import KeyRing, token_context, variable_context
    from functions.models import Environment, Project, ProxyFunction, Variable
    from gateway.db import create_engine, create_sessionmaker

    ring = KeyRing.from_texts({"bench": KEY_TEXT})
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            project = Project(account_id=account_id, name=f"bench {secrets.token_hex(3)}")
            session.add(project)
            await session.flush()
            environment = Environment(account_id=account_id, project_id=project.id, name="Production")
            session.add(environment)
            await session.flush()
            variable = Variable(
                account_id=account_id,
                environment_id=environment.id,
                key="UPSTREAM_KEY",
                value_ciphertext=ring.seal(
                    "sk-bench-" + "x" * 32, context=variable_context(account_id, environment.id, "UPSTREAM_KEY")
                ),
                is_secret=True,
            )
            session.add(variable)
            await session.flush()
            function_id, token = str(uuid.uuid4()), secrets.token_hex(32)
            session.add(
                ProxyFunction(
                    id=function_id,
                    account_id=account_id,
                    project_id=project.id,
                    environment_id=environment.id,
                    name="bench",
                    slug=f"bench-{function_id[:8]}",
                    target_url=target,
                    method="POST",
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    secret_mappings=[
                        {
                            "variable_id": variable.id,
                            "inject_as": "header",
                            "key": "Authorization",
                            "template": "Bearer ${value}",
                        }
                    ],
                    allowed_origins=["*"],
                    rate_limit_per_minute=rate_limit,
                    token_ciphertext=ring.seal(token, context=token_context(account_id, function_id)),
                    token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                )
            )
            await session.commit()
            return function_id, token
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--sequential", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tollway-bench-fn-"))
    upstream_port, gateway_port, floor_port = free_port(), free_port(), free_port()
    database_name = ""
    if args.backend == "postgres":
        import asyncpg

        database_name = f"tollway_bench_fn_{os.getpid()}"

        async def create() -> None:
            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
            await conn.execute(f'CREATE DATABASE "{database_name}"')
            await conn.close()

        asyncio.run(create())
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database_name}"
        redis_url = os.environ.get("TOLLWAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    else:
        database_url, redis_url = f"sqlite+aiosqlite:///{work}/bench.db", ""
    config = work / "tollway.toml"
    config.write_text(
        f"""
database_url = "{database_url}"
redis_url = "{redis_url}"
redis_prefix = "twbenchfn{os.getpid()}:"
port = {gateway_port}
bootstrap = false
function_allow_hosts = ["127.0.0.1/32"]
[function_secret_keys]
bench = "{KEY_TEXT}"
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
    target = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    plain_id, plain_token = asyncio.run(add_function(database_url, account["id"], target, None))
    limited_id, limited_token = asyncio.run(add_function(database_url, account["id"], target, 10_000_000))

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
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_up(f"http://127.0.0.1:{upstream_port}/")
        wait_up(f"http://127.0.0.1:{floor_port}/")
        wait_up(f"{base}/healthz")
        plain, limited = f"{base}/fn/{plain_id}", f"{base}/fn/{limited_id}"
        warm = min(200, args.sequential)
        sequential_p50_ms(plain, {"x-proxy-token": plain_token}, BODY, warm)  # warm caches and pools
        sequential_p50_ms(limited, {"x-proxy-token": limited_token}, BODY, warm)
        floor = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
        chat = f"{base}/v1/chat/completions"
        rows = [
            (
                "upstream directly",
                wrk(target, key, BODY, args.duration),
                sequential_p50_ms(target, {}, BODY, args.sequential),
            ),
            (
                "floor: bare Litestar pass-through",
                wrk(floor, key, BODY, args.duration),
                sequential_p50_ms(floor, {}, BODY, args.sequential),
            ),
            (
                "gateway, /fn",
                wrk_fn(plain, plain_token, BODY, args.duration),
                sequential_p50_ms(plain, {"x-proxy-token": plain_token}, BODY, args.sequential),
            ),
            (
                "gateway, /fn with a rate limit",
                wrk_fn(limited, limited_token, BODY, args.duration),
                sequential_p50_ms(limited, {"x-proxy-token": limited_token}, BODY, args.sequential),
            ),
            (
                "gateway, chat",
                wrk(chat, key, BODY, args.duration),
                sequential_p50_ms(chat, {"Authorization": f"Bearer {key}"}, BODY, args.sequential),
            ),
        ]
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        if database_name:
            import asyncpg

            async def drop() -> None:
                conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
                await conn.execute(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')
                await conn.close()

            asyncio.run(drop())
            import redis

            client = redis.Redis.from_url(redis_url)
            stale = list(client.scan_iter(match=f"twbenchfn{os.getpid()}:*"))
            if stale:
                client.delete(*stale)
            client.close()
    floor_rps, floor_p50 = rows[1][1], rows[1][2]
    print(f"\nbackend: {args.backend}, wrk c=32 {args.duration}s, gateway pinned to one core\n")
    print("| what | RPS at c=32 | of the floor | sequential p50 (ms) | added p50 (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for name, rps, p50 in rows:
        print(f"| {name} | {rps:,.0f} | {rps / floor_rps:.2f} | {p50:.2f} | {p50 - floor_p50:+.2f} |")


if __name__ == "__main__":
    main()

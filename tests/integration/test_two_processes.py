"""Two gateway processes on one Postgres and one Redis: revocations reach both within a second."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_fixtures import ADMIN_TOKEN
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer, free_port

REPO = Path(__file__).resolve().parents[2]
CHAT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}

# Never beside test_redis_cluster.py on another worker (tests/fakes/exclusive.py).
pytestmark = pytest.mark.usefixtures("alone_among_workers")


def start_gateways(
    config_text: str, tmp_path: Path, count: int = 2, start_s: float = 120.0
) -> tuple[list[str], list[subprocess.Popen[bytes]]]:
    """Start ``count`` ``tollway serve`` processes. ``start_s`` bounds their start, not a timing
    claim: a gateway took 24 to 36 s to answer on a two-core machine loaded by a whole team."""
    config = tmp_path / "tollway.toml"
    config.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env["PYTHONPATH"] = str(REPO)
    ports = [free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    deadline = time.monotonic() + start_s
    for url in urls:
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                for process in processes:
                    process.kill()
                pytest.fail("gateways did not start")
            time.sleep(0.1)
    return urls, processes


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            # uvicorn gives open connections up to graceful_shutdown_s (30 s) to finish.
            process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def base_config(postgres_url: str, redis_url: str, redis_prefix: str) -> str:
    return (
        f'database_url = "{postgres_url}"\nredis_url = "{redis_url}"\nredis_prefix = "{redis_prefix}"\n'
        f'bootstrap = false\nadmin_token = "{ADMIN_TOKEN}"\n'
    )


@pytest.fixture
def two_gateways(tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str) -> Iterator[list[str]]:
    urls, processes = start_gateways(base_config(postgres_url, redis_url, redis_prefix), tmp_path)
    try:
        yield urls
    finally:
        stop(processes)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_refused(url: str, key: str, seconds: float = 15.0) -> None:
    """Poll until ``key`` is refused on ``url``, failing after ``seconds`` (generous: CI shares
    two cores, and a 50 ms margin once failed there; the bound is the cache TTL, see below)."""
    deadline = time.monotonic() + seconds
    while httpx.post(url + "/v1/chat/completions", json=CHAT, headers=auth(key)).status_code != 401:
        if time.monotonic() > deadline:
            pytest.fail(f"still accepted after {seconds} s")
        time.sleep(0.02)


def reconciles(config: Path, seconds: float = 30.0) -> None:
    """``tollway billing reconcile`` passes, retried until it does within ``seconds``: right
    after traffic a mirror may lag its writer's re-sync by a moment, and one look at a live
    system is a sample, not a verdict. Drift that stays fails."""
    from gateway.cli import main

    deadline = time.monotonic() + seconds
    while main(["--config", str(config), "billing", "reconcile"]) != 0:
        assert time.monotonic() < deadline, "reconcile kept reporting drift"
        time.sleep(0.5)


def test_two_processes_deleted_key_and_its_tokens_die_everywhere(two_gateways: list[str]) -> None:
    first, second = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    account = httpx.post(first + "/api/admin/accounts/", json={"name": "acme", "credits": "50"}, headers=admin).json()
    assert account["balance"] == "50"
    # A key to manage with, and the key we will delete, with a browser token minted from it.
    manager = httpx.post(
        first + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "backend"}, headers=admin
    ).json()["key"]
    victim = httpx.post(first + "/api/keys/", json={"name": "victim"}, headers=auth(manager)).json()
    token = httpx.post(
        first + "/api/keys/ephemeral/", json={"key_id": victim["id"], "ttl": 600}, headers=auth(manager)
    ).json()["data"]["token"]
    for url in two_gateways:  # both processes have resolved (and cached) the key and the token
        for credential in (victim["key"], token):
            response = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=auth(credential))
            assert response.status_code == 200, response.text
    assert httpx.delete(first + f"/api/keys/{victim['id']}/", headers=auth(manager)).status_code == 204
    # The other process learns when its cache entry expires (key_cache_ttl_s, 1 s by default); a
    # process that never learned would accept them until the deadline.
    wait_refused(second, victim["key"])
    wait_refused(second, token)
    wait_refused(first, token)


def test_two_processes_a_price_override_reaches_both_and_bills_at_once(two_gateways: list[str]) -> None:
    first, second = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    account = httpx.post(first + "/api/admin/accounts/", json={"name": "acme", "credits": "50"}, headers=admin).json()
    key = httpx.post(first + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "k"}, headers=admin).json()

    def echo_price(url: str) -> str:
        return str(
            httpx.get(url + "/v1/models/demo/echo", headers=auth(key["key"])).json()["pricing"]["input_per_mtok"]
        )

    assert echo_price(first) == echo_price(second) == "150"
    bad = httpx.put(first + "/api/admin/models/demo/echo", json={"input_per_mtok": "x"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input_per_mtok"
    partial = httpx.put(first + "/api/admin/models/demo/echo", json={"input_per_mtok": "1"}, headers=admin)
    assert partial.status_code == 400  # a text model needs an output price too
    assert httpx.put(first + "/api/admin/models/nope/x", json={}, headers=admin).status_code == 400
    changed = httpx.put(
        first + "/api/admin/models/demo/echo", json={"input_per_mtok": "2", "output_per_mtok": "4"}, headers=admin
    )
    assert changed.status_code == 200 and changed.json()["pricing"]["input_per_mtok"] == "2000"
    assert echo_price(first) == "2000"  # the process that took the change applies it at once
    started = time.monotonic()
    while echo_price(second) != "2000":
        assert time.monotonic() - started < 30, "the other process never saw the new price"
        time.sleep(0.1)
    listing = httpx.get(first + "/api/admin/models/", headers=admin).json()["models"]
    assert {m["id"]: m["price_override"] for m in listing}["demo/echo"] is True
    assert httpx.delete(first + "/api/admin/models/demo/echo", headers=admin).status_code == 204
    assert echo_price(first) == "150"


def test_a_killed_process_does_not_hold_credits_forever(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    """SIGKILL mid-stream: the reservation's record outlives the process; once it expires the
    survivor releases the hold and bills what the stream had checkpointed, exactly once."""
    fake = FakeOpenAI(reply_words=[f"w{i}" for i in range(400)], chunk_delay_s=0.05)
    upstream = ThreadedServer(fake).start()
    config = base_config(postgres_url, redis_url, redis_prefix) + (
        # The TTL leaves the ~2.5 s of streaming below room on a loaded machine: the hold must
        # still be there when the survivor is first asked.
        "reservation_ttl_s = 6\nbalance_refresh_s = 0.2\ndemo_provider = false\n"
        f'[providers.fake]\nkind = "openai"\nbase_url = "{upstream.url}/v1"\napi_key = "{fake.api_key}"\n'
        '[models."fake/gpt"]\nprovider = "fake"\nupstream_model = "gpt-4o-mini"\n'
    )
    urls, processes = start_gateways(config, tmp_path)
    victim, survivor = urls
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        account = httpx.post(victim + "/api/admin/accounts/", json={"name": "acme", "credits": "50"}, headers=admin)
        key = httpx.post(
            victim + f"/api/admin/accounts/{account.json()['id']}/keys/", json={"name": "k"}, headers=admin
        ).json()["key"]
        body = {"model": "fake/gpt", "messages": [{"role": "user", "content": "count"}], "stream": True}
        opened = time.monotonic()
        with httpx.stream(
            "POST", victim + "/v1/chat/completions", json=body, headers=auth(key), timeout=10
        ) as response:
            assert response.status_code == 200
            held = response.headers["x-tollway-credits-reserved"]
            lines = response.iter_lines()
            for _ in range(100):  # ~2.5 s of streaming (two lines an event): past the first checkpoints
                next(lines)
            processes[0].kill()  # SIGKILL: no finally, no settlement
            processes[0].wait(timeout=10)
        credits = httpx.get(survivor + "/api/credits/", headers=auth(key)).json()
        assert Decimal(credits["available"]) == Decimal("50") - Decimal(held)
        started = time.monotonic()
        while not (killed := _killed_request(survivor, key)):
            assert time.monotonic() - started < 30, "the expired reservation was never settled"
            time.sleep(0.2)
        assert time.monotonic() - opened >= 6  # not before the reservation expired (ttl 6 s)
        assert killed["status_code"] == 499 and killed["error_code"] == "interrupted"
        assert killed["output_tokens"] > 10 and Decimal(killed["credits_used"]) > 0  # what it streamed
        credits = httpx.get(survivor + "/api/credits/", headers=auth(key)).json()
        assert Decimal(credits["available"]) == Decimal(credits["balance"]) == 50 - Decimal(killed["credits_used"])
        debits = [e for e in credits["ledger"] if e["kind"] == "debit"]
        assert [e["request_id"] for e in debits] == [killed["request_id"]]
        ok = httpx.post(survivor + "/v1/chat/completions", json={**body, "stream": False}, headers=auth(key))
        assert ok.status_code == 200
    finally:
        stop(processes)
        upstream.stop()


def _killed_request(url: str, key: str) -> dict[str, Any] | None:
    httpx.get(url + "/api/credits/", headers=auth(key))  # touching the account sweeps expired holds
    records = httpx.get(url + "/api/usage/", headers=auth(key)).json()["data"]
    return next((r for r in records if r["status_code"] == 499), None)


def test_concurrent_requests_across_two_processes_never_overspend(
    two_gateways: list[str], tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    """300 concurrent calls over two processes against an account (and a key limit) that covers
    only some: nothing overspends, each served call is debited once, refusals cost nothing."""
    import asyncio

    first, second = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    account = httpx.post(first + "/api/admin/accounts/", json={"name": "acme", "credits": "2"}, headers=admin).json()
    manager = httpx.post(
        first + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "m"}, headers=admin
    ).json()["key"]
    capped = httpx.post(
        first + "/api/keys/", json={"name": "capped", "spending_limit": "0.5"}, headers=auth(manager)
    ).json()["key"]
    # max_tokens 200: a worst case of ~0.12 credits; the real cost of an echo is far smaller.
    body = {"model": "demo/lorem", "messages": [{"role": "user", "content": "go"}], "max_tokens": 200}

    async def fire(count: int, key: str) -> list[httpx.Response]:
        # 300 calls through two processes on a busy two-core CI machine (the suite's other worker
        # runs beside it): the timeout only catches a hang, it measures nothing.
        async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=100)) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(two_gateways[i % 2] + "/v1/chat/completions", json=body, headers=auth(key))
                        for i in range(count)
                    )
                )
            )

    limited = asyncio.run(fire(100, capped))
    everyone = asyncio.run(fire(200, manager))
    statuses = [r.status_code for r in limited + everyone]
    assert set(statuses) <= {200, 402} and statuses.count(200) > 0 and statuses.count(402) > 0
    spent_capped = sum(Decimal(r.json()["_tollway"]["credits_used"]) for r in limited if r.status_code == 200)
    assert spent_capped <= Decimal("0.5")  # the key's limit held under concurrency
    credits = httpx.get(second + "/api/credits/", headers=auth(manager)).json()
    assert Decimal(credits["balance"]) >= 0  # the account never went below zero
    served = [r for r in limited + everyone if r.status_code == 200]
    spent = sum(Decimal(r.json()["_tollway"]["credits_used"]) for r in served)
    assert Decimal(credits["balance"]) == Decimal("2") - spent  # each served call debited exactly once
    debits = [e for e in _all_ledger(second, manager) if e["kind"] == "debit"]
    assert sorted(e["request_id"] for e in debits) == sorted(r.headers["x-request-id"] for r in served)
    config = tmp_path / "reconcile.toml"
    config.write_text(base_config(postgres_url, redis_url, redis_prefix))
    reconciles(config)


def _all_ledger(url: str, key: str) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    before: int | None = None
    while True:
        params = {"limit": 500, **({"before_id": before} if before else {})}
        page = httpx.get(url + "/api/credits/", params=params, headers=auth(key)).json()
        entries += page["ledger"]
        before = page["next_before_id"]
        if before is None:
            return entries


def test_a_process_killed_mid_batch_loses_no_debit(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    """SIGKILL a process while its settlement writer is inside a database transaction: the batch
    dies with the connection, its entries stay claimed by the dead writer in Redis, and the
    survivor takes them over once they are abandoned and writes each exactly once."""
    import asyncio

    import asyncpg

    config = base_config(postgres_url, redis_url, redis_prefix) + (
        "settlement_scan_s = 0.5\nsettlement_claim_idle_s = 2\nbalance_refresh_s = 60\nkey_cache_ttl_s = 60\n"
    )
    urls, processes = start_gateways(config, tmp_path)
    victim, survivor = urls
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def scenario() -> tuple[list[httpx.Response], str]:
        async with httpx.AsyncClient(timeout=30) as client:
            account = (
                await client.post(
                    survivor + "/api/admin/accounts/", json={"name": "acme", "credits": "50"}, headers=admin
                )
            ).json()
            key = (
                await client.post(
                    survivor + f"/api/admin/accounts/{account['id']}/keys/", json={"name": "k"}, headers=admin
                )
            ).json()["key"]
            warm = await client.post(victim + "/v1/chat/completions", json=CHAT, headers=auth(key))
            assert warm.status_code == 200
            await client.get(victim + "/api/credits/", headers=auth(key))  # written: the batch below is new
            database = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                # Hold the account's row (not its key, so usage records may still point at it):
                # the victim's writer inserts its batch's usage records, then waits for this lock
                # to debit the balance, inside its transaction.
                locking = database.transaction()
                await locking.start()
                await database.execute("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE", account["id"])
                served = [
                    await client.post(victim + "/v1/chat/completions", json=CHAT, headers=auth(key)) for _ in range(20)
                ]
                assert [r.status_code for r in served] == [200] * 20  # answering never waits for the database
                for _ in range(100):
                    # Inside the lock's transaction pg_stat_activity is a snapshot taken at its
                    # first read: without clearing it, a writer that arrives later is never seen.
                    await database.execute("SELECT pg_stat_clear_snapshot()")
                    waiting = await database.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND query ILIKE 'UPDATE accounts%'"
                    )
                    if waiting:
                        break
                    await asyncio.sleep(0.05)
                assert waiting, "the victim's writer never reached the debit"
                processes[0].kill()  # SIGKILL mid-batch: its transaction is never committed
                processes[0].wait(timeout=10)
                await locking.rollback()
            finally:
                await database.close()
            return [warm, *served], key

    try:
        served, key = asyncio.run(scenario())
        expected = sorted(r.headers["x-request-id"] for r in served)
        started = time.monotonic()
        while sorted(e["request_id"] for e in _all_ledger(survivor, key) if e["kind"] == "debit") != expected:
            assert time.monotonic() - started < 45, "the abandoned batch was never written"
            time.sleep(0.2)
        spent = sum(Decimal(r.json()["_tollway"]["credits_used"]) for r in served)
        credits = httpx.get(survivor + "/api/credits/", headers=auth(key)).json()
        assert Decimal(credits["balance"]) == Decimal(credits["available"]) == Decimal("50") - spent
        reconcile_config = tmp_path / "reconcile.toml"
        reconcile_config.write_text(base_config(postgres_url, redis_url, redis_prefix))
        reconciles(reconcile_config)
    finally:
        stop(processes)

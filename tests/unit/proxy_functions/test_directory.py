"""The function directory: one load per id at a time, TTL, and forget() beating a load in flight."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, cast

from functions.config import ResolvedFunction
from functions.directory import FunctionDirectory
from functions.models import HttpMethod

FUNCTION_ID = "6f1c1f0e-6a53-4c35-9d8f-1a2b3c4d5e6f"


def _function(token: str) -> ResolvedFunction:
    return ResolvedFunction(
        id=FUNCTION_ID,
        account_id=1,
        project_id=1,
        environment_id=1,
        name="f",
        slug="f",
        enabled=True,
        target_url="https://api.example.com/",
        method=HttpMethod.POST,
        headers={},
        injections=(),
        allowed_origins=("*",),
        pass_through_body=True,
        body_template=None,
        rate_limit_per_minute=None,
        forward_path=False,
        forward_query=False,
        timeout_s=25.0,
        token_sha256=hashlib.sha256(token.encode()).digest(),
    )


class ScriptedRows:
    """The database as the directory sees it: the current row, and a gate to hold a load mid-way."""

    def __init__(self) -> None:
        self.current = _function("old")
        self.loads = 0
        self.gate: asyncio.Event | None = None

    async def load(self, function_id: str) -> ResolvedFunction | None:
        self.loads += 1
        seen = self.current  # read before the gate: the row as it was when the load began
        if self.gate is not None:
            await self.gate.wait()
        return seen if function_id == FUNCTION_ID else None


def _directory(rows: ScriptedRows, clock: list[float]) -> FunctionDirectory:
    return FunctionDirectory(cast(Any, None), None, ttl_s=1.0, clock=lambda: clock[0], loader=rows.load)


async def test_directory_shares_one_load_and_trusts_it_for_the_ttl() -> None:
    rows, clock = ScriptedRows(), [0.0]
    directory = _directory(rows, clock)
    rows.gate = asyncio.Event()
    waiting = [asyncio.create_task(directory.get(FUNCTION_ID)) for _ in range(5)]
    await asyncio.sleep(0)
    rows.gate.set()
    assert all(found is rows.current for found in await asyncio.gather(*waiting))
    assert rows.loads == 1
    clock[0] = 0.9
    await directory.get(FUNCTION_ID)
    assert rows.loads == 1
    clock[0] = 1.0
    await directory.get(FUNCTION_ID)
    assert rows.loads == 2


async def test_directory_forget_beats_a_load_in_flight() -> None:
    rows, clock = ScriptedRows(), [0.0]
    directory = _directory(rows, clock)
    rows.gate = asyncio.Event()
    stale = asyncio.create_task(directory.get(FUNCTION_ID))
    await asyncio.sleep(0)  # the load has read the old row and waits
    rows.current = _function("new")  # the token is regenerated and committed…
    directory.forget(FUNCTION_ID)  # …and this process forgets
    rows.gate.set()
    await stale
    found = await directory.get(FUNCTION_ID)
    assert found is not None and found.token_matches("new") and not found.token_matches("old")


async def test_directory_refuses_ids_that_are_not_uuids_without_loading() -> None:
    rows, clock = ScriptedRows(), [0.0]
    directory = _directory(rows, clock)
    for garbage in ["", "x" * 36, "../../etc/passwd", FUNCTION_ID + "0", "\x00" * 36]:
        assert await directory.get(garbage) is None
    assert rows.loads == 0

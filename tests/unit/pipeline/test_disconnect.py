"""cancel_on_disconnect: a client that hangs up cancels the work, without a task per request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from gateway.pipeline.metered import ClientGone, cancel_on_disconnect, cancel_scope


class Cycle:
    """A server's receive as uvicorn's: it waits on an event until the connection drops (or the
    answer completes); an unread body comes first."""

    def __init__(self, bodies: int = 0, *, bare_yield: bool = False) -> None:
        self.event = asyncio.Event()
        self.disconnected = False
        self.bodies = bodies
        self.bare_yield = bare_yield
        self.calls = 0

    async def receive(self) -> dict[str, Any]:
        self.calls += 1
        if self.bare_yield:
            await asyncio.sleep(0)
        if self.bodies:
            self.bodies -= 1
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.disconnected:
            await self.event.wait()
            self.event.clear()
        return {"type": "http.disconnect"} if self.disconnected else {"type": "http.request", "body": b""}

    def hang_up(self) -> None:
        self.disconnected = True
        self.event.set()


async def test_finished_work_returns_and_leaves_nothing_waiting() -> None:
    cycle = Cycle()

    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    assert await cancel_on_disconnect(cycle.receive, work()) == 7
    assert cycle.calls == 1
    assert not cycle.event._waiters  # the pending receive was closed


@pytest.mark.parametrize("bare_yield", [False, True])
@pytest.mark.parametrize("bodies", [0, 2])
async def test_a_disconnect_cancels_the_work(bodies: int, bare_yield: bool) -> None:
    cycle = Cycle(bodies, bare_yield=bare_yield)
    reached: list[str] = []

    async def work() -> None:
        reached.append("started")
        asyncio.get_running_loop().call_later(0.01, cycle.hang_up)
        await asyncio.Event().wait()  # an upstream that never answers
        reached.append("answered")

    with pytest.raises(ClientGone):
        await cancel_on_disconnect(cycle.receive, work())
    assert reached == ["started"]
    assert cycle.calls == bodies + 1  # every message read, each receive once


async def test_a_disconnect_before_the_work_cancels_it_at_its_first_wait() -> None:
    cycle = Cycle()
    cycle.disconnected = True
    reached: list[str] = []

    async def work() -> None:
        await asyncio.sleep(0)
        reached.append("ran on")

    with pytest.raises(ClientGone):
        await cancel_on_disconnect(cycle.receive, work())
    assert reached == []


@pytest.mark.parametrize("shielded", [lambda: anyio.CancelScope(shield=True), lambda: cancel_scope(shield=True)])
async def test_a_shielded_settlement_finishes_before_the_cancellation(
    shielded: Callable[[], anyio.CancelScope],
) -> None:
    """The pipeline's settlement shields itself with cancel_scope (anyio's scope without the
    per-call backend lookup): it must hold off the disconnect exactly as anyio's own does."""
    cycle = Cycle()
    settled: list[str] = []

    async def work() -> None:
        with shielded():
            cycle.hang_up()
            await asyncio.sleep(0.01)  # the settlement's write
            settled.append("settled")
        await asyncio.Event().wait()

    with pytest.raises(ClientGone):
        await cancel_on_disconnect(cycle.receive, work())
    assert settled == ["settled"]


async def test_errors_of_the_work_reach_the_caller_as_themselves() -> None:
    cycle = Cycle()

    async def work() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad body")

    with pytest.raises(ValueError, match="bad body"):
        await cancel_on_disconnect(cycle.receive, work())
    assert not cycle.event._waiters


async def test_a_failing_receive_ends_the_watch_not_the_work() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        raise RuntimeError("server gone strange")

    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await cancel_on_disconnect(receive, work()) == "done"


async def test_cancel_scope_is_anyios_own_scope_class() -> None:
    assert type(cancel_scope()) is type(anyio.CancelScope())
    assert cancel_scope(shield=True).shield and not cancel_scope().shield

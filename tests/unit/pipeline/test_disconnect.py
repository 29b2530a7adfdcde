"""cancel_on_disconnect: a client that hangs up cancels the work, without a task per request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from billing.shielding import shielded
from gateway.pipeline.metered import ClientGone, DisconnectScope, cancel_on_disconnect


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


async def test_a_shielded_settlement_finishes_before_the_cancellation() -> None:
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


async def test_a_cancellation_held_off_by_one_shield_does_not_land_in_the_next() -> None:
    """Two settlements one after the other (a stream's close, then its bill): the disconnect
    during the first waits out the second too, then lands at the first await outside both."""
    cycle = Cycle()
    done: list[str] = []

    async def work() -> None:
        with shielded():
            cycle.hang_up()
            await asyncio.sleep(0.01)
            done.append("first")
        with shielded():
            await asyncio.sleep(0.01)
            done.append("second")
        await asyncio.Event().wait()
        done.append("never")

    with pytest.raises(ClientGone):
        await cancel_on_disconnect(cycle.receive, work())
    assert done == ["first", "second"]


async def test_a_cancellation_held_off_by_a_last_shield_never_lands_outside_the_scope() -> None:
    """The disconnect arrives during the settlement and the work returns right after it, with no
    await left for the cancellation to land on: the answer is returned, and the task is not
    cancelled later at some unrelated await of the server's."""
    cycle = Cycle()

    async def work() -> str:
        with shielded():
            cycle.hang_up()
            await asyncio.sleep(0.01)
        return "answer"

    assert await cancel_on_disconnect(cycle.receive, work()) == "answer"
    await asyncio.sleep(0)  # would raise CancelledError if the cancellation had leaked
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_the_code_handling_the_cancellation_can_await_without_a_shield() -> None:
    """Cancelled once, as asyncio cancels: a stream's settlement after the disconnect runs its
    awaits to the end (anyio's scopes cancelled every await until the scope was left)."""
    cycle = Cycle()
    settled: list[str] = []

    async def work() -> None:
        try:
            cycle.hang_up()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
            settled.append("settled")
            raise

    with pytest.raises(ClientGone):
        await cancel_on_disconnect(cycle.receive, work())
    assert settled == ["settled"]


async def test_work_that_swallows_the_cancellation_returns_and_leaves_the_task_clean() -> None:
    cycle = Cycle()

    async def work() -> str:
        try:
            cycle.hang_up()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        return "kept going"

    assert await cancel_on_disconnect(cycle.receive, work()) == "kept going"
    await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@pytest.mark.parametrize("also_disconnected", [False, True])
async def test_a_cancellation_of_the_task_from_elsewhere_is_not_a_client_disconnect(also_disconnected: bool) -> None:
    """A server stopping cancels the request's task itself: that goes on up as a cancellation,
    whether or not the client hung up as well, never as the scope's own ClientGone."""
    cycle = Cycle()
    serving = asyncio.ensure_future(cancel_on_disconnect(cycle.receive, asyncio.Event().wait()))
    await asyncio.sleep(0.01)  # the work waits on its upstream
    if also_disconnected:
        cycle.hang_up()  # the scope's own cancellation follows on the next loop turn
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert serving.cancelled()


async def test_the_scope_tells_whether_the_client_ended_it() -> None:
    cycle = Cycle()
    async with DisconnectScope(cycle.receive) as scope:
        await asyncio.sleep(0)
    assert not scope.caught
    async with DisconnectScope(cycle.receive) as scope:
        cycle.hang_up()
        await asyncio.Event().wait()
    assert scope.caught


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

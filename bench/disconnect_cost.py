"""What ``cancel_on_disconnect`` costs a request, in instructions (callgrind), against the task
watcher it replaced and a bare await of the same work.

    for v in floor before after; do for n in 1000 3000; do valgrind --tool=callgrind \\
        --callgrind-out-file=/tmp/cg.$v.$n .venv/bin/python bench/disconnect_cost.py $v $n; done; done
    # (Ir(3000) - Ir(1000)) / 2000 = instructions per call; startup cancels out

The work yields to the loop once (as every pipeline does before it answers) and ``receive`` is
as uvicorn's: it waits on an event until the connection drops or the answer completes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import uvloop

from gateway.pipeline.metered import cancel_on_disconnect


class Cycle:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.disconnected = False

    async def receive(self) -> dict[str, Any]:
        if not self.disconnected:
            await self.event.wait()
            self.event.clear()
        if self.disconnected:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"", "more_body": False}


async def work() -> int:
    await asyncio.sleep(0)
    return 1


async def before(receive: Callable[[], Awaitable[dict[str, Any]]], work: Awaitable[int]) -> int:
    """The watcher task per request (main before 2026-12-01)."""

    async def watch(scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    with anyio.CancelScope() as scope:
        watcher = asyncio.create_task(watch(scope))
        try:
            return await work
        finally:
            watcher.cancel()
    raise RuntimeError("client disconnected")


async def main(variant: str, calls: int) -> None:
    for _ in range(calls):
        cycle = Cycle()
        if variant == "floor":
            await work()
        elif variant == "before":
            await before(cycle.receive, work())
        else:
            await cancel_on_disconnect(cycle.receive, work())
    await asyncio.sleep(0.01)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))

"""DeadlineStream: one timer per stream that cancels an upstream read past the deadline, and
never the consumer's own work between reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from billing.shielding import Cancellation
from gateway.pipeline.metered import DeadlineStream
from providers.base import StreamChunk
from providers.errors import UpstreamTimeout


class SlowStream:
    """Upstream reads that each take ``read_s``; ``batches`` as SSEStream's."""

    def __init__(self, count: int, read_s: float) -> None:
        self.count, self.read_s = count, read_s
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        for number in range(self.count):
            if self.read_s:
                await asyncio.sleep(self.read_s)
            yield StreamChunk(data=str(number).encode())

    async def batches(self) -> AsyncIterator[list[StreamChunk]]:
        async for chunk in self:
            yield [chunk]

    async def aclose(self) -> None:
        self.closed = True


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


async def test_deadline_stream_passes_every_chunk_before_the_deadline() -> None:
    stream = DeadlineStream(SlowStream(3, 0.0), deadline_in(5), "fake")
    assert [batch[0].data async for batch in stream.batches()] == [b"0", b"1", b"2"]
    assert [chunk.data async for chunk in DeadlineStream(SlowStream(2, 0.0), deadline_in(5), "fake")] == [b"0", b"1"]


async def test_deadline_stream_times_out_a_read_that_waits_past_the_deadline() -> None:
    stream = DeadlineStream(SlowStream(5, 0.1), deadline_in(0.25), "fake")
    seen: list[bytes] = []
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        async for batch in stream.batches():
            seen.append(batch[0].data)
    assert seen == [b"0", b"1"] and time.monotonic() - started < 1.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timer's cancel was taken back


async def test_deadline_stream_never_cancels_the_consumer_between_reads() -> None:
    """The deadline passes while the consumer works (writes to the client): its work finishes,
    and the next read that has to wait is the one that times out."""
    stream = DeadlineStream(SlowStream(3, 0.05), deadline_in(0.1), "fake")
    consumer_done: list[bytes] = []
    with pytest.raises(UpstreamTimeout):
        async for batch in stream.batches():
            await asyncio.sleep(0.2)  # past the deadline, outside any read
            consumer_done.append(batch[0].data)
    assert consumer_done == [b"0"]


async def test_deadline_stream_past_deadline_read_that_need_not_wait_still_passes() -> None:
    """As an ``asyncio.timeout(0)`` around the read would: a read that completes without
    waiting is not cancelled; one that waits is."""
    stream = DeadlineStream(SlowStream(2, 0.0), deadline_in(0.05), "fake")
    seen: list[bytes] = []
    async for batch in stream.batches():
        await asyncio.sleep(0.1)
        seen.append(batch[0].data)
    assert seen == [b"0", b"1"]


async def test_deadline_stream_lets_another_cancellation_through() -> None:
    stream = DeadlineStream(SlowStream(3, 1.0), deadline_in(0.2), "fake")
    async with Cancellation() as scope:
        asyncio.get_running_loop().call_later(0.05, scope.cancel)
        async for _batch in stream.batches():
            pytest.fail("no read completes")
    assert scope.caught  # cancelled by the scope, not turned into a timeout


async def test_deadline_stream_timer_stops_with_the_stream() -> None:
    upstream = SlowStream(3, 0.0)
    stream = DeadlineStream(upstream, deadline_in(0.05), "fake")
    batches = stream.batches()
    assert (await anext(batches))[0].data == b"0"
    await stream.aclose()  # as StreamEnd closes it, the generator still suspended
    assert upstream.closed
    await asyncio.sleep(0.1)  # the deadline would have passed: nothing fires into this task
    assert [batch[0].data async for batch in batches] == [b"1", b"2"]

"""The pipeline without HTTP (issue 10, item 4): a real app state on SQLite and the embedded
counter store, a scripted adapter, and a fault injected at each stage of a call. Whatever the
fault — an exception or a cancellation, before, during or after the upstream call, streamed or
not — the request is settled exactly once and its hold is released."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.response import Stream
from sqlalchemy import select

from billing.accounts import create_account
from billing.ledger import Settlement
from billing.metering import Reservation
from billing.models import UsageRecord
from gateway.app import create_app
from gateway.db import migrate
from gateway.pipeline.chat import chat_completions
from gateway.settings import Settings
from gateway.state import GatewayState
from keys.chain import RequestFacts
from keys.service import create_key
from providers.base import ChatCall, ChatResult, ProviderHandle, StreamChunk, Usage
from providers.errors import UpstreamHTTPError

BALANCE = 50_000_000
MODEL = "demo/echo"


class ScriptedAdapter:
    """A chat adapter whose every step can be told to fail, hang or lie."""

    name = "demo"

    def __init__(self) -> None:
        self.complete_with: Callable[[], Awaitable[ChatResult]] = self._good
        self.chunks: list[StreamChunk | BaseException] = []
        self.hang_in_stream = False

    async def _good(self) -> ChatResult:
        usage = Usage(input_tokens=10, output_tokens=2)
        return ChatResult(body={"choices": [{"message": {"content": "hi there"}}]}, usage=usage)

    async def complete(self, call: ChatCall) -> ChatResult:
        return await self.complete_with()

    async def open_stream(self, call: ChatCall) -> Any:
        adapter = self

        class _Stream:
            async def __aiter__(self) -> AsyncIterator[StreamChunk]:
                for chunk in adapter.chunks:
                    if isinstance(chunk, BaseException):
                        raise chunk
                    yield chunk
                if adapter.hang_in_stream:
                    await asyncio.Event().wait()

            async def aclose(self) -> None:
                return None

        return _Stream()

    async def aclose(self) -> None:
        return None


class Pipeline:
    def __init__(self, app: Litestar, key: str, account_id: int, adapter: ScriptedAdapter) -> None:
        self.state: GatewayState = app.state.gateway
        self.key = key
        self.account_id = account_id
        self.adapter = adapter
        self.settles: list[str] = []
        meter = self.state.meter
        real_settle = meter.settle

        async def counting_settle(reservation: Reservation, settlement: Settlement) -> None:
            self.settles.append(settlement.request_id)
            await real_settle(reservation, settlement)

        meter.settle = counting_settle

    def call(self, request_id: str, **body: Any) -> Awaitable[Any]:
        raw = msgspec.json.encode({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body})
        headers = {"authorization": f"Bearer {self.key}"}
        return chat_completions(self.state, headers, RequestFacts(), raw, request_id)

    async def records(self, request_id: str) -> list[UsageRecord]:
        async with self.state.sessionmaker() as session:
            return list(await session.scalars(select(UsageRecord).where(UsageRecord.request_id == request_id)))

    async def assert_settled_once(self, request_id: str) -> UsageRecord:
        assert self.settles.count(request_id) == 1, self.settles
        records = await self.records(request_id)
        assert len(records) == 1
        balance = (await self.state.counters.get_all(self.state.meter.balance_key(self.account_id))).get("held", 0)
        assert balance == 0  # no hold left behind
        return records[0]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/tollway.db", bootstrap=False, demo_provider=True)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Pipeline]:
    """The app's lifespan, entered in the test's own task (anyio's scopes require it)."""
    await migrate(settings.database_url)
    app = create_app(settings)
    async with app.lifespan():
        state: GatewayState = app.state.gateway
        async with state.sessionmaker() as session:
            account = await create_account(session, "acme", credits_micro=BALANCE)
            _row, key = await create_key(session, account.id, "test")
        adapter = ScriptedAdapter()
        state.adapters["demo"] = ProviderHandle.of(adapter)
        yield Pipeline(app, key, account.id, adapter)


async def test_pipeline_success_settles_once(settings: Settings) -> None:
    async with running(settings) as pipeline:
        await pipeline.call("req_ok")
        record = await pipeline.assert_settled_once("req_ok")
        assert (record.status_code, record.output_tokens) == (200, 2)


async def test_pipeline_upstream_error_settles_once_at_no_cost(settings: Settings) -> None:
    async with running(settings) as pipeline:

        async def refuse() -> ChatResult:
            raise UpstreamHTTPError("no", provider="demo", upstream_status=400)

        pipeline.adapter.complete_with = refuse
        with pytest.raises(UpstreamHTTPError):
            await pipeline.call("req_refused")
        record = await pipeline.assert_settled_once("req_refused")
        assert (record.status_code, record.credits_micro) == (400, 0)


async def test_pipeline_bug_in_the_adapter_settles_once(settings: Settings) -> None:
    async with running(settings) as pipeline:

        async def broken() -> ChatResult:
            raise ValueError("a bug")

        pipeline.adapter.complete_with = broken
        with pytest.raises(ValueError):
            await pipeline.call("req_bug")
        record = await pipeline.assert_settled_once("req_bug")
        assert (record.status_code, record.error_code) == (500, "internal_error")


async def test_pipeline_failure_between_dispatch_and_settle_settles_once(settings: Settings) -> None:
    async with running(settings) as pipeline:

        async def garbage() -> ChatResult:
            return ChatResult(body="not a completion", usage=None)  # type: ignore[arg-type]

        pipeline.adapter.complete_with = garbage
        with pytest.raises(AttributeError):
            await pipeline.call("req_after")
        record = await pipeline.assert_settled_once("req_after")
        assert record.status_code == 500


async def test_pipeline_cancelled_during_the_upstream_call_settles_once(settings: Settings) -> None:
    async with running(settings) as pipeline:
        started = asyncio.Event()

        async def slow() -> ChatResult:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        pipeline.adapter.complete_with = slow
        task = asyncio.ensure_future(pipeline.call("req_cancel"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        record = await pipeline.assert_settled_once("req_cancel")
        assert (record.status_code, record.credits_micro) == (499, 0)


async def _drain(response: Stream, *, stop_after: int | None = None) -> list[bytes]:
    chunks: list[bytes] = []
    body: Any = response.iterator  # an async generator here; Stream types it as any iterable
    async for chunk in body:
        chunks.append(chunk if isinstance(chunk, bytes) else str(chunk).encode())
        if stop_after is not None and len(chunks) >= stop_after:
            await body.aclose()
            break
    return chunks


def _chunk(text: str, usage: Usage | None = None) -> StreamChunk:
    data = msgspec.json.encode({"choices": [{"index": 0, "delta": {"content": text}}]})
    return StreamChunk(data=data, text=text, usage=usage)


async def test_pipeline_stream_settles_once_on_success(settings: Settings) -> None:
    async with running(settings) as pipeline:
        pipeline.adapter.chunks = [_chunk("a"), _chunk("b", Usage(input_tokens=5, output_tokens=2))]
        response = await pipeline.call("req_stream", stream=True)
        chunks = await _drain(response)
        assert chunks[-1] == b"data: [DONE]\n\n"
        record = await pipeline.assert_settled_once("req_stream")
        assert (record.status_code, record.output_tokens) == (200, 2)


async def test_pipeline_stream_error_midway_settles_once_for_what_was_sent(settings: Settings) -> None:
    async with running(settings) as pipeline:
        pipeline.adapter.chunks = [_chunk("some words"), RuntimeError("the adapter broke")]
        response = await pipeline.call("req_stream_bug", stream=True)
        with pytest.raises(RuntimeError):
            await _drain(response)
        record = await pipeline.assert_settled_once("req_stream_bug")
        assert record.status_code == 500 and record.output_tokens > 0


async def test_pipeline_stream_client_gone_midway_settles_once(settings: Settings) -> None:
    async with running(settings) as pipeline:
        pipeline.adapter.chunks = [_chunk("some words")]
        pipeline.adapter.hang_in_stream = True
        response = await pipeline.call("req_stream_gone", stream=True)
        await _drain(response, stop_after=1)
        record = await pipeline.assert_settled_once("req_stream_gone")
        assert (record.status_code, record.error_code) == (499, "client_disconnected") and record.output_tokens > 0


async def test_pipeline_refusal_before_dispatch_records_once_and_holds_nothing(settings: Settings) -> None:
    async with running(settings) as pipeline:
        with pytest.raises(Exception) as refused:
            await pipeline.call("req_nul", user="a\u0000b")
        assert getattr(refused.value, "status_code", None) == 400
        records = await pipeline.records("req_nul")
        assert len(records) == 1 and "\x00" not in records[0].end_user_id
        assert pipeline.settles.count("req_nul") == 0  # nothing was held, so nothing to settle
